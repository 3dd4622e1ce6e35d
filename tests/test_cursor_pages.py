"""Cursor pages: every listing links its next page (RFC 8288) while more tasks follow, for every sort and filter; a
walk never misses a task that exists throughout it, whatever changes meanwhile; a cursor works only for the
listing that issued it (issue 13). On PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import base64
import random
import re
from collections import Counter
from typing import Any, get_args

import httpx
import pytest

from app.tasks.cursor import MAX_CURSOR_LENGTH
from app.tasks.schemas import TaskSort
from tests.support.factories import Account, create_task

SORTS: tuple[str, ...] = get_args(TaskSort)
LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def next_url(response: httpx.Response) -> str | None:
    """The next page's URL from the ``Link`` header, or ``None`` on the last page."""
    link = response.headers.get("Link")
    if link is None:
        return None
    match = LINK.match(link)
    assert match, link
    return match["url"]


def cursor_of(url: str) -> str:
    return httpx.URL(url).params["cursor"]


async def walk(client: httpx.AsyncClient, account: Account, **params: str) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following ``Link`` from the first page to the last."""
    response = await client.get(account.tasks_url(), params=params, headers=account.headers)
    pages = []
    while True:
        assert response.status_code == 200, response.text
        pages.append(list(response.json()))
        url = next_url(response)
        if url is None:
            return pages
        response = await client.get(url, headers=account.headers)


async def listing(client: httpx.AsyncClient, account: Account, **params: str) -> list[dict[str, Any]]:
    response = await client.get(account.tasks_url(), params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return list(response.json())


async def varied_tasks(client: httpx.AsyncClient, account: Account, count: int) -> list[dict[str, Any]]:
    """Tasks that tie and differ on every sort key: repeated due dates and priorities, undated ones, titles that
    differ only in case."""
    tasks = []
    for n in range(count):
        tasks.append(
            await create_task(
                client,
                account,
                title=("Errand" if n % 2 else "errand") if n % 4 < 2 else f"task {n % 5}",
                due_at=None if n % 3 == 0 else f"2026-12-{10 + n % 4}T09:00:00Z",
                priority=("none", "low", "medium", "high")[n % 4],
                completed=n % 5 == 0,
            )
        )
    return tasks


@pytest.mark.parametrize("sort", SORTS)
async def test_a_walk_in_small_pages_is_the_whole_listing_in_order(
    client: httpx.AsyncClient, alice: Account, sort: str
) -> None:
    await varied_tasks(client, alice, 11)

    pages = await walk(client, alice, sort=sort, limit="3")

    assert [len(page) for page in pages] == [3, 3, 3, 2]
    assert [task["id"] for page in pages for task in page] == [
        task["id"] for task in await listing(client, alice, sort=sort)
    ]


async def test_filters_hold_on_every_page(client: httpx.AsyncClient, alice: Account) -> None:
    await varied_tasks(client, alice, 12)
    filters = {"completed": "false", "q": "errand", "sort": "due_at"}

    pages = await walk(client, alice, limit="2", **filters)

    assert [task["id"] for page in pages for task in page] == [
        task["id"] for task in await listing(client, alice, **filters)
    ]
    assert all(not task["completed"] and task["title"].lower() == "errand" for page in pages for task in page)


async def test_the_link_repeats_the_listing_with_a_cursor_and_every_page_counts_the_total(
    client: httpx.AsyncClient, alice: Account
) -> None:
    await varied_tasks(client, alice, 9)

    first = await client.get(
        alice.tasks_url(), params={"sort": "title", "priority": "low", "limit": "1"}, headers=alice.headers
    )
    second = await client.get(alice.tasks_url(), params={"limit": "2"}, headers=alice.headers)
    last = await client.get(alice.tasks_url(), params={"limit": "9"}, headers=alice.headers)

    url = httpx.URL(next_url(first) or "")
    assert url.path == alice.tasks_url()
    assert (url.params["sort"], url.params["priority"], url.params["limit"]) == ("title", "low", "1")
    assert first.headers["X-Total-Count"] == "2"
    assert next_url(second) is not None
    assert "Link" not in last.headers
    assert last.headers["X-Total-Count"] == "9"


async def test_an_offset_page_links_the_page_after_it(client: httpx.AsyncClient, alice: Account) -> None:
    await varied_tasks(client, alice, 6)
    everything = [task["id"] for task in await listing(client, alice)]

    page = await client.get(alice.tasks_url(), params={"offset": "2", "limit": "2"}, headers=alice.headers)
    url = next_url(page) or ""
    following = await client.get(url, headers=alice.headers)

    assert "offset" not in httpx.URL(url).params
    assert [task["id"] for task in page.json() + following.json()] == everything[2:6]
    assert next_url(following) is None


def tampered(cursor: str) -> list[str]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    flipped = bytes([raw[0] ^ 1]) + raw[1:]
    return [
        base64.urlsafe_b64encode(flipped).rstrip(b"=").decode(),  # one bit of the payload
        base64.urlsafe_b64encode(raw[:-1]).rstrip(b"=").decode(),  # the signature cut short
        cursor[:-1],  # not even whole base64
        "a",
        "not a cursor!",
        "x" * (MAX_CURSOR_LENGTH + 1),
    ]


async def test_a_tampered_cursor_is_422_naming_the_cursor(client: httpx.AsyncClient, alice: Account) -> None:
    await varied_tasks(client, alice, 3)
    first = await client.get(alice.tasks_url(), params={"limit": "1"}, headers=alice.headers)

    for cursor in tampered(cursor_of(next_url(first) or "")):
        response = await client.get(alice.tasks_url(), params={"cursor": cursor}, headers=alice.headers)
        assert response.status_code == 422, cursor
        assert response.headers["Content-Type"] == "application/problem+json"
        assert [error["field"] for error in response.json()["errors"]] == ["cursor"], cursor


@pytest.mark.parametrize(
    "other",
    [
        {"sort": "created_at"},
        {"completed": "true"},
        {"q": "errand"},
        {"due_before": "2026-12-12T00:00:00Z"},
        {"overdue": "true"},
        {"priority": "high"},
    ],
)
async def test_a_cursor_of_another_listing_is_422(
    client: httpx.AsyncClient, alice: Account, other: dict[str, str]
) -> None:
    await varied_tasks(client, alice, 3)
    first = await client.get(alice.tasks_url(), params={"limit": "1"}, headers=alice.headers)

    response = await client.get(
        alice.tasks_url(), params={"cursor": cursor_of(next_url(first) or ""), **other}, headers=alice.headers
    )

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["cursor"]


async def test_the_same_instant_in_another_offset_is_the_same_listing(
    client: httpx.AsyncClient, alice: Account
) -> None:
    await varied_tasks(client, alice, 8)
    first = await client.get(
        alice.tasks_url(), params={"limit": "1", "due_after": "2026-12-10T00:00:00Z"}, headers=alice.headers
    )

    response = await client.get(
        alice.tasks_url(),
        params={"cursor": cursor_of(next_url(first) or ""), "limit": "1", "due_after": "2026-12-10T01:00:00+01:00"},
        headers=alice.headers,
    )

    assert response.status_code == 200


async def test_another_users_cursor_is_422(client: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    await varied_tasks(client, alice, 3)
    await varied_tasks(client, bob, 3)
    alices = await client.get(alice.tasks_url(), params={"limit": "1"}, headers=alice.headers)

    response = await client.get(
        bob.tasks_url(), params={"cursor": cursor_of(next_url(alices) or "")}, headers=bob.headers
    )

    assert response.status_code == 422


async def test_cursor_and_offset_together_are_422_naming_offset(client: httpx.AsyncClient, alice: Account) -> None:
    await varied_tasks(client, alice, 3)
    first = await client.get(alice.tasks_url(), params={"limit": "1"}, headers=alice.headers)

    response = await client.get(
        alice.tasks_url(), params={"cursor": cursor_of(next_url(first) or ""), "offset": "1"}, headers=alice.headers
    )

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["offset"]


async def test_a_task_moved_behind_the_cursor_still_comes_and_an_unchanged_one_never_twice(
    client: httpx.AsyncClient, alice: Account
) -> None:
    tasks = [await create_task(client, alice, title=f"task {n:02}") for n in range(6)]
    first = await client.get(alice.tasks_url(), params={"sort": "title", "limit": "2"}, headers=alice.headers)
    # The last task, not yet returned, is renamed to sort first: behind the cursor.
    renamed = await client.put(alice.tasks_url(tasks[5]["id"]), json={"title": "a renamed"}, headers=alice.headers)
    # An already returned one is renamed to sort last: ahead of the cursor again.
    moved_on = await client.put(alice.tasks_url(tasks[0]["id"]), json={"title": "z renamed"}, headers=alice.headers)

    rest = await walk_from(client, alice, next_url(first) or "")

    returned = [task["title"] for task in first.json()] + [task["title"] for task in rest]
    assert returned == ["task 00", "task 01", "a renamed", "task 02", "task 03", "task 04", "z renamed"]
    assert renamed.status_code == moved_on.status_code == 200


async def walk_from(client: httpx.AsyncClient, account: Account, url: str | None) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    while url is not None:
        response = await client.get(url, headers=account.headers)
        assert response.status_code == 200, response.text
        tasks += response.json()
        url = next_url(response)
    return tasks


async def test_more_changes_behind_the_cursor_than_a_page_holds_come_over_several_pages(
    client: httpx.AsyncClient, alice: Account
) -> None:
    tasks = [await create_task(client, alice, title=f"task {n:02}", completed=False) for n in range(8)]
    first = await client.get(alice.tasks_url(), params={"sort": "-updated_at", "limit": "2"}, headers=alice.headers)
    # Every task, returned or not, changes: each becomes the most recently updated, behind the cursor.
    completed = await client.patch(alice.tasks_url(), json={"completed": True}, headers=alice.headers)

    rest = await walk_from(client, alice, next_url(first) or "")

    assert completed.json()["updated"] == 8
    assert Counter(task["id"] for task in rest) == Counter(task["id"] for task in tasks)
    assert all(task["completed"] for task in rest)


@pytest.mark.parametrize(("sort", "seed"), [("title", 1), ("-updated_at", 2), ("position", 3), ("due_at", 4)])
async def test_a_walk_under_concurrent_writes_misses_nothing_and_repeats_only_changed_tasks(
    client: httpx.AsyncClient, alice: Account, sort: str, seed: int
) -> None:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    initial = await varied_tasks(client, alice, 40)
    ids = [task["id"] for task in initial]
    written: set[str] = set()
    walking = True

    async def write() -> None:
        """Writes of every kind, to random tasks, until the walk ends."""
        while walking:
            kind = rng.choice(["create", "rename", "due", "priority", "toggle", "move", "delete"])
            target = rng.choice(ids)
            written.add(target)
            if kind == "create":
                ids.append((await create_task(client, alice, title=f"new {rng.random():.6f}"))["id"])
            elif kind == "delete":
                await client.delete(alice.tasks_url(target), headers=alice.headers)
            elif kind == "toggle":
                await client.patch(alice.tasks_url(target, "toggle"), headers=alice.headers)
            elif kind == "move":
                after = rng.choice([None, rng.choice(ids)])
                await client.post(alice.tasks_url(target, "move"), json={"after": after}, headers=alice.headers)
            else:
                change = {
                    "rename": {"title": rng.choice(["aaa", "mmm", "zzz", "Errand"]) + f" {rng.random():.4f}"},
                    "due": {"due_at": rng.choice([None, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"])},
                    "priority": {"priority": rng.choice(["none", "low", "medium", "high"])},
                }[kind]
                await client.put(alice.tasks_url(target), json=change, headers=alice.headers)
            await asyncio.sleep(0)

    async def walk_while_writing() -> list[dict[str, Any]]:
        nonlocal walking
        try:
            first = await client.get(alice.tasks_url(), params={"sort": sort, "limit": "3"}, headers=alice.headers)
            return list(first.json()) + await walk_from(client, alice, next_url(first))
        finally:
            walking = False

    returned, _ = await asyncio.gather(walk_while_writing(), write())

    remaining = {task["id"] for task in await listing(client, alice)}
    counts = Counter(task["id"] for task in returned)
    # Nothing that existed before the walk, and still does, is missed.
    assert {task_id for task_id in ids[: len(initial)] if task_id in remaining} <= set(counts)
    # Only a task changed during the walk comes more than once, each time in a newer state.
    assert {task_id for task_id, count in counts.items() if count > 1} <= written
    # Tasks left alone come in the listing's order.
    untouched = [task["id"] for task in returned if task["id"] not in written and task["id"] in ids[: len(initial)]]
    assert untouched == [task["id"] for task in await listing(client, alice, sort=sort) if task["id"] in set(untouched)]
    for task_id in counts:
        revisions = [task["revision"] for task in returned if task["id"] == task_id]
        assert revisions == sorted(set(revisions))
    assert len(written) > 3, "the writer must have run during the walk"
