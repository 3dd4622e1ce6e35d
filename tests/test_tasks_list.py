"""Listing: a JSON array with X-Total-Count; filters, search, every sort order and paging, exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.factories import Account, create_task


async def fetch(client: httpx.AsyncClient, account: Account, query: str = "") -> tuple[list[dict[str, Any]], int]:
    response = await client.get(f"{account.tasks_url()}{'?' + query if query else ''}", headers=account.headers)
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)
    return response.json(), int(response.headers["x-total-count"])


def ids(tasks: list[dict[str, Any]]) -> list[str]:
    return [task["id"] for task in tasks]


@pytest.fixture
async def seeded(client: httpx.AsyncClient, alice: Account) -> list[dict[str, Any]]:
    """Five tasks created one after another (so creation order is known), some completed."""
    specs = [
        {"title": "banana bread", "description": "bake on Sunday", "completed": False},
        {"title": "Apple pie", "description": None, "completed": True},
        {"title": "cherry jam", "description": "Needs SUGAR and jars", "completed": False},
        {"title": "Date night", "description": "book 100% a table", "completed": True},
        {"title": "eggs", "description": "buy_a_dozen", "completed": False},
    ]
    return [await create_task(client, alice, **spec) for spec in specs]


async def test_new_user_has_an_empty_list(client: httpx.AsyncClient, alice: Account) -> None:
    tasks, total = await fetch(client, alice)

    assert tasks == []
    assert total == 0


async def test_list_returns_every_task_newest_first_by_default(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]]
) -> None:
    tasks, total = await fetch(client, alice)

    assert total == 5
    assert ids(tasks) == ids(seeded)[::-1]
    assert tasks[0] == seeded[-1]


SORTS: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {
    "created_at": lambda s: s,
    "-created_at": lambda s: s[::-1],
    "title": lambda s: sorted(s, key=lambda t: t["title"].lower()),
    "-title": lambda s: sorted(s, key=lambda t: t["title"].lower(), reverse=True),
}


@pytest.mark.parametrize("sort", list(SORTS))
async def test_sort_orders_exactly(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]], sort: str
) -> None:
    tasks, _ = await fetch(client, alice, f"sort={sort}")

    assert ids(tasks) == ids(SORTS[sort](seeded))


async def test_sort_by_updated_at_follows_the_latest_change(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]]
) -> None:
    touched = seeded[1]
    await client.patch(alice.tasks_url(touched["id"], "complete"), headers=alice.headers)
    expected = [t["id"] for t in seeded if t["id"] != touched["id"]] + [touched["id"]]

    ascending, _ = await fetch(client, alice, "sort=updated_at")
    descending, _ = await fetch(client, alice, "sort=-updated_at")

    assert ids(ascending) == expected
    assert ids(descending) == expected[::-1]


@pytest.mark.parametrize(("completed", "expected"), [("true", [1, 3]), ("false", [0, 2, 4])])
async def test_filter_by_completion(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]], completed: str, expected: list[int]
) -> None:
    tasks, total = await fetch(client, alice, f"completed={completed}&sort=created_at")

    assert ids(tasks) == [seeded[i]["id"] for i in expected]
    assert total == len(expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("APPLE", [1]),  # title, case-insensitive
        ("sugar", [2]),  # description, case-insensitive
        ("a", [0, 1, 2, 3, 4]),  # every title or description has an "a"
        ("100%", [3]),  # % is a literal, not a wildcard
        ("_a_", [4]),  # _ is a literal, not a wildcard
        ("%", [3]),
        ("nothing like this", []),
    ],
)
async def test_search_matches_title_or_description_case_insensitively(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]], q: str, expected: list[int]
) -> None:
    tasks, total = await fetch(client, alice, f"q={q.replace('%', '%25')}&sort=created_at")

    assert ids(tasks) == [seeded[i]["id"] for i in expected]
    assert total == len(expected)


async def test_search_and_completion_filters_combine(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]]
) -> None:
    tasks, total = await fetch(client, alice, "q=e&completed=true&sort=created_at")

    assert ids(tasks) == [seeded[1]["id"], seeded[3]["id"]]
    assert total == 2


async def test_empty_search_matches_everything(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]]
) -> None:
    _, total = await fetch(client, alice, "q=")

    assert total == len(seeded)


async def test_pages_partition_the_list_and_keep_the_total(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]]
) -> None:
    pages = [await fetch(client, alice, f"sort=created_at&limit=2&offset={offset}") for offset in (0, 2, 4)]

    assert [ids(page) for page, _ in pages] == [ids(seeded[0:2]), ids(seeded[2:4]), ids(seeded[4:5])]
    assert {total for _, total in pages} == {5}


async def test_offset_past_the_end_is_an_empty_page_with_the_real_total(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]]
) -> None:
    tasks, total = await fetch(client, alice, "offset=50")

    assert tasks == []
    assert total == len(seeded)


async def test_limit_bounds_are_inclusive(
    client: httpx.AsyncClient, alice: Account, seeded: list[dict[str, Any]]
) -> None:
    one, _ = await fetch(client, alice, "limit=1")
    thousand, _ = await fetch(client, alice, "limit=1000")

    assert ids(one) == [seeded[-1]["id"]]
    assert len(thousand) == len(seeded)


async def test_ties_in_the_sort_key_page_stably(client: httpx.AsyncClient, alice: Account) -> None:
    for _ in range(6):
        await create_task(client, alice, title="same title")

    full, _ = await fetch(client, alice, "sort=title")
    paged = [
        task
        for offset in range(0, 6, 2)
        for task in (await fetch(client, alice, f"sort=title&limit=2&offset={offset}"))[0]
    ]

    assert ids(paged) == ids(full)
    assert len(set(ids(paged))) == 6


async def test_default_page_holds_up_to_1000_tasks(
    client: httpx.AsyncClient, alice: Account, db_insert_tasks: Callable[..., Any]
) -> None:
    await db_insert_tasks(alice, 1001)

    tasks, total = await fetch(client, alice)

    assert len(tasks) == 1000
    assert total == 1001
