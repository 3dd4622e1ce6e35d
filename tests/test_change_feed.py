"""The change feed: every write takes the owner's next revision; `/tasks/changes?since=` replays them in order,
each task once in its latest state, deletions as tombstones, paged exactly (on PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import TaskTombstone, User
from tests.support.factories import Account, create_task


async def feed(client: httpx.AsyncClient, account: Account, since: int = 0, **params: Any) -> dict[str, Any]:
    response = await client.get(
        account.tasks_url("changes"), params={"since": since, **params}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_new_user_starts_at_revision_zero_with_no_changes(client: httpx.AsyncClient, alice: Account) -> None:
    assert await feed(client, alice) == {"changes": [], "revision": 0, "has_more": False}


async def test_every_write_takes_the_next_revision(client: httpx.AsyncClient, alice: Account) -> None:
    first = await create_task(client, alice, title="one")
    second = await create_task(client, alice, title="two")
    toggled = (await client.patch(alice.tasks_url(first["id"], "complete"), headers=alice.headers)).json()
    updated = (await client.put(alice.tasks_url(second["id"]), json={"title": "2"}, headers=alice.headers)).json()

    assert [first["revision"], second["revision"], toggled["revision"], updated["revision"]] == [1, 2, 3, 4]
    assert (await client.get(alice.tasks_url(first["id"]), headers=alice.headers)).json()["revision"] == 3


async def test_a_full_sync_lists_live_tasks_in_revision_order(client: httpx.AsyncClient, alice: Account) -> None:
    kept = await create_task(client, alice, title="kept")
    gone = await create_task(client, alice, title="gone")
    changed = await create_task(client, alice, title="changed")
    await client.delete(alice.tasks_url(gone["id"]), headers=alice.headers)
    await client.put(alice.tasks_url(changed["id"]), json={"title": "changed again"}, headers=alice.headers)

    page = await feed(client, alice)

    assert [(c["op"], c["task"]["title"], c["revision"]) for c in page["changes"]] == [
        ("upsert", "kept", 1),
        ("upsert", "changed again", 5),
    ]
    assert page["changes"][0]["task"] == kept
    assert page["revision"] == 5
    assert page["has_more"] is False


async def test_an_incremental_sync_has_each_task_once_in_its_latest_state_and_tombstones(
    client: httpx.AsyncClient, alice: Account
) -> None:
    task = await create_task(client, alice, title="v1")
    other = await create_task(client, alice, title="doomed")
    since = (await feed(client, alice))["revision"]
    await client.put(alice.tasks_url(task["id"]), json={"title": "v2"}, headers=alice.headers)
    await client.put(alice.tasks_url(task["id"]), json={"title": "v3"}, headers=alice.headers)
    await client.delete(alice.tasks_url(other["id"]), headers=alice.headers)

    page = await feed(client, alice, since)

    upsert, deletion = page["changes"]
    assert (upsert["op"], upsert["revision"], upsert["task"]["title"]) == ("upsert", 4, "v3")
    assert (deletion["op"], deletion["revision"], deletion["id"]) == ("delete", 5, other["id"])
    assert deletion["deleted_at"].endswith(("Z", "+00:00"))
    assert page["revision"] == 5
    assert await feed(client, alice, 5) == {"changes": [], "revision": 5, "has_more": False}


async def test_pages_follow_one_another_without_gaps_or_repeats(client: httpx.AsyncClient, alice: Account) -> None:
    created = [await create_task(client, alice, title=f"t{n}") for n in range(7)]

    seen: list[int] = []
    since, pages = 0, 0
    while True:
        page = await feed(client, alice, since, limit=3)
        seen += [change["revision"] for change in page["changes"]]
        since, pages = page["revision"], pages + 1
        if not page["has_more"]:
            break

    assert seen == [task["revision"] for task in created]
    assert pages == 3
    assert since == 7


async def test_paging_stays_exact_while_another_client_writes(client: httpx.AsyncClient, alice: Account) -> None:
    tasks = [await create_task(client, alice, title=f"t{n}") for n in range(20)]
    replica: dict[str, dict[str, Any]] = {}

    async def writer() -> None:
        for task in tasks[::3]:
            await client.patch(alice.tasks_url(task["id"], "complete"), headers=alice.headers)
        for task in tasks[1::5]:
            await client.delete(alice.tasks_url(task["id"]), headers=alice.headers)

    async def reader() -> int:
        since = 0
        for _ in range(1000):
            page = await feed(client, alice, since, limit=2)
            revisions = [change["revision"] for change in page["changes"]]
            assert revisions == sorted(revisions)
            assert all(revision > since for revision in revisions)
            apply(replica, page["changes"])
            since = page["revision"]
            if not page["has_more"]:
                return since
        raise AssertionError("the feed never ran out of pages")

    _, since = await asyncio.gather(writer(), reader())
    # Whatever the reader saw mid-way, one more incremental sync from where it stopped brings it level.
    page = await feed(client, alice, since)
    apply(replica, page["changes"])
    listed = (await client.get(alice.tasks_url(), headers=alice.headers)).json()
    assert replica == {task["id"]: task for task in listed}


def apply(replica: dict[str, dict[str, Any]], changes: list[dict[str, Any]]) -> None:
    """What a client does with a page: upserts replace, deletions remove."""
    for change in changes:
        if change["op"] == "upsert":
            replica[change["task"]["id"]] = change["task"]
        else:
            replica.pop(change["id"], None)


async def test_a_future_revision_is_422_naming_since(client: httpx.AsyncClient, alice: Account) -> None:
    await create_task(client, alice)

    response = await client.get(alice.tasks_url("changes"), params={"since": 2}, headers=alice.headers)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"] == [
        {"field": "since", "message": "No revision 2 yet: the latest is 1.", "source": "query"}
    ]


async def test_malformed_since_and_limit_are_422(client: httpx.AsyncClient, alice: Account) -> None:
    for params in ({"since": "-1"}, {"since": "x"}, {"since": str(2**53)}, {"limit": "0"}, {"limit": "1001"}):
        response = await client.get(alice.tasks_url("changes"), params=params, headers=alice.headers)
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_revision_older_than_the_kept_tombstones_is_410(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    for n in range(3):
        await create_task(client, alice, title=f"t{n}")
    async with db.begin() as connection:  # as the purge leaves it once tombstones through revision 2 are gone
        await connection.execute(update(User).where(User.id == alice.id).values(purged_through=2))

    gone = await client.get(alice.tasks_url("changes"), params={"since": 1}, headers=alice.headers)

    assert gone.status_code == 410
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert "since=0" in gone.json()["detail"]
    assert (await feed(client, alice, 2))["revision"] == 3
    assert (await feed(client, alice, 0))["revision"] == 3


async def test_a_full_sync_in_pages_never_runs_into_the_410(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    # Old tasks (low revisions) below purged_through: a page boundary there would send the next page into 410.
    tasks = [await create_task(client, alice, title=f"t{n}") for n in range(6)]
    async with db.begin() as connection:
        await connection.execute(update(User).where(User.id == alice.id).values(purged_through=4))

    first = await feed(client, alice, 0, limit=2)
    second = await feed(client, alice, first["revision"], limit=2)

    assert [c["task"]["id"] for c in first["changes"]] == [task["id"] for task in tasks[:4]]
    assert first["revision"] == 4
    assert first["has_more"] is True
    assert [c["task"]["id"] for c in second["changes"]] == [task["id"] for task in tasks[4:]]
    assert (second["revision"], second["has_more"]) == (6, False)


async def test_a_delete_leaves_a_tombstone_row(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    task = await create_task(client, alice)
    await client.delete(alice.tasks_url(task["id"]), headers=alice.headers)

    async with db.connect() as connection:
        tombstone = (await connection.execute(select(TaskTombstone).where(TaskTombstone.user_id == alice.id))).one()

    assert (str(tombstone.task_id), tombstone.revision) == (task["id"], 2)


async def test_another_users_feed_is_forbidden(client: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    await create_task(client, bob)

    response = await client.get(bob.tasks_url("changes"), headers=alice.headers)

    assert response.status_code == 403


async def test_users_have_revisions_of_their_own(client: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    await create_task(client, alice)
    await create_task(client, alice)
    task = await create_task(client, bob)

    assert task["revision"] == 1
    assert (await feed(client, bob))["revision"] == 1
    assert (await feed(client, alice))["revision"] == 2


async def test_feed_requests_are_counted_by_kind(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    def counted() -> dict[str, float]:
        return {
            outcome: REGISTRY.get_sample_value("todo_api_change_feed_requests_total", {"outcome": outcome}) or 0.0
            for outcome in ("full", "incremental", "expired")
        }

    await create_task(client, alice)
    await create_task(client, alice)
    async with db.begin() as connection:
        await connection.execute(update(User).where(User.id == alice.id).values(purged_through=2))
    before = counted()

    await feed(client, alice, 0)
    await feed(client, alice, 2)
    await client.get(alice.tasks_url("changes"), params={"since": 1}, headers=alice.headers)

    after = counted()
    assert {outcome: after[outcome] - before[outcome] for outcome in after} == {
        "full": 1,
        "incremental": 1,
        "expired": 1,
    }


@pytest.mark.parametrize(
    "query",
    ["since=0.0", "since=&since=0", "since=1&since=2", "since={'':+'null'}&since=0.0&limit=1"],
)
async def test_a_since_that_is_not_one_whole_number_is_422(
    client: httpx.AsyncClient, alice: Account, query: str
) -> None:
    response = await client.get(f"{alice.tasks_url()}/changes?{query}", headers=alice.headers)

    assert response.status_code == 422, response.text
