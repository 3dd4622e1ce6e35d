"""A user row is provisioned from token claims on the first authenticated request, race-free."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Task, User
from tests.support.factories import Account, new_user_id
from tests.support.issuer import SigningKey, mint


async def user_row(db: AsyncEngine, user_id: str) -> dict[str, Any] | None:
    async with db.connect() as connection:
        row = (await connection.execute(select(User.__table__).where(User.id == user_id))).mappings().first()
        return dict(row) if row is not None else None


async def count_users(db: AsyncEngine, user_id: str) -> int:
    async with db.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(User).where(User.id == user_id)) or 0)


async def test_first_request_provisions_the_user_from_the_claims(
    client: httpx.AsyncClient, db: AsyncEngine, make_account: Callable[..., Account]
) -> None:
    account = make_account(name="Ada Lovelace")
    assert await user_row(db, account.id) is None

    response = await client.get(account.tasks_url(), headers=account.headers)

    assert response.status_code == 200
    row = await user_row(db, account.id)
    assert row is not None
    assert (row["email"], row["name"]) == (account.email, "Ada Lovelace")
    assert row["created_at"].tzinfo is not None


async def test_refused_requests_provision_nobody(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    await client.get(alice.tasks_url(), headers=bob.headers)  # 403: bob on alice's path
    await client.get(f"/api/{alice.id}/tasks", headers={"Authorization": "Bearer nonsense"})  # 401

    assert await user_row(db, alice.id) is None


async def test_changed_claims_update_the_user_row(
    client: httpx.AsyncClient, db: AsyncEngine, signing_keys: dict[str, SigningKey]
) -> None:
    user_id = new_user_id()
    first = mint(user_id, signing_keys["EdDSA"], email=f"{user_id}@old.example", name="Old Name")
    second = mint(user_id, signing_keys["EdDSA"], email=f"{user_id}@new.example", name="New Name")

    await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {first}"})
    await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {second}"})

    row = await user_row(db, user_id)
    assert row is not None
    assert (row["email"], row["name"]) == (f"{user_id}@new.example", "New Name")


async def test_tokens_without_email_or_name_provision_a_bare_user(
    client: httpx.AsyncClient, db: AsyncEngine, signing_keys: dict[str, SigningKey]
) -> None:
    user_id = new_user_id()
    token = mint(user_id, signing_keys["RS256"])

    response = await client.post(
        f"/api/{user_id}/tasks", json={"title": "x"}, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 201
    row = await user_row(db, user_id)
    assert row is not None
    assert (row["email"], row["name"]) == (None, None)


async def test_unusable_claims_are_stored_as_null_not_refused(
    client: httpx.AsyncClient, db: AsyncEngine, signing_keys: dict[str, SigningKey]
) -> None:
    user_id = new_user_id()
    token = mint(user_id, signing_keys["EdDSA"], email=["not", "a", "string"], name="x" * 300)

    response = await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    row = await user_row(db, user_id)
    assert row is not None
    assert (row["email"], row["name"]) == (None, None)


async def test_concurrent_first_requests_of_a_new_user_all_succeed(
    client: httpx.AsyncClient, db: AsyncEngine, make_account: Callable[..., Account]
) -> None:
    account = make_account()

    responses = await asyncio.gather(
        *(client.post(account.tasks_url(), json={"title": f"task {n}"}, headers=account.headers) for n in range(12)),
        *(client.get(account.tasks_url(), headers=account.headers) for _ in range(8)),
    )

    assert sorted({r.status_code for r in responses}) == [200, 201]
    assert await count_users(db, account.id) == 1
    listed = await client.get(account.tasks_url(), headers=account.headers)
    assert listed.headers["x-total-count"] == "12"


async def test_an_email_held_by_another_user_does_not_fail_the_request(
    client: httpx.AsyncClient, db: AsyncEngine, make_account: Callable[..., Account]
) -> None:
    original = make_account(email="shared@example.com")
    newcomer = make_account(email="shared@example.com")  # e.g. the account was re-created upstream
    await client.get(original.tasks_url(), headers=original.headers)

    response = await client.post(newcomer.tasks_url(), json={"title": "mine"}, headers=newcomer.headers)

    assert response.status_code == 201
    original_row, newcomer_row = await user_row(db, original.id), await user_row(db, newcomer.id)
    assert original_row is not None
    assert newcomer_row is not None
    assert original_row["email"] == "shared@example.com"
    assert newcomer_row["email"] is None
    assert newcomer_row["name"] == newcomer.name


async def test_concurrent_new_users_sharing_an_email_all_succeed(
    client: httpx.AsyncClient, db: AsyncEngine, make_account: Callable[..., Account]
) -> None:
    email = f"{new_user_id()}@example.com"
    accounts = [make_account(email=email) for _ in range(6)]

    responses = await asyncio.gather(*(client.get(a.tasks_url(), headers=a.headers) for a in accounts))

    assert [r.status_code for r in responses] == [200] * 6
    async with db.connect() as connection:
        holders = await connection.scalar(select(func.count()).select_from(User).where(User.email == email))
    assert holders == 1


async def test_a_user_row_deleted_behind_the_services_back_is_provisioned_again(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    await client.post(alice.tasks_url(), json={"title": "before"}, headers=alice.headers)
    async with db.begin() as connection:
        await connection.execute(delete(User).where(User.id == alice.id))

    response = await client.post(alice.tasks_url(), json={"title": "after"}, headers=alice.headers)

    assert response.status_code == 201
    assert await user_row(db, alice.id) is not None


async def test_deleting_a_user_deletes_their_tasks(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    for n in range(3):
        await client.post(alice.tasks_url(), json={"title": f"t{n}"}, headers=alice.headers)

    async with db.begin() as connection:
        await connection.execute(delete(User).where(User.id == alice.id))
        remaining = await connection.scalar(select(func.count()).select_from(Task).where(Task.user_id == alice.id))

    assert remaining == 0
