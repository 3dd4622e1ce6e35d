"""Bulk actions ("toggle all", "clear completed"): one atomic statement each, every affected task its own
revision in the change feed; a bulk delete without `completed=true` deletes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support.factories import Account, create_task


async def changes(client: httpx.AsyncClient, account: Account, since: int) -> list[dict[str, Any]]:
    response = await client.get(account.tasks_url("changes"), params={"since": since}, headers=account.headers)
    return list(response.json()["changes"])


async def listed(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    return list((await client.get(account.tasks_url(), params={"sort": "title"}, headers=account.headers)).json())


async def test_clear_completed_deletes_only_completed_tasks(client: httpx.AsyncClient, alice: Account) -> None:
    await create_task(client, alice, title="open", completed=False)
    done = [await create_task(client, alice, title=f"done {n}", completed=True) for n in range(2)]

    response = await client.delete(alice.tasks_url(), params={"completed": "true"}, headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == {"deleted": 2, "revision": 5}
    assert [task["title"] for task in await listed(client, alice)] == ["open"]
    tombstones = await changes(client, alice, 3)
    assert sorted((c["op"], c["id"]) for c in tombstones) == sorted(("delete", task["id"]) for task in done)
    assert [c["revision"] for c in tombstones] == [4, 5]


async def test_clear_completed_without_completed_true_is_422_and_deletes_nothing(
    client: httpx.AsyncClient, alice: Account
) -> None:
    await create_task(client, alice, completed=True)

    for params in ({}, {"completed": "false"}, {"completed": "yes"}):
        response = await client.delete(alice.tasks_url(), params=params, headers=alice.headers)
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")

    assert len(await listed(client, alice)) == 1


async def test_clear_completed_with_nothing_completed_changes_nothing(
    client: httpx.AsyncClient, alice: Account
) -> None:
    await create_task(client, alice, completed=False)

    response = await client.delete(alice.tasks_url(), params={"completed": "true"}, headers=alice.headers)

    assert response.json() == {"deleted": 0, "revision": 1}


async def test_toggle_all_sets_completed_on_every_task_that_differs(client: httpx.AsyncClient, alice: Account) -> None:
    await create_task(client, alice, title="a", completed=True)
    await create_task(client, alice, title="b", completed=False)
    await create_task(client, alice, title="c", completed=False)

    response = await client.patch(alice.tasks_url(), json={"completed": True}, headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == {"updated": 2, "revision": 5}
    tasks = await listed(client, alice)
    assert [task["completed"] for task in tasks] == [True, True, True]
    assert sorted(task["revision"] for task in tasks) == [1, 4, 5]
    assert sorted(c["task"]["title"] for c in await changes(client, alice, 3)) == ["b", "c"]


async def test_toggle_all_moves_each_changed_tasks_etag(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice, completed=False)
    etag = (await client.get(alice.tasks_url(task["id"]), headers=alice.headers)).headers["ETag"]

    await client.patch(alice.tasks_url(), json={"completed": True}, headers=alice.headers)
    stale = await client.put(
        alice.tasks_url(task["id"]), json={"title": "x"}, headers={**alice.headers, "If-Match": etag}
    )

    assert stale.status_code == 412


async def test_toggle_all_body_is_validated(client: httpx.AsyncClient, alice: Account) -> None:
    for body in ({}, {"completed": "true"}, {"completed": None}):
        response = await client.patch(alice.tasks_url(), json=body, headers=alice.headers)
        assert response.status_code == 422, body


async def test_bulk_actions_touch_only_the_callers_tasks(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    await create_task(client, bob, completed=True)
    await create_task(client, bob, completed=False)

    await client.delete(alice.tasks_url(), params={"completed": "true"}, headers=alice.headers)
    await client.patch(alice.tasks_url(), json={"completed": True}, headers=alice.headers)

    assert sorted(task["completed"] for task in await listed(client, bob)) == [False, True]
    assert (
        await client.delete(bob.tasks_url(), params={"completed": "true"}, headers=alice.headers)
    ).status_code == 403


async def test_bulk_and_single_writes_of_one_user_never_deadlock(client: httpx.AsyncClient, alice: Account) -> None:
    tasks = [await create_task(client, alice, completed=False) for _ in range(8)]

    results = await asyncio.gather(
        *(client.patch(alice.tasks_url(task["id"], "complete"), headers=alice.headers) for task in tasks),
        client.patch(alice.tasks_url(), json={"completed": True}, headers=alice.headers),
        client.patch(alice.tasks_url(), json={"completed": False}, headers=alice.headers),
    )

    assert {response.status_code for response in results} == {200}
    revisions = sorted(task["revision"] for task in await listed(client, alice))
    assert len(set(revisions)) == len(revisions)
