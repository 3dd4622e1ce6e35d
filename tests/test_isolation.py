"""One user can never see or touch another's data: 403 for another user's path, 404 for another user's task."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Task
from tests.support.factories import Account, create_task

ROUTES = [
    ("GET", "", None),
    ("POST", "", {"title": "intruder"}),
    ("GET", "{id}", None),
    ("PUT", "{id}", {"title": "hijacked", "completed": True}),
    ("DELETE", "{id}", None),
    ("PATCH", "{id}/complete", None),
]


async def snapshot(db: AsyncEngine, owner: Account) -> list[tuple[Any, ...]]:
    """Every column of every task the owner has, straight from the database."""
    async with db.connect() as connection:
        rows = await connection.execute(select(Task.__table__).where(Task.user_id == owner.id).order_by(Task.id))
        return [tuple(row) for row in rows]


def url_for(path_owner: Account, suffix: str, task_id: str) -> str:
    return path_owner.tasks_url(*([suffix.format(id=task_id)] if suffix else []))


@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES, ids=[f"{m} {s or '/'}" for m, s, _ in ROUTES])
async def test_another_users_path_is_forbidden(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account, method: str, suffix: str, body: Any
) -> None:
    victim_task = await create_task(client, alice, title="private", description="secret")
    before = await snapshot(db, alice)

    response = await client.request(method, url_for(alice, suffix, victim_task["id"]), json=body, headers=bob.headers)

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "secret" not in response.text
    assert await snapshot(db, alice) == before


@pytest.mark.parametrize(
    ("method", "suffix", "body"), [r for r in ROUTES if r[1]], ids=[f"{m} {s}" for m, s, _ in ROUTES if s]
)
async def test_another_users_task_id_on_ones_own_path_is_not_found(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account, method: str, suffix: str, body: Any
) -> None:
    victim_task = await create_task(client, alice, title="private", description="secret")
    await create_task(client, bob)  # bob has tasks of his own; they must not matter either
    before = await snapshot(db, alice)

    response = await client.request(method, url_for(bob, suffix, victim_task["id"]), json=body, headers=bob.headers)

    assert response.status_code == 404
    assert response.json()["detail"] == "Task not found."
    assert "secret" not in response.text
    assert await snapshot(db, alice) == before


async def test_not_found_does_not_reveal_whether_the_task_exists(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    victim_task = await create_task(client, alice)

    someone_elses = await client.get(bob.tasks_url(victim_task["id"]), headers=bob.headers)
    nobodys = await client.get(bob.tasks_url("0b0e6b1c-2f0a-4b7e-8d8e-3a7c2c9a1f00"), headers=bob.headers)

    assert (someone_elses.status_code, someone_elses.json()) == (nobodys.status_code, nobodys.json())


async def test_lists_and_searches_only_show_ones_own_tasks(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    mine = await create_task(client, bob, title="shared word")
    await create_task(client, alice, title="shared word")

    listed = await client.get(bob.tasks_url(), headers=bob.headers)
    searched = await client.get(f"{bob.tasks_url()}?q=shared", headers=bob.headers)

    assert [t["id"] for t in listed.json()] == [mine["id"]]
    assert listed.headers["x-total-count"] == "1"
    assert [t["id"] for t in searched.json()] == [mine["id"]]


async def test_a_task_created_on_ones_own_path_belongs_to_oneself(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    task = await create_task(client, bob, user_id=alice.id)

    assert task["user_id"] == bob.id
    assert await snapshot(db, alice) == []


async def test_path_user_id_must_match_exactly(client: httpx.AsyncClient, alice: Account) -> None:
    variants = [alice.id.upper(), alice.id.lower(), f"{alice.id} ", f"{alice.id}x", alice.id[:-1]]

    for variant in {v for v in variants if v != alice.id}:
        response = await client.get(f"/api/{variant}/tasks", headers=alice.headers)
        assert response.status_code == 403, variant


SWEEP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
SWEEP_PATHS = ["", "{id}", "{id}/complete"]


async def test_sweep_of_every_route_and_method_leaks_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    """Bob tries everything on Alice's paths and on his own path with Alice's task ids."""
    victim_tasks = [await create_task(client, alice, title=f"secret-{n}", description=f"private-{n}") for n in range(3)]
    await create_task(client, bob, title="bob's own")
    before = await snapshot(db, alice)
    secrets = {t["id"] for t in victim_tasks} | {t["title"] for t in victim_tasks}

    outcomes: list[tuple[str, str, int]] = []
    for method in SWEEP_METHODS:
        for suffix in SWEEP_PATHS:
            for task in victim_tasks:
                for label, owner in (("alice's path", alice), ("own path, alice's id", bob)):
                    url = url_for(owner, suffix, task["id"])
                    body = {"title": "hijacked", "completed": True} if method in {"POST", "PUT"} else None
                    # The bulk delete needs its completed=true to be anything but a 422 (owner check or not).
                    params = {"completed": "true"} if (method, suffix) == ("DELETE", "") else None
                    response = await client.request(method, url, json=body, params=params, headers=bob.headers)
                    outcomes.append((f"{method} {label} {suffix or '/'}", url, response.status_code))
                    leaked = [s for s in secrets if s in response.text]
                    assert not leaked, (method, url, response.status_code, leaked)
                    if label == "alice's path":
                        assert response.status_code in {403, 405, 204}, (method, url, response.status_code)
                        assert response.status_code != 204 or method == "OPTIONS"
                    elif suffix:
                        assert response.status_code in {404, 405, 204}, (method, url, response.status_code)
                        assert response.status_code != 204 or method == "OPTIONS"

    assert await snapshot(db, alice) == before  # byte for byte
    print(f"\n{len(outcomes)} cross-user attempts, 0 reads or writes of the victim's data")
