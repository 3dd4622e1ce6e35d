"""Model-based: random writes from several concurrent clients through real servers, while a syncing client keeps
a replica from the change feed alone; at the end the replica is exactly `GET /tasks`.

On PostgreSQL the writers and the syncing client spread over two instances (processes) on one database. The
embedded SQLite is one process by design (``WEB_CONCURRENCY`` is 1 there), so its clients share one instance.
Each seed is a different random history; a failure names its seed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.environment import service_environment
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.servers import ApiServer
from tests.support.sse import open_stream

WRITERS = 4
WRITES_PER_WRITER = 30
SEEDS = (11, 12)

Replica = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def instances(database_url: str, backend: str, jwks_server: JWKSServer) -> Iterator[list[ApiServer]]:
    env = service_environment(database_url, jwks_server, max_concurrent_requests_per_user=64)
    servers = [ApiServer(env=dict(env)).start() for _ in range(2 if backend == "postgresql" else 1)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
async def clients(instances: list[ApiServer]) -> AsyncIterator[list[httpx.AsyncClient]]:
    opened = [httpx.AsyncClient(base_url=server.url, timeout=30) for server in instances]
    yield opened
    for client in opened:
        await client.aclose()


async def random_writes(
    rng: random.Random, clients: list[httpx.AsyncClient], account: Account, known: list[str]
) -> None:
    """One client's random history: creates, updates, toggles, deletes and bulk actions, on any instance."""
    for n in range(WRITES_PER_WRITER):
        client = rng.choice(clients)
        action = rng.choices(
            ["create", "update", "toggle", "delete", "toggle_all", "clear_completed"], weights=[5, 3, 3, 2, 1, 1]
        )[0]
        if action == "create" or not known:
            body = {"title": f"task {rng.random():.6f}", "completed": rng.random() < 0.3}
            response = await client.post(account.tasks_url(), json=body, headers=account.headers)
            assert response.status_code == 201, response.text
            known.append(response.json()["id"])
        elif action == "update":
            body = {"title": f"edited {n}", "description": rng.choice([None, f"note {n}"])}
            response = await client.put(account.tasks_url(rng.choice(known)), json=body, headers=account.headers)
            assert response.status_code in {200, 404}, response.text  # 404: another client deleted it
        elif action == "toggle":
            response = await client.patch(account.tasks_url(rng.choice(known), "complete"), headers=account.headers)
            assert response.status_code in {200, 404}, response.text
        elif action == "delete":
            response = await client.delete(account.tasks_url(rng.choice(known)), headers=account.headers)
            assert response.status_code in {204, 404}, response.text
        elif action == "toggle_all":
            body = {"completed": rng.random() < 0.5}
            response = await client.patch(account.tasks_url(), json=body, headers=account.headers)
            assert response.status_code == 200, response.text
        else:
            response = await client.delete(account.tasks_url(), params={"completed": "true"}, headers=account.headers)
            assert response.status_code == 200, response.text


async def concurrent_writers(rng: random.Random, clients: list[httpx.AsyncClient], account: Account) -> None:
    """``WRITERS`` clients writing at once, each its own history drawn from ``rng``."""
    known: list[str] = []
    histories = [random.Random(rng.random()) for _ in range(WRITERS)]  # noqa: S311 - seeded from the seed
    await asyncio.gather(*(random_writes(history, clients, account, known) for history in histories))


def apply(replica: Replica, changes: list[dict[str, Any]]) -> None:
    for change in changes:
        if change["op"] == "upsert":
            replica[change["task"]["id"]] = change["task"]
        else:
            replica.pop(change["id"], None)


async def sync(client: httpx.AsyncClient, account: Account, replica: Replica, since: int, limit: int) -> int:
    """Apply the feed from ``since`` until it has no more; the revision reached."""
    while True:
        response = await client.get(
            account.tasks_url("changes"), params={"since": since, "limit": limit}, headers=account.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        revisions = [change["revision"] for change in page["changes"]]
        assert revisions == sorted(set(revisions)), "a page out of order or with a task twice"
        assert all(revision > since for revision in revisions), "a change at or before since"
        apply(replica, page["changes"])
        assert page["revision"] >= since
        since = page["revision"]
        if not page["has_more"]:
            return since


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_replica_kept_from_the_feed_ends_identical_to_the_list(
    clients: list[httpx.AsyncClient], make_account: Callable[..., Account], seed: int
) -> None:
    rng = random.Random(seed)  # noqa: S311 - a seeded history a failure names and replays, not a secret
    account = make_account()
    replica: Replica = {}
    writing = asyncio.ensure_future(concurrent_writers(rng, clients, account))

    since = 0
    while not writing.done():
        # Sync while the writers write, through either instance, in small pages.
        since = await sync(rng.choice(clients), account, replica, since, limit=rng.randint(1, 5))
    await writing
    await sync(clients[-1], account, replica, since, limit=3)

    listed = (await clients[0].get(account.tasks_url(), headers=account.headers)).json()
    assert replica == {task["id"]: task for task in listed}, f"seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_replica_kept_from_the_event_stream_ends_identical_to_the_list(
    clients: list[httpx.AsyncClient], make_account: Callable[..., Account], seed: int
) -> None:
    account = make_account()
    replica: Replica = {}
    # The stream on the last instance; on PostgreSQL the writes reach it through the other one too.
    async with open_stream(clients[-1], account.tasks_url("events"), headers=account.headers) as stream:
        await stream.wait_until_open()
        await concurrent_writers(random.Random(seed), clients, account)  # noqa: S311 - seeded, replayable
        final = (
            await clients[0].get(account.tasks_url("changes"), params={"since": 0}, headers=account.headers)
        ).json()
        await stream.wait_for(lambda s: int(s.last_event_id) >= final["revision"], "the stream reached the last write")
        apply(replica, [event.json() for event in stream.events])
        ids = [int(event.id) for event in stream.events]

    assert ids == sorted(set(ids)), f"seed {seed}: events out of order or twice"
    listed = (await clients[0].get(account.tasks_url(), headers=account.headers)).json()
    assert replica == {task["id"]: task for task in listed}, f"seed {seed}"
