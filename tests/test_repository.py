"""The task repository is scoped to its owner: no statement of it reads or writes another user's task."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.models import utcnow
from app.tasks.repository import TaskFilters, TaskRepository
from tests.support.factories import Account, create_task


async def test_no_statement_of_a_users_repository_touches_another_users_task(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, bob: Account
) -> None:
    bobs = await create_task(client, bob)
    task_id = uuid.UUID(bobs["id"])

    async with AsyncSession(db) as session:
        alices = TaskRepository(session, alice.id)
        found = await alices.find(task_id)
        updated = await alices.update(task_id, {"title": "x"}, utcnow(), None)
        toggled = await alices.toggle(task_id, utcnow(), None)
        removed = await alices.remove(task_id, None)
        listed = await alices.page(TaskFilters(), sort="-created_at", limit=10, offset=0, now=utcnow())
        await session.commit()

    assert (found, updated, toggled, removed) == (None, None, None, False)
    assert (list(listed.tasks), listed.total, listed.next) == ([], 0, None)
    assert (await client.get(bob.tasks_url(bobs["id"]), headers=bob.headers)).json() == bobs
