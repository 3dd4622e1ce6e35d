"""The user's own data (issue 13, GDPR articles 17 and 20): ``GET /api/{user_id}/export`` hands over everything
stored for the caller as one JSON document; ``DELETE /api/{user_id}`` erases all of it in one transaction. On
PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Task, User
from tests.support.databases import rows_held_for
from tests.support.factories import Account, create_task


def export_url(account: Account) -> str:
    return f"/api/{account.id}/export"


def account_url(account: Account) -> str:
    return f"/api/{account.id}"


async def export(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    response = await client.get(export_url(account), headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_export_is_an_attachment_holding_the_user_and_every_task_as_the_api_shows_them(
    client: httpx.AsyncClient, alice: Account
) -> None:
    made = [await create_task(client, alice, title=f"task {n}", due_at="2026-12-24T17:00:00Z") for n in range(3)]
    await client.patch(alice.tasks_url(made[1]["id"], "toggle"), headers=alice.headers)
    shown = (await client.get(alice.tasks_url(), params={"sort": "created_at"}, headers=alice.headers)).json()

    response = await client.get(export_url(alice), headers=alice.headers)
    document = response.json()

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Content-Disposition"] == 'attachment; filename="todo-export.json"'
    assert response.headers["Cache-Control"] == "no-store"
    assert set(document) == {"user", "tasks"}
    assert document["user"]["id"] == alice.id
    assert (document["user"]["email"], document["user"]["name"]) == (alice.email, alice.name)
    assert document["user"]["created_at"].endswith("Z")
    assert document["tasks"] == shown  # oldest first, the toggle included


async def test_a_new_user_exports_an_empty_list(client: httpx.AsyncClient, alice: Account) -> None:
    document = await export(client, alice)

    assert document["tasks"] == []
    assert document["user"]["id"] == alice.id


async def test_the_export_crosses_its_batches_with_every_task_once_in_order(
    client: httpx.AsyncClient, alice: Account, db_insert_tasks: Callable[..., Awaitable[None]]
) -> None:
    await db_insert_tasks(alice, 2_345)

    tasks = (await export(client, alice))["tasks"]

    assert len(tasks) == len({task["id"] for task in tasks}) == 2_345
    assert [task["title"] for task in tasks] == [f"bulk task {n:05d}" for n in range(2_345)]


async def test_the_export_holds_only_the_callers_tasks(client: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    await create_task(client, alice, title="alice's")
    await create_task(client, bob, title="bob's")

    tasks = (await export(client, alice))["tasks"]

    assert [task["title"] for task in tasks] == ["alice's"]


async def test_another_users_export_or_erase_is_forbidden_and_erases_nothing(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    await create_task(client, alice)

    exported = await client.get(export_url(alice), headers=bob.headers)
    erased = await client.delete(account_url(alice), headers=bob.headers)

    assert (exported.status_code, erased.status_code) == (403, 403)
    assert erased.headers["Content-Type"] == "application/problem+json"
    assert (await rows_held_for(db, alice.id))["tasks"] == 1


async def test_export_and_erase_need_a_token(client: httpx.AsyncClient, alice: Account) -> None:
    assert (await client.get(export_url(alice))).status_code == 401
    assert (await client.delete(account_url(alice))).status_code == 401


async def test_erasing_removes_every_row_stored_for_the_user_and_nothing_of_anyone_else(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    tasks = [await create_task(client, alice) for _ in range(3)]
    await client.delete(alice.tasks_url(tasks[0]["id"]), headers=alice.headers)  # a tombstone
    await client.post(alice.tasks_url(), json={"title": "keyed"}, headers={**alice.headers, "Idempotency-Key": "k1"})
    await create_task(client, bob)
    assert all((await rows_held_for(db, alice.id)).values())
    bobs_before = await rows_held_for(db, bob.id)

    response = await client.delete(account_url(alice), headers=alice.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert await rows_held_for(db, alice.id) == {"users": 0, "tasks": 0, "task_tombstones": 0, "idempotency_keys": 0}
    assert await rows_held_for(db, bob.id) == bobs_before


async def test_erasing_again_is_204_too(client: httpx.AsyncClient, alice: Account) -> None:
    await create_task(client, alice)

    first = await client.delete(account_url(alice), headers=alice.headers)
    again = await client.delete(account_url(alice), headers=alice.headers)

    assert (first.status_code, again.status_code) == (204, 204)


async def test_after_erasure_a_valid_token_starts_a_fresh_empty_account(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    for _ in range(2):
        await create_task(client, alice)
    before = (await client.get(alice.tasks_url("changes"), headers=alice.headers)).json()["revision"]
    await client.delete(account_url(alice), headers=alice.headers)

    listed = await client.get(alice.tasks_url(), headers=alice.headers)
    fresh = (await client.get(alice.tasks_url("changes"), headers=alice.headers)).json()
    resumed = await client.get(alice.tasks_url("changes"), params={"since": before}, headers=alice.headers)
    created = await create_task(client, alice, title="a new start")

    assert (listed.status_code, listed.json()) == (200, [])
    assert fresh == {"changes": [], "revision": 0, "has_more": False}
    assert resumed.status_code == 422  # a replica of the erased account must start again from 0
    assert created["revision"] == 1
    assert (await rows_held_for(db, alice.id))["users"] == 1


async def test_writes_racing_an_erasure_leave_no_orphan_rows(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    await create_task(client, alice)

    async def create() -> int:
        response = await client.post(alice.tasks_url(), json={"title": "racing"}, headers=alice.headers)
        assert response.status_code == 201, response.text
        return response.status_code

    erased, *created = await asyncio.gather(
        client.delete(account_url(alice), headers=alice.headers), *(create() for _ in range(6))
    )

    stored = await rows_held_for(db, alice.id)
    assert erased.status_code == 204
    assert set(created) == {201}
    # Every task left is one created after the erasure, in a fresh account that holds it.
    assert stored["tasks"] <= 6
    if stored["tasks"]:
        assert stored["users"] == 1
    async with db.connect() as connection:
        orphans = await connection.scalar(
            select(func.count()).select_from(Task).where(~Task.user_id.in_(select(User.id)))
        )
    assert orphans == 0


async def test_the_export_is_valid_json_even_for_text_that_needs_escaping(
    client: httpx.AsyncClient, alice: Account
) -> None:
    title = 'quote " backslash \\ tab \t newline \n unicode ✓ 𝄞'
    await create_task(client, alice, title=title.replace("\n", " ").replace("\t", " "), description=title)

    response = await client.get(export_url(alice), headers=alice.headers)

    assert json.loads(response.content)["tasks"][0]["description"] == title
