"""Due dates, priority and the manual order's keys: accepted strictly, stored, returned, sorted and filtered (issue
13, first part), on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.tasks.ordering import MAX_KEY_LENGTH
from tests.support.factories import Account, create_task


async def listed(client: httpx.AsyncClient, account: Account, **params: str) -> list[dict[str, Any]]:
    response = await client.get(account.tasks_url(), params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return list(response.json())


def titles(tasks: list[dict[str, Any]]) -> list[str]:
    return [task["title"] for task in tasks]


async def test_a_new_task_has_no_due_date_and_no_priority(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice, title="plain")

    assert task["due_at"] is None
    assert task["priority"] == "none"
    assert isinstance(task["position"], str)


async def test_due_at_is_stored_with_its_offset_and_returned_in_utc(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice, due_at="2026-12-24T18:00:00+01:00", priority="high")

    assert task["due_at"] == "2026-12-24T17:00:00Z"
    assert task["priority"] == "high"
    fetched = (await client.get(alice.tasks_url(task["id"]), headers=alice.headers)).json()
    assert (fetched["due_at"], fetched["priority"]) == ("2026-12-24T17:00:00Z", "high")


async def test_update_changes_only_what_it_sends_and_null_clears_due_at(
    client: httpx.AsyncClient, alice: Account
) -> None:
    task = await create_task(client, alice, due_at="2026-12-24T17:00:00Z", priority="low")

    reprioritised = await client.put(alice.tasks_url(task["id"]), json={"priority": "medium"}, headers=alice.headers)
    cleared = await client.put(alice.tasks_url(task["id"]), json={"due_at": None}, headers=alice.headers)

    assert (reprioritised.json()["priority"], reprioritised.json()["due_at"]) == ("medium", "2026-12-24T17:00:00Z")
    assert (cleared.json()["priority"], cleared.json()["due_at"]) == ("medium", None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "t", "due_at": "2026-12-24T18:00:00"}, "due_at"),  # no offset
        ({"title": "t", "due_at": "tomorrow"}, "due_at"),
        ({"title": "t", "due_at": 1767000000}, "due_at"),
        ({"title": "t", "priority": "urgent"}, "priority"),
        ({"title": "t", "priority": 3}, "priority"),
        ({"title": "t", "priority": None}, "priority"),
    ],
)
async def test_a_naive_due_date_or_unknown_priority_is_422_naming_the_field(
    client: httpx.AsyncClient, alice: Account, body: dict[str, Any], field: str
) -> None:
    response = await client.post(alice.tasks_url(), json=body, headers=alice.headers)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_new_tasks_go_first_in_the_manual_order(client: httpx.AsyncClient, alice: Account) -> None:
    for title in ("first made", "second made", "third made"):
        await create_task(client, alice, title=title)

    assert titles(await listed(client, alice, sort="position")) == ["third made", "second made", "first made"]


async def test_concurrent_creates_never_share_a_position(app_client: Any, jwks_server: Any, alice: Account) -> None:
    async with app_client(jwks_server, max_concurrent_requests_per_user=32) as client:
        await asyncio.gather(*(create_task(client, alice, title=f"t{n}") for n in range(24)))
        positions = [task["position"] for task in await listed(client, alice, sort="position")]

    assert len(set(positions)) == 24
    assert positions == sorted(positions)


async def test_due_at_sorts_put_undated_tasks_last_both_ways(client: httpx.AsyncClient, alice: Account) -> None:
    await create_task(client, alice, title="undated")
    await create_task(client, alice, title="late", due_at="2027-01-02T00:00:00Z")
    await create_task(client, alice, title="soon", due_at="2027-01-01T00:00:00Z")

    assert titles(await listed(client, alice, sort="due_at")) == ["soon", "late", "undated"]
    assert titles(await listed(client, alice, sort="-due_at")) == ["late", "soon", "undated"]


async def test_priority_sorts_in_its_own_order(client: httpx.AsyncClient, alice: Account) -> None:
    for priority in ("medium", "none", "high", "low"):
        await create_task(client, alice, title=priority, priority=priority)

    assert titles(await listed(client, alice, sort="priority")) == ["none", "low", "medium", "high"]
    assert titles(await listed(client, alice, sort="-priority")) == ["high", "medium", "low", "none"]


async def test_due_and_priority_filters_combine_with_the_others(client: httpx.AsyncClient, alice: Account) -> None:
    now = datetime.now(UTC)
    past, future = (now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()
    await create_task(client, alice, title="overdue milk", due_at=past, priority="high", completed=False)
    await create_task(client, alice, title="done milk", due_at=past, priority="high", completed=True)
    await create_task(client, alice, title="later milk", due_at=future, priority="low", completed=False)
    await create_task(client, alice, title="undated bread")

    assert titles(await listed(client, alice, overdue="true")) == ["overdue milk"]
    assert titles(await listed(client, alice, due_before=now.isoformat(), sort="title")) == [
        "done milk",
        "overdue milk",
    ]
    assert titles(await listed(client, alice, due_after=now.isoformat())) == ["later milk"]
    assert titles(await listed(client, alice, priority="high", completed="true")) == ["done milk"]
    assert titles(await listed(client, alice, priority="low", q="milk")) == ["later milk"]
    assert (await client.get(alice.tasks_url(), params={"overdue": "true"}, headers=alice.headers)).headers[
        "x-total-count"
    ] == "1"


@pytest.mark.parametrize(
    "params",
    [{"due_before": "2026-12-24T18:00:00"}, {"due_after": "soon"}, {"priority": "urgent"}, {"overdue": "maybe"}],
)
async def test_malformed_filters_are_422(client: httpx.AsyncClient, alice: Account, params: dict[str, str]) -> None:
    response = await client.get(alice.tasks_url(), params=params, headers=alice.headers)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == list(params)


async def move(client: httpx.AsyncClient, account: Account, task_id: str, after: str | None) -> httpx.Response:
    return await client.post(account.tasks_url(task_id, "move"), json={"after": after}, headers=account.headers)


async def test_a_move_places_the_task_after_another_or_first(client: httpx.AsyncClient, alice: Account) -> None:
    a, _, c = [await create_task(client, alice, title=title) for title in ("a", "b", "c")]  # listed c, b, a

    after_a = await move(client, alice, c["id"], a["id"])
    assert after_a.status_code == 200
    assert titles(await listed(client, alice, sort="position")) == ["b", "a", "c"]
    first = await move(client, alice, a["id"], None)
    assert titles(await listed(client, alice, sort="position")) == ["a", "b", "c"]
    assert first.json()["revision"] > after_a.json()["revision"]
    assert first.headers["etag"] == '"2"'


async def test_a_move_writes_only_the_moved_task(client: httpx.AsyncClient, alice: Account) -> None:
    tasks = [await create_task(client, alice, title=f"t{n}") for n in range(4)]
    before = {task["id"]: task for task in await listed(client, alice)}

    await move(client, alice, tasks[0]["id"], tasks[2]["id"])

    after = {task["id"]: task for task in await listed(client, alice)}
    changed = [task_id for task_id in after if after[task_id] != before[task_id]]
    assert changed == [tasks[0]["id"]]


async def test_moving_after_itself_is_422_and_after_a_stranger_is_404(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    mine = await create_task(client, alice)
    theirs = await create_task(client, bob)

    itself = await move(client, alice, mine["id"], mine["id"])
    stranger = await move(client, alice, mine["id"], theirs["id"])
    missing = await move(client, alice, theirs["id"], None)

    assert itself.status_code == 422
    assert [error["field"] for error in itself.json()["errors"]] == ["after"]
    assert stranger.status_code == 404
    assert missing.status_code == 404


async def test_keys_stay_short_however_often_tasks_are_moved_into_one_gap(
    client: httpx.AsyncClient, alice: Account
) -> None:
    low, high, mover, other = [await create_task(client, alice, title=t) for t in ("low", "high", "mover", "other")]
    await move(client, alice, high["id"], low["id"])
    # Alternately move two tasks right after "low": each lands between "low" and the other, halving the gap.
    for n in range(80):
        moved = await move(client, alice, (mover, other)[n % 2]["id"], low["id"])
        assert moved.status_code == 200
        assert len(moved.json()["position"]) <= MAX_KEY_LENGTH + 2

    order = titles(await listed(client, alice, sort="position"))
    positions = [task["position"] for task in await listed(client, alice, sort="position")]
    assert order.index("low") < order.index("high")
    assert len(set(positions)) == len(positions)
    assert max(len(position) for position in positions) <= MAX_KEY_LENGTH + 2


async def test_concurrent_moves_never_share_a_position(app_client: Any, jwks_server: Any, alice: Account) -> None:
    async with app_client(jwks_server, max_concurrent_requests_per_user=32) as client:
        tasks = [await create_task(client, alice, title=f"t{n}") for n in range(10)]
        anchor = tasks[0]["id"]
        results = await asyncio.gather(*(move(client, alice, task["id"], anchor) for task in tasks[1:]))
        positions = [task["position"] for task in await listed(client, alice, sort="position")]

    assert {response.status_code for response in results} == {200}
    assert len(set(positions)) == 10


async def test_a_new_task_goes_after_the_task_the_request_names(client: httpx.AsyncClient, alice: Account) -> None:
    a = await create_task(client, alice, title="a")
    await create_task(client, alice, title="b")  # first: b, a

    created = await create_task(client, alice, title="after b", after=a["id"])
    await create_task(client, alice, title="newest")

    assert titles(await listed(client, alice, sort="position")) == ["newest", "b", "a", "after b"]
    assert created["position"] > a["position"]


async def test_creating_after_an_unknown_task_is_422_and_writes_nothing(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    theirs = await create_task(client, bob)

    response = await client.post(alice.tasks_url(), json={"title": "x", "after": theirs["id"]}, headers=alice.headers)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["after"]
    assert await listed(client, alice) == []


#: Instants whose offset puts them outside the years 1 to 9999 once in UTC: Python cannot hold them.
BEYOND_UTC = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"]


@pytest.mark.parametrize("moment", BEYOND_UTC)
async def test_a_due_date_beyond_the_years_utc_can_hold_is_422_naming_it(
    client: httpx.AsyncClient, alice: Account, moment: str
) -> None:
    created = await client.post(alice.tasks_url(), json={"title": "t", "due_at": moment}, headers=alice.headers)
    task = await create_task(client, alice, title="kept")
    updated = await client.put(alice.tasks_url(task["id"]), json={"due_at": moment}, headers=alice.headers)

    for response in (created, updated):
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == ["due_at"]


@pytest.mark.parametrize("moment", BEYOND_UTC)
@pytest.mark.parametrize("name", ["due_before", "due_after"])
async def test_a_due_filter_beyond_the_years_utc_can_hold_is_422_naming_it(
    client: httpx.AsyncClient, alice: Account, name: str, moment: str
) -> None:
    for extra in ({}, {"cursor": "0"}):
        response = await client.get(alice.tasks_url(), params={name: moment, **extra}, headers=alice.headers)

        assert response.status_code == 422, response.text
        assert name in {error["field"] for error in response.json()["errors"]}
