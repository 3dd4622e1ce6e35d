"""Create, read, update, delete and toggle one's own tasks: the success rows of the contract."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import quote
from uuid import UUID

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Task
from tests.support.factories import Account, TaskCreateFactory, create_task, new_user_id

TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "created_at", "updated_at", "revision", "due_at", "priority",
    "position",
}  # fmt: skip


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"timestamp without timezone: {value}"
    return parsed


async def test_create_returns_201_with_the_task_and_its_location(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post(
        alice.tasks_url(), json={"title": "Buy milk", "description": "Two litres"}, headers=alice.headers
    )

    assert response.status_code == 201
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert UUID(task["id"])
    assert task["user_id"] == alice.id
    assert task["title"] == "Buy milk"
    assert task["description"] == "Two litres"
    assert task["completed"] is False
    assert parse_time(task["created_at"]) == parse_time(task["updated_at"])
    assert response.headers["location"] == alice.tasks_url(task["id"])
    assert response.headers["content-type"].startswith("application/json")


async def test_create_defaults_description_to_null_and_completed_to_false(
    client: httpx.AsyncClient, alice: Account
) -> None:
    response = await client.post(alice.tasks_url(), json={"title": "Only a title"}, headers=alice.headers)

    assert response.status_code == 201
    task = response.json()
    assert task["description"] is None
    assert task["completed"] is False


async def test_create_accepts_completed_true(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice, title="Already done", completed=True)

    assert task["completed"] is True


async def test_a_created_task_is_served_at_its_location(client: httpx.AsyncClient, alice: Account) -> None:
    created = await client.post(alice.tasks_url(), json=TaskCreateFactory.json(), headers=alice.headers)

    fetched = await client.get(created.headers["location"], headers=alice.headers)

    assert fetched.status_code == 200
    assert fetched.json() == created.json()


@pytest.mark.parametrize(
    "user_id",
    ["ユーザー", "zero\u200bwidth", "right\u202eleft", "what?", "hash#tag", "per%cent", "semi;colon", "a+b=c&d"],
)
async def test_location_of_any_user_id_is_percent_encoded_and_leads_to_the_task(
    client: httpx.AsyncClient, make_account: Callable[..., Account], db: AsyncEngine, user_id: str
) -> None:
    # A Better Auth `sub` is whatever its generateId returns: anything but whitespace, controls and "/".
    account = make_account(f"{user_id}-{new_user_id()[:8]}")
    url = f"/api/{quote(account.id, safe='')}/tasks"

    response = await client.post(url, json={"title": "odd owner"}, headers=account.headers)

    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert location == f"{url}/{response.json()['id']}"
    assert location.isascii()
    fetched = await client.get(location, headers=account.headers)
    assert fetched.status_code == 200
    assert fetched.json() == response.json()
    async with db.connect() as connection:  # exactly one row: a client that retried after a 500 made two
        count = await connection.scalar(select(func.count()).select_from(Task).where(Task.user_id == account.id))
    assert count == 1


async def test_title_length_counts_characters_not_bytes(client: httpx.AsyncClient, alice: Account) -> None:
    title = "\N{GRINNING FACE}" * 200  # 200 characters, 800 bytes in UTF-8

    task = await create_task(client, alice, title=title)

    assert task["title"] == title


async def test_boundary_lengths_are_accepted(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice, title="t" * 200, description="d" * 1000)

    assert len(task["title"]) == 200
    assert len(task["description"]) == 1000


async def test_server_assigned_fields_in_the_body_are_ignored(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    forged = {
        "title": "Mine",
        "id": "00000000-0000-0000-0000-000000000001",
        "user_id": bob.id,
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "owner": "someone",
    }

    task = await create_task(client, alice, **forged)

    assert task["id"] != forged["id"]
    assert task["user_id"] == alice.id
    assert parse_time(task["created_at"]).year > 2000
    assert parse_time(task["updated_at"]).year > 2000


async def test_update_persists_only_the_fields_sent(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice, title="Old title", description="Keep me", completed=False)

    response = await client.put(alice.tasks_url(created["id"]), json={"title": "New title"}, headers=alice.headers)
    fetched = await client.get(alice.tasks_url(created["id"]), headers=alice.headers)

    assert response.status_code == 200
    updated = response.json()
    assert updated["title"] == "New title"
    assert updated["description"] == "Keep me"
    assert updated["completed"] is False
    assert updated["id"] == created["id"]
    assert fetched.json() == updated


async def test_update_with_null_description_clears_it(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice, title="Has notes", description="Notes")

    response = await client.put(alice.tasks_url(created["id"]), json={"description": None}, headers=alice.headers)

    assert response.status_code == 200
    assert response.json()["description"] is None
    assert response.json()["title"] == "Has notes"


async def test_update_can_set_every_field_at_once(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice, title="A", description=None, completed=False)

    body = {"title": "B", "description": "now described", "completed": True}
    response = await client.put(alice.tasks_url(created["id"]), json=body, headers=alice.headers)

    assert response.status_code == 200
    assert {k: response.json()[k] for k in body} == body


async def test_update_advances_updated_at_and_keeps_created_at(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice)

    updated = (
        await client.put(alice.tasks_url(created["id"]), json={"title": "Changed"}, headers=alice.headers)
    ).json()

    assert updated["created_at"] == created["created_at"]
    assert parse_time(updated["updated_at"]) > parse_time(created["updated_at"])


async def test_empty_update_changes_nothing(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice)

    response = await client.put(alice.tasks_url(created["id"]), json={}, headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == created


async def test_update_ignores_server_assigned_fields(client: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    created = await create_task(client, alice)
    forged = {"id": "00000000-0000-0000-0000-000000000002", "user_id": bob.id, "created_at": "2000-01-01T00:00:00Z"}

    response = await client.put(alice.tasks_url(created["id"]), json=forged, headers=alice.headers)

    assert response.status_code == 200
    assert response.json()["id"] == created["id"]
    assert response.json()["user_id"] == alice.id
    assert response.json()["created_at"] == created["created_at"]


async def test_toggle_flips_completed_both_ways(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice, title="Toggle me", completed=False)
    url = alice.tasks_url(created["id"], "complete")

    first = await client.patch(url, headers=alice.headers)
    second = await client.patch(url, headers=alice.headers)

    assert first.status_code == 200
    assert first.json()["completed"] is True
    assert second.status_code == 200
    assert second.json()["completed"] is False
    assert parse_time(second.json()["updated_at"]) > parse_time(first.json()["updated_at"])
    assert second.json()["created_at"] == created["created_at"]


async def test_toggle_ignores_a_request_body(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice, completed=False)

    response = await client.patch(
        alice.tasks_url(created["id"], "complete"), json={"completed": False}, headers=alice.headers
    )

    assert response.status_code == 200
    assert response.json()["completed"] is True


async def test_delete_returns_204_with_an_empty_body(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice)

    response = await client.delete(alice.tasks_url(created["id"]), headers=alice.headers)

    assert response.status_code == 204
    assert response.content == b""


async def test_deleted_task_is_gone(client: httpx.AsyncClient, alice: Account) -> None:
    created = await create_task(client, alice)
    await client.delete(alice.tasks_url(created["id"]), headers=alice.headers)

    assert (await client.get(alice.tasks_url(created["id"]), headers=alice.headers)).status_code == 404
    assert (await client.delete(alice.tasks_url(created["id"]), headers=alice.headers)).status_code == 404
    listed = await client.get(alice.tasks_url(), headers=alice.headers)
    assert created["id"] not in [t["id"] for t in listed.json()]


async def test_unknown_task_id_is_404_on_every_task_route(client: httpx.AsyncClient, alice: Account) -> None:
    missing = "6f1c2a9e-0b7d-4c43-9a55-2f0d3c1e8b77"
    url = alice.tasks_url(missing)

    responses = [
        await client.get(url, headers=alice.headers),
        await client.put(url, json={"title": "x"}, headers=alice.headers),
        await client.delete(url, headers=alice.headers),
        await client.patch(f"{url}/complete", headers=alice.headers),
    ]

    for response in responses:
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == 404
