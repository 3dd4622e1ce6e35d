"""Live task events, ``GET /api/{user_id}/tasks/events``: server-sent events from real servers, on both backends.

Each change is one event carrying its change feed entry; a reconnect with ``Last-Event-ID`` (or ``since``) replays
what was missed, then goes on live; news crosses instances through PostgreSQL's NOTIFY and survives the listening
connection being killed. The bounds hold (streams per user and per process, a client that stops reading), and a
stream ends with its token and on SIGTERM. The in-process client cannot test any of this (its transport buffers
whole responses), so every test talks to ``python -m app serve``: servers shared by the module, a user per test.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_engine, upgrade_schema
from app.models import Task, User, utcnow
from app.sync.listener import LISTENER_APPLICATION_NAME, notify_payloads
from tests.support.databases import scratch_postgres
from tests.support.environment import service_environment
from tests.support.factories import Account, create_task, new_user_id
from tests.support.issuer import JWKSServer, SigningKey, mint
from tests.support.servers import ApiServer, served_openapi_document, until
from tests.support.sse import LiveStream, open_stream

STREAM_ENVIRONMENT = {
    "SSE_HEARTBEAT_SECONDS": "0.2",
    "SSE_MAX_STREAMS_PER_USER": "2",
    "SSE_MAX_STREAMS_PER_PROCESS": "6",
    "SSE_SEND_TIMEOUT_SECONDS": "1",
    # As many requests in flight as streams: if streams took these slots, two would lock their user out.
    "MAX_CONCURRENT_REQUESTS_PER_USER": "2",
    # A token ends its stream at its `exp` (the default leeway would add 30 s to the expiry test).
    "JWT_LEEWAY_SECONDS": "0",
}
#: How soon news must reach another instance: "within 1 s", with room for a loaded machine.
CROSS_INSTANCE_DEADLINE_SECONDS = 5
#: Well under uvicorn's 30 s of graceful shutdown, which one stream left open on SIGTERM would hold in full.
PROMPT_EXIT_SECONDS = 10


@pytest.fixture(scope="module")
def server(database_url: str, jwks_server: JWKSServer) -> Iterator[ApiServer]:
    instance = ApiServer(env=service_environment(database_url, jwks_server, **STREAM_ENVIRONMENT)).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def postgres_instances(jwks_server: JWKSServer) -> Iterator[tuple[ApiServer, ApiServer, str]]:
    """Two instances on one PostgreSQL database of their own (whichever backend the session runs: the embedded
    SQLite is one process, with no other instance to reach and no listening connection to lose)."""
    with scratch_postgres("todo_events") as url:
        upgrade_schema(Settings(database_url=url))
        environment = service_environment(url, jwks_server, **STREAM_ENVIRONMENT)
        pair = ApiServer(env=dict(environment)).start(), ApiServer(env=dict(environment)).start()
        yield (*pair, url)
        for instance in pair:
            instance.stop()


@pytest.fixture
def doomed_server(database_url: str, jwks_server: JWKSServer) -> Iterator[ApiServer]:
    """A server of the test's own, which it stops with SIGTERM."""
    instance = ApiServer(env=service_environment(database_url, jwks_server, **STREAM_ENVIRONMENT)).start()
    yield instance
    instance.stop()


@pytest.fixture
async def api(server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


def events_url(account: Account) -> str:
    return account.tasks_url("events")


async def gauge(client: httpx.AsyncClient, name: str) -> float:
    """A gauge of the server's own /metrics, summed over its labels."""
    scrape = (await client.get("/metrics")).text
    samples = [sample for family in text_string_to_metric_families(scrape) for sample in family.samples]
    return sum(sample.value for sample in samples if sample.name == name)


async def streams_open(client: httpx.AsyncClient) -> float:
    """Event streams the server holds open now."""
    return await gauge(client, "todo_api_event_streams_open")


async def hold_streams(held: AsyncExitStack, client: httpx.AsyncClient, account: Account, count: int) -> None:
    """Open ``count`` streams of ``account``, each until ``held`` closes."""
    for _ in range(count):
        stream = await held.enter_async_context(open_stream(client, events_url(account), headers=account.headers))
        await stream.wait_until_open()


async def changes_since(client: httpx.AsyncClient, account: Account, revision: int) -> dict[str, Any]:
    response = await client.get(account.tasks_url("changes"), params={"since": revision}, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def as_received(stream: LiveStream) -> list[tuple[str, str, Any]]:
    return [(event.id, event.type, event.json()) for event in stream.events]


# --- what a stream carries ------------------------------------------------------------------------------------


async def test_each_write_is_one_event_carrying_its_change_feed_entry(api: httpx.AsyncClient, alice: Account) -> None:
    headers = alice.headers
    expected: list[dict[str, Any]] = []
    async with open_stream(api, events_url(alice), headers=headers) as stream:
        await stream.wait_until_open()
        revision = int(stream.last_event_id)

        async def then_its_events(write: Awaitable[httpx.Response]) -> dict[str, Any]:
            nonlocal revision
            response = await write
            assert response.is_success, response.text
            feed = await changes_since(api, alice, revision)
            revision = feed["revision"]
            expected.extend(feed["changes"])
            await stream.wait_for_events(len(expected))
            return dict(response.json()) if response.content else {}

        created = await then_its_events(api.post(alice.tasks_url(), json={"title": "one"}, headers=headers))
        task = alice.tasks_url(created["id"])
        await then_its_events(api.put(task, json={"title": "one, renamed"}, headers=headers))
        await then_its_events(api.patch(f"{task}/complete", headers=headers))
        await then_its_events(api.delete(task, headers=headers))
        await then_its_events(api.post(alice.tasks_url(), json={"title": "open"}, headers=headers))
        await then_its_events(api.post(alice.tasks_url(), json={"title": "done", "completed": True}, headers=headers))
        await then_its_events(api.patch(alice.tasks_url(), json={"completed": True}, headers=headers))
        await then_its_events(api.delete(alice.tasks_url(), params={"completed": "true"}, headers=headers))

    received = as_received(stream)
    assert received == [(str(change["revision"]), change["op"], change) for change in expected]
    assert [op for _, op, _ in received] == [
        *("upsert", "upsert", "upsert", "delete"),  # create, update, toggle, delete
        *("upsert", "upsert"),  # two creates
        "upsert",  # complete all: the one open task
        *("delete", "delete"),  # clear completed: both
    ]
    assert received[0][2] == {"op": "upsert", "revision": created["revision"], "task": created}
    assert received[3][2]["id"] == created["id"]
    revisions = [int(event_id) for event_id, _, _ in received]
    assert revisions == sorted(set(revisions))


async def test_the_stream_is_served_uncached_unbuffered_and_says_when_to_reconnect(
    api: httpx.AsyncClient, alice: Account
) -> None:
    async with open_stream(api, events_url(alice), headers=alice.headers) as stream:
        await stream.wait_until_open()

    assert stream.response.headers["content-type"] == "text/event-stream"
    assert stream.response.headers["cache-control"] == "no-cache"
    assert stream.response.headers["x-accel-buffering"] == "no"
    assert stream.parser.retry is not None
    assert 1000 <= stream.parser.retry <= 10_000


async def test_head_answers_the_streams_head_and_ends(api: httpx.AsyncClient, alice: Account) -> None:
    response = await api.head(events_url(alice), headers=alice.headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content == b""

    # (an HTTP client reads no body after HEAD whatever the server does: the server's own count tells)
    async def none_open() -> bool:
        return await streams_open(api) == 0

    await until(none_open, "the HEAD request's stream did not end")


async def test_without_a_resume_point_the_stream_starts_at_the_current_revision(
    api: httpx.AsyncClient, alice: Account
) -> None:
    for title in ("old", "older"):
        await create_task(api, alice, title=title)
    async with open_stream(api, events_url(alice), headers=alice.headers) as stream:
        await stream.wait_until_open()
        starts_at = stream.last_event_id
        new = await create_task(api, alice, title="new")
        events = await stream.wait_for_events(1)

    # The opening id is where a reconnect before any event resumes: nothing written meanwhile is skipped.
    assert starts_at == "2"
    assert [event.json()["task"] for event in events] == [new]


async def test_an_idle_stream_sends_heartbeat_comments(api: httpx.AsyncClient, alice: Account) -> None:
    async with open_stream(api, events_url(alice), headers=alice.headers) as stream:
        await stream.wait_for(lambda s: s.comments.count("heartbeat") >= 2, "two heartbeats arrived")

    assert stream.events == []


async def test_a_stream_and_its_events_are_counted_like_everything_else(api: httpx.AsyncClient, alice: Account) -> None:
    async def metrics() -> dict[str, float]:
        """Streams served and in progress (Litestar's request metrics, by route) and upsert events sent."""
        scrape = (await api.get("/metrics")).text
        found = {
            "todo_api_requests_total": 0.0,
            "todo_api_requests_in_progress": 0.0,
            "todo_api_events_sent_total": 0.0,
        }
        for family in text_string_to_metric_families(scrape):
            for sample in family.samples:
                of_streams = sample.labels.get("path") == "/api/{user_id}/tasks/events"
                if sample.name in found and (of_streams or sample.labels.get("event") == "upsert"):
                    found[sample.name] += sample.value
        return found

    async def settled() -> bool:
        return (await metrics())["todo_api_requests_in_progress"] == 0

    await until(settled, "the streams of earlier tests were counted")
    before = await metrics()
    async with open_stream(api, events_url(alice), headers=alice.headers) as stream:
        await stream.wait_until_open()
        await create_task(api, alice)
        await stream.wait_for_events(1)
    await until(settled, "the stream was counted")
    after = await metrics()

    assert after["todo_api_requests_total"] == before["todo_api_requests_total"] + 1
    assert after["todo_api_events_sent_total"] == before["todo_api_events_sent_total"] + 1


def test_the_stream_is_documented_with_its_resume_points_and_refusals(tmp_path: Path) -> None:
    operation = served_openapi_document(tmp_path)["paths"]["/api/{user_id}/tasks/events"]["get"]

    assert (operation["operationId"], operation["tags"]) == ("StreamTaskEvents", ["Tasks"])
    assert operation["security"] == [{"BearerToken": []}]
    # 414 and 431: any request may be refused before routing (too long a URL, too many or too large headers).
    assert set(operation["responses"]) == {"200", "401", "403", "410", "414", "422", "429", "431", "503"}
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    assert {(p["in"], p["name"]) for p in operation["parameters"]} == {
        ("path", "user_id"),
        ("header", "Last-Event-ID"),
        ("query", "since"),
    }


async def test_idle_streams_hold_no_database_connection(api: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    async with AsyncExitStack() as streams:
        await hold_streams(streams, api, alice, 2)
        await hold_streams(streams, api, bob, 1)

        async def pool_idle() -> bool:
            return await gauge(api, "todo_api_db_pool_connections_in_use") == 0

        await until(pool_idle, "every pooled connection was back in the pool while the streams stayed open")
        assert await streams_open(api) >= 3


# --- resuming -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resume_with", ["Last-Event-ID", "since"])
async def test_a_reconnect_replays_what_was_missed_then_goes_on_live(
    api: httpx.AsyncClient, alice: Account, resume_with: str
) -> None:
    burst = 40

    async def write_burst() -> None:
        for n in range(burst):
            await create_task(api, alice, title=f"burst {n}")

    async with open_stream(api, events_url(alice), headers=alice.headers) as first:
        await first.wait_until_open()
        writer = asyncio.create_task(write_burst())
        await first.wait_for_events(5)
    # Disconnected in the middle of the burst, which goes on.
    resume_at = first.last_event_id
    headers = {**alice.headers, "Last-Event-ID": resume_at} if resume_with == "Last-Event-ID" else alice.headers
    params = {"since": resume_at} if resume_with == "since" else None
    async with open_stream(api, events_url(alice), headers=headers, params=params) as second:
        await writer
        live = await create_task(api, alice, title="after the burst")
        await second.wait_for(lambda s: any(e.json()["task"]["id"] == live["id"] for e in s.events), "it arrived")

    revisions = [int(event.id) for event in [*first.events, *second.events]]
    assert resume_at == first.events[-1].id
    assert revisions == list(range(1, burst + 2))  # every change once, in order, across the reconnect


async def test_last_event_id_takes_precedence_over_since(api: httpx.AsyncClient, alice: Account) -> None:
    # A browser reconnects to the URL it first opened (with its `since`) and sends how far it got in the header.
    for title in ("one", "two", "three"):
        await create_task(api, alice, title=title)
    headers = {**alice.headers, "Last-Event-ID": "2"}
    async with open_stream(api, events_url(alice), headers=headers, params={"since": 0}) as stream:
        events = await stream.wait_for_events(1)

    assert [event.id for event in events] == ["3"]


async def test_resuming_from_zero_replays_every_live_task_first(api: httpx.AsyncClient, alice: Account) -> None:
    kept = await create_task(api, alice, title="kept")
    gone = await create_task(api, alice, title="gone")
    assert (await api.delete(alice.tasks_url(gone["id"]), headers=alice.headers)).status_code == 204
    async with open_stream(api, events_url(alice), headers=alice.headers, params={"since": 0}) as stream:
        # The full sync ends at revision 3 (the deletion), past its last event (the kept task's, 1): the client's
        # Last-Event-ID moves there too, so a reconnect does not go back over what the sync already covered.
        await stream.wait_for(lambda s: s.last_event_id == "3", "the stream moved to the end of the full sync")
        replayed = list(stream.events)
        live = await create_task(api, alice, title="live")
        events = await stream.wait_for_events(2)

    assert [(event.id, event.type, event.json()["task"]["id"]) for event in replayed] == [("1", "upsert", kept["id"])]
    assert [(event.id, event.json()["task"]["id"]) for event in events] == [("1", kept["id"]), ("4", live["id"])]


# --- refusals before the stream starts ----------------------------------------------------------------------


async def test_a_stream_needs_a_bearer_token_in_the_header(api: httpx.AsyncClient, alice: Account) -> None:
    anonymous = await api.get(events_url(alice))
    in_the_url = await api.get(events_url(alice), params={"access_token": alice.token, "token": alice.token})

    for response in (anonymous, in_the_url):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_another_users_stream_is_forbidden(api: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    response = await api.get(events_url(bob), headers=alice.headers)

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_resume_point_older_than_the_kept_tombstones_is_410(
    api: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    for title in ("one", "two", "three"):
        await create_task(api, alice, title=title)
    async with db.begin() as connection:
        await connection.execute(update(User).where(User.id == alice.id).values(purged_through=2))

    gone = await api.get(events_url(alice), headers={**alice.headers, "Last-Event-ID": "1"})
    kept = await api.get(events_url(alice), headers=alice.headers, params={"since": 1})

    assert gone.status_code == 410
    assert gone.headers["content-type"] == "application/problem+json"
    assert kept.status_code == 410


@pytest.mark.parametrize(
    ("headers", "params", "field"),
    [
        ({"Last-Event-ID": "not-a-revision"}, {}, "Last-Event-ID"),
        ({"Last-Event-ID": "-1"}, {}, "Last-Event-ID"),
        ({"Last-Event-ID": "99"}, {}, "Last-Event-ID"),  # from the future: the user is at revision 0
        ({}, {"since": "99"}, "since"),
        ({}, {"since": "yesterday"}, "since"),
        ({}, {"since": "-1"}, "since"),
    ],
)
async def test_a_malformed_or_future_resume_point_is_422_naming_it(
    api: httpx.AsyncClient, alice: Account, headers: dict[str, str], params: dict[str, str], field: str
) -> None:
    response = await api.get(events_url(alice), headers={**alice.headers, **headers}, params=params)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in response.json()["errors"]] == [field]


# --- bounds -----------------------------------------------------------------------------------------------------


async def test_a_user_beyond_their_streams_gets_429_and_others_are_unaffected(
    api: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    async with AsyncExitStack() as streams:
        await hold_streams(streams, api, alice, 2)
        refused = await api.get(events_url(alice), headers=alice.headers)
        async with open_stream(api, events_url(bob), headers=bob.headers) as bobs:
            await bobs.wait_until_open()

    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) > 0


async def test_a_server_holding_all_the_streams_it_may_answers_503(
    api: httpx.AsyncClient, make_account: Callable[..., Account]
) -> None:
    async def none_open() -> bool:
        return await streams_open(api) == 0

    await until(none_open, "the streams of earlier tests were closed")
    async with AsyncExitStack() as streams:
        for account in [make_account() for _ in range(3)]:
            await hold_streams(streams, api, account, 2)
        newcomer = make_account()
        refused = await api.get(events_url(newcomer), headers=newcomer.headers)

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) > 0


async def test_open_streams_take_none_of_their_users_slots_for_requests(api: httpx.AsyncClient, alice: Account) -> None:
    async with AsyncExitStack() as streams:
        await hold_streams(streams, api, alice, 2)
        responses = await asyncio.gather(*(api.get(alice.tasks_url(), headers=alice.headers) for _ in range(4)))

    assert [response.status_code for response in responses] == [200] * 4


def stalled_request(server: ApiServer, account: Account) -> socket.socket:
    """Ask for the stream over a socket with a tiny receive buffer, read up to its opening, then read no more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", server.port))
    request = f"GET {events_url(account)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {account.token}\r\n\r\n"
    sock.sendall(request.encode())
    received = b""
    while b"retry:" not in received:
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the stream at once: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    return sock


async def test_a_client_that_stops_reading_is_disconnected_not_buffered_for(
    server: ApiServer,
    api: httpx.AsyncClient,
    db_insert_tasks: Callable[..., Awaitable[None]],
    make_account: Callable[..., Account],
) -> None:
    account = make_account()
    await db_insert_tasks(account, 1000)

    async def count_is(expected: int) -> Callable[[], Awaitable[bool]]:
        async def holds() -> bool:
            return await streams_open(api) == expected

        return holds

    await until(await count_is(0), "the streams of earlier tests were closed")
    sock = await asyncio.to_thread(stalled_request, server, account)
    try:
        await until(await count_is(1), "the stalled stream was counted")
        completed = False

        async def dropped_after_another_thousand_events() -> bool:
            nonlocal completed
            completed = not completed
            toggled = await api.patch(account.tasks_url(), json={"completed": completed}, headers=account.headers)
            assert toggled.status_code == 200, toggled.text
            return await streams_open(api) == 0

        # Each round is ~300 KB of events that nobody reads: once the socket's buffers are full, the server's next
        # write waits, and after SSE_SEND_TIMEOUT_SECONDS it gives the stream up.
        await until(dropped_after_another_thousand_events, "the server dropped the stream nobody read")
    finally:
        sock.close()
    # Its slot is free again: the user can open as many streams as before.
    async with open_stream(api, events_url(account), headers=account.headers) as one:
        await one.wait_until_open()
        async with open_stream(api, events_url(account), headers=account.headers) as two:
            await two.wait_until_open()


# --- endings ----------------------------------------------------------------------------------------------------


async def test_a_stream_ends_when_its_token_expires(
    api: httpx.AsyncClient, signing_keys: dict[str, SigningKey]
) -> None:
    user_id = new_user_id()
    account = Account(id=user_id, token=mint(user_id, signing_keys["EdDSA"], expires_in=3))
    async with open_stream(api, events_url(account), headers=account.headers) as stream:
        await stream.wait_until_open()
        await until(stream.ended.is_set, "the stream ended with its token")

    assert stream.error is None  # the response was ended properly, not cut
    assert any("expired" in comment for comment in stream.comments)


async def test_sigterm_ends_open_streams_cleanly_and_the_server_exits_promptly(
    doomed_server: ApiServer, alice: Account
) -> None:
    assert doomed_server.process is not None
    async with (
        httpx.AsyncClient(base_url=doomed_server.url, timeout=30) as client,
        open_stream(client, events_url(alice), headers=alice.headers) as stream,
    ):
        await stream.wait_until_open()
        doomed_server.process.send_signal(signal.SIGTERM)
        await until(stream.ended.is_set, "the stream ended on SIGTERM")
    status = await asyncio.to_thread(doomed_server.process.wait, PROMPT_EXIT_SECONDS)
    log = doomed_server.log()

    assert stream.error is None  # ended properly: the client reconnects (elsewhere) with Last-Event-ID
    assert any("shutting down" in comment for comment in stream.comments)
    assert status in {0, -signal.SIGTERM}
    assert "Traceback" not in log
    assert "graceful shutdown exceeded" not in log


async def test_a_stream_ends_when_its_account_is_erased_and_a_new_one_starts_afresh(
    api: httpx.AsyncClient, alice: Account
) -> None:
    await create_task(api, alice, title="about to go")
    async with open_stream(api, events_url(alice), headers=alice.headers) as stream:
        await stream.wait_until_open()
        erased = await api.delete(f"/api/{alice.id}", headers=alice.headers)
        assert erased.status_code == 204, erased.text
        await until(stream.ended.is_set, "the stream ended with its account")

    assert stream.error is None  # ended properly, with a word on why
    assert any("erased" in comment for comment in stream.comments)
    assert stream.events == []  # nothing of the erased account was sent as a change
    # The token is still valid: it provisions a fresh, empty account, whose stream starts at revision 0.
    async with open_stream(api, events_url(alice), headers=alice.headers) as fresh:
        await fresh.wait_until_open()
        created = await create_task(api, alice, title="a new start")
        (event,) = await fresh.wait_for_events(1)
    assert event.json()["task"] == created
    assert event.json()["revision"] == 1


# --- across instances (PostgreSQL) ------------------------------------------------------------------------------


async def test_a_write_through_one_instance_reaches_streams_on_the_other(
    postgres_instances: tuple[ApiServer, ApiServer, str], alice: Account
) -> None:
    server, second_server, _ = postgres_instances
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as a,
        httpx.AsyncClient(base_url=second_server.url, timeout=30) as b,
        open_stream(b, events_url(alice), headers=alice.headers) as on_b,
        open_stream(a, events_url(alice), headers=alice.headers) as on_a,
    ):
        await on_a.wait_until_open()
        await on_b.wait_until_open()
        created = await create_task(a, alice, title="written on A")
        async with asyncio.timeout(CROSS_INSTANCE_DEADLINE_SECONDS):
            on_b_events = await on_b.wait_for_events(1)
            on_a_events = await on_a.wait_for_events(1)

    assert [event.json()["task"] for event in on_b_events] == [created]
    assert [event.json()["task"] for event in on_a_events] == [created]


async def test_erasing_an_account_through_one_instance_ends_its_streams_on_the_other(
    postgres_instances: tuple[ApiServer, ApiServer, str], alice: Account
) -> None:
    server, second_server, _ = postgres_instances
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as a,
        httpx.AsyncClient(base_url=second_server.url, timeout=30) as b,
        open_stream(b, events_url(alice), headers=alice.headers) as on_b,
    ):
        await create_task(a, alice, title="written on A")
        await on_b.wait_until_open()
        erased = await a.delete(f"/api/{alice.id}", headers=alice.headers)
        assert erased.status_code == 204, erased.text
        async with asyncio.timeout(CROSS_INSTANCE_DEADLINE_SECONDS):
            await on_b.ended.wait()

    assert on_b.error is None
    assert any("erased" in comment for comment in on_b.comments)


async def listener_pids(db: AsyncEngine, server: ApiServer) -> set[int]:
    """The backends LISTENing for ``server`` (``python -m app serve`` with one worker: the process itself)."""
    assert server.process is not None
    async with db.connect() as connection:
        rows = await connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": f"{LISTENER_APPLICATION_NAME}-{server.process.pid}"},
        )
        return {int(pid) for (pid,) in rows}


async def test_streams_miss_nothing_when_the_listening_connection_is_killed(
    postgres_instances: tuple[ApiServer, ApiServer, str], alice: Account
) -> None:
    server, _, url = postgres_instances
    db = create_engine(Settings(database_url=url), pooled=False)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        try:
            await streams_survive_losing_the_listener(server, api, db, alice)
        finally:
            await db.dispose()


async def streams_survive_losing_the_listener(
    server: ApiServer, api: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    async with open_stream(api, events_url(alice), headers=alice.headers) as stream:
        await stream.wait_until_open()
        killed = await listener_pids(db, server)
        assert len(killed) == 1  # one per process
        unheard = uuid.uuid4()
        async with db.connect() as connection:
            pids = {"pids": list(killed)}
            await connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(:pids)"), pids
            )
            # Written the moment the listeners are gone, long before they are back (the first retry waits 50 ms at
            # least): its NOTIFY reaches nobody, and only catching up once listening again brings it to the stream.
            # pg_stat_activity is read once per transaction, so each look is a transaction of its own.
            await connection.commit()
            while await connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"), pids):
                await connection.commit()
            await connection.commit()
            now = utcnow()
            await connection.execute(
                insert(Task).values(
                    id=unheard, user_id=alice.id, title="unheard", completed=False, created_at=now, updated_at=now
                )
            )
            await connection.commit()
        await stream.wait_for_events(1)
        # Written through the API while the listeners are down, or just back.
        written = [await create_task(api, alice, title=f"meanwhile {n}") for n in range(3)]
        await stream.wait_for_events(4)

        async def listening_again() -> bool:
            return bool(await listener_pids(db, server) - killed)

        await until(listening_again, "a new listening connection was opened")
        heard = await create_task(api, alice, title="heard")
        async with asyncio.timeout(CROSS_INSTANCE_DEADLINE_SECONDS):
            events = await stream.wait_for_events(5)

    assert [event.json()["task"]["id"] for event in events] == [str(unheard), *(t["id"] for t in [*written, heard])]
    assert "Traceback" not in server.log()


async def test_a_change_nobody_announced_reaches_the_stream_at_its_next_heartbeat(
    api: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    async with open_stream(api, events_url(alice), headers=alice.headers) as stream:
        await stream.wait_until_open()
        # Written behind the service's back, as by a process that died between its commit and its announcement.
        now = utcnow()
        async with db.begin() as connection:
            await connection.execute(
                insert(Task).values(
                    id=uuid.uuid4(), user_id=alice.id, title="unannounced", completed=False, created_at=now,
                    updated_at=now,
                )
            )  # fmt: skip
        (event,) = await stream.wait_for_events(1)

    assert event.json()["task"]["title"] == "unannounced"


def test_news_of_many_users_goes_out_in_notifications_within_the_payload_limit() -> None:
    users = [f"user-{n:04d}-" + "x" * 40 for n in range(400)]

    payloads = notify_payloads(users)

    assert len(payloads) > 1
    assert all(len(payload.encode()) < 8000 for payload in payloads)
    assert [user for payload in payloads for user in json.loads(payload)] == users
