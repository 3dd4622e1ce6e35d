"""Task persistence, scoped to one owner by construction.

A :class:`TaskService` is built for the authenticated user and every statement it issues carries the
owner criterion, so no handler can forget the filter: a task of another user is simply not found.
"""

from __future__ import annotations

from typing import Any, NoReturn
from uuid import UUID, uuid4

from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import ColumnElement, delete, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.tokens import Principal
from app.errors import NotFoundError, PreconditionFailedError
from app.etags import Precondition, accepted_versions, matches
from app.models import Task, utcnow
from app.tasks.schemas import TaskCreate, TaskSort, TaskUpdate
from app.users.service import UserProvisioner

__all__ = ("TaskChangedError", "TaskNotFoundError", "TaskRepository", "TaskService")


class TaskNotFoundError(NotFoundError):
    """No task with this id belongs to the caller."""

    detail = "Task not found."


class TaskChangedError(PreconditionFailedError):
    """If-Match named a version the task no longer has: someone changed it since the client read it."""

    detail = "The task has changed since it was read (If-Match does not match its ETag); fetch it and retry."


class TaskRepository(SQLAlchemyAsyncRepository[Task]):
    """Advanced Alchemy repository for :class:`Task` rows."""

    model_type = Task


_ORDERINGS: dict[TaskSort, list[Any]] = {
    "created_at": [Task.created_at.asc(), Task.id.asc()],
    "-created_at": [Task.created_at.desc(), Task.id.desc()],
    "updated_at": [Task.updated_at.asc(), Task.id.asc()],
    "-updated_at": [Task.updated_at.desc(), Task.id.desc()],
    # Alphabetical as people read it ("apple" before "Banana"), then by id so pages never overlap.
    "title": [func.lower(Task.title).asc(), Task.id.asc()],
    "-title": [func.lower(Task.title).desc(), Task.id.desc()],
}


class TaskService:
    """The tasks of one owner: list, read, create, change, toggle and delete."""

    def __init__(self, session: AsyncSession, owner: Principal, provisioner: UserProvisioner) -> None:
        self.session = session
        self.owner = owner
        self.provisioner = provisioner
        self._owned: ColumnElement[bool] = Task.user_id == owner.id
        self.repository = TaskRepository(
            session=session,
            statement=select(Task).where(self._owned),
            auto_refresh=False,
            count_with_window_function=False,
            wrap_exceptions=False,
        )

    async def list(
        self,
        *,
        completed: bool | None = None,
        search: str | None = None,
        sort: TaskSort = "-created_at",
        limit: int = 1000,
        offset: int = 0,
    ) -> tuple[list[Task], int]:
        """One page of the owner's tasks and the number of tasks matching the filters."""
        filters: list[Any] = []
        if completed is not None:
            filters.append(Task.completed == completed)
        if search:
            filters.append(
                or_(
                    Task.title.icontains(search, autoescape=True),
                    Task.description.icontains(search, autoescape=True),
                )
            )
        filters.append(LimitOffset(limit=limit, offset=offset))
        return await self.repository.get_many_and_count(*filters, order_by=_ORDERINGS[sort])

    async def get(self, task_id: UUID) -> Task:
        """The owner's task with this id."""
        task = await self.repository.get_one_or_none(Task.id == task_id)
        if task is None:
            raise TaskNotFoundError
        return task

    async def create(self, data: TaskCreate) -> Task:
        """Store a new task for the owner; ids and timestamps are always assigned here."""
        try:
            return await self._insert(data)
        except IntegrityError:
            await self.session.rollback()
        # The owner's row was provisioned earlier but has since been deleted (by an operator, say):
        # provision it again and retry once, rather than failing a valid request.
        self.provisioner.forget(self.owner.id)
        await self.provisioner.ensure(self.session, self.owner)
        return await self._insert(data)

    async def _insert(self, data: TaskCreate) -> Task:
        now = utcnow()
        task = Task(
            id=uuid4(),
            user_id=self.owner.id,
            title=data.title,
            description=data.description,
            completed=data.completed,
            created_at=now,
            updated_at=now,
        )
        await self.repository.add(task)
        await self.session.commit()
        return task

    async def update(self, task_id: UUID, data: TaskUpdate, if_match: Precondition | None = None) -> Task:
        """Change the fields the client sent, in one atomic statement (only at the If-Match version, if given)."""
        changes = data.changes()
        if not changes:
            task = await self.get(task_id)
            if if_match is not None and not matches(if_match, task.version, weak=False):
                raise TaskChangedError
            return task
        return await self._update_one(task_id, {**changes, "updated_at": utcnow()}, if_match)

    async def toggle(self, task_id: UUID, if_match: Precondition | None = None) -> Task:
        """Flip ``completed``. The flip happens in the database, so concurrent toggles never read a stale value."""
        return await self._update_one(task_id, {"completed": ~Task.completed, "updated_at": utcnow()}, if_match)

    async def delete(self, task_id: UUID, if_match: Precondition | None = None) -> None:
        """Remove the owner's task with this id (only at the If-Match version, if given)."""
        statement = delete(Task).where(*self._target(task_id, if_match)).returning(Task.id)
        deleted = (await self.session.execute(statement)).scalar_one_or_none()
        if deleted is None:
            await self._missing_or_changed(task_id)
        await self.session.commit()

    async def _update_one(self, task_id: UUID, values: dict[str, Any], if_match: Precondition | None) -> Task:
        statement = (
            update(Task)
            .where(*self._target(task_id, if_match))
            .values(**values, version=Task.version + 1)
            .returning(Task)
            .execution_options(synchronize_session=False)
        )
        task = (await self.session.execute(statement)).scalar_one_or_none()
        if task is None:
            await self._missing_or_changed(task_id)
        await self.session.commit()
        return task

    def _target(self, task_id: UUID, if_match: Precondition | None) -> tuple[ColumnElement[bool], ...]:
        """The owner's task with this id, and, under If-Match, only at a version the client names.

        The version check is part of the same statement as the write, so of N concurrent writers holding
        the same ETag exactly one succeeds; the others find no row at that version.
        """
        criteria: tuple[ColumnElement[bool], ...] = (self._owned, Task.id == task_id)
        if if_match is not None and (versions := accepted_versions(if_match)) is not None:
            criteria += (Task.version.in_(sorted(versions)) if versions else false(),)
        return criteria

    async def _missing_or_changed(self, task_id: UUID) -> NoReturn:
        """Nothing was written: say whether the task is absent (404) or at another version (412)."""
        await self.session.rollback()
        if await self.repository.exists(Task.id == task_id):
            raise TaskChangedError
        raise TaskNotFoundError
