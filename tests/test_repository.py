"""The task repository is scoped to its owner, for the fast paths and for Advanced Alchemy's own methods."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.tasks.repository import TaskRepository
from tests.factories import Account, create_task


async def test_inherited_repository_methods_only_see_the_owners_tasks(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    alices = [await create_task(client, alice) for _ in range(2)]
    bobs = await create_task(client, bob)

    async with AsyncSession(db) as session:
        repository = TaskRepository(session=session, owner_id=alice.id)
        count = await repository.count()
        listed = {task.id for task in await repository.get_many()}
        missing = await repository.get_one_or_none(id=uuid.UUID(bobs["id"]))

    assert count == 2
    assert listed == {uuid.UUID(t["id"]) for t in alices}
    assert missing is None


async def test_fast_paths_only_touch_the_owners_tasks(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    bobs = await create_task(client, bob)

    async with AsyncSession(db) as session:
        repository = TaskRepository(session=session, owner_id=alice.id)
        found = await repository.find(uuid.UUID(bobs["id"]))
        removed = await repository.remove(uuid.UUID(bobs["id"]), None)
        changed = await repository.change(uuid.UUID(bobs["id"]), {"title": "x", "updated_at": None}, None)

    assert (found, removed, changed) == (None, False, None)
    assert (await client.get(bob.tasks_url(bobs["id"]), headers=bob.headers)).json() == bobs
