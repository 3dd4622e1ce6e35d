"""Task use cases for one owner: list, read, create, update, toggle and delete.

A :class:`TaskService` is built for the authenticated user around a :class:`TaskRepository` scoped to that
user, so no handler can forget the owner filter: a task of another user is simply not found. It speaks in
task versions (the HTTP layer turns ``If-Match`` into them) and knows nothing of users beyond their id: when the
owner's row has vanished it asks, through the callback it was given, for the row to be provisioned again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import after_commit, commit, transaction
from app.errors import DomainError, InvalidFieldError, NotFoundError, PreconditionFailedError
from app.models import utcnow
from app.tasks.cursor import Cursor
from app.tasks.ordering import GAP, MAX_KEY_LENGTH, key_between, key_of
from app.tasks.repository import ChangeRow, Page, TaskFilters, TaskRepository, TaskRow
from app.tasks.schemas import (
    PRIORITY_RANKS,
    ChangeFeed,
    TaskChange,
    TaskCreate,
    TaskDeletion,
    TaskRead,
    TasksDeleted,
    TaskSort,
    TasksUpdated,
    TaskUpdate,
    TaskUpsert,
)

__all__ = (
    "RevisionExpiredError",
    "TaskChangedError",
    "TaskNotFoundError",
    "TaskQuotaExceededError",
    "TaskService",
    "Versions",
    "change_from_row",
)

Versions = frozenset[int] | None
"""The versions a write may apply to (from ``If-Match``); ``None``: any."""


class TaskNotFoundError(NotFoundError):
    """No task with this id belongs to the caller."""

    detail = "Task not found."


class TaskChangedError(PreconditionFailedError):
    """If-Match named a version the task no longer has: someone changed it since the client read it."""

    detail = "The task has changed since it was read (If-Match does not match its ETag); fetch it and retry."
    audit_event = "task.conflict"

    def __init__(self, task_id: UUID) -> None:
        super().__init__(task_id=str(task_id))


class TaskQuotaExceededError(DomainError):
    """The owner already holds as many tasks as one user may."""

    status_code = 409

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You have reached the limit of {limit} tasks per user (MAX_TASKS_PER_USER); "
            "delete tasks before creating more."
        )


class RevisionExpiredError(DomainError):
    """``since`` is older than the oldest tombstone kept: deletions after it may be gone from the feed."""

    status_code = 410
    detail = (
        "Changes since this revision are no longer kept (tombstones live SYNC_TOMBSTONE_RETENTION_DAYS); "
        "sync again from since=0."
    )


def change_from_row(row: ChangeRow) -> TaskChange:
    """A change feed row as the change it describes."""
    if row.op == "delete":
        return TaskDeletion(revision=row.revision, id=row.id, deleted_at=row.deleted_at)
    return TaskUpsert(revision=row.revision, task=TaskRead.from_row(row))


class TaskService:
    """The tasks of one owner."""

    def __init__(
        self,
        session: AsyncSession,
        owner_id: str,
        *,
        max_tasks: int,
        provision_owner_again: Callable[[], Awaitable[None]],
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.session = session
        self.owner_id = owner_id
        self.max_tasks = max_tasks
        self.provision_owner_again = provision_owner_again
        self.announce = announce
        self.repository = TaskRepository(session, owner_id)

    def _changed(self) -> None:
        """The owner's tasks changed: once committed, tell ``announce`` (PostgreSQL's triggers announce changes
        themselves, with NOTIFY; the embedded SQLite has no such thing and is told here)."""
        if self.announce is not None:
            announce, owner_id = self.announce, self.owner_id
            after_commit(self.session, lambda: announce(owner_id))

    async def list(
        self,
        filters: TaskFilters | None = None,
        *,
        sort: TaskSort = "-created_at",
        limit: int = 1000,
        offset: int = 0,
        cursor: Cursor | None = None,
    ) -> Page:
        """A page of the owner's tasks: the first (or ``offset`` tasks in), or the one after ``cursor``."""
        if cursor is not None:
            return await self.repository.walk(filters or TaskFilters(), sort=sort, limit=limit, cursor=cursor)
        return await self.repository.page(filters or TaskFilters(), sort=sort, limit=limit, offset=offset, now=utcnow())

    async def get(self, task_id: UUID) -> TaskRow:
        """The owner's task with this id."""
        task = await self.repository.find(task_id)
        if task is None:
            raise TaskNotFoundError
        return task

    async def create(self, data: TaskCreate) -> TaskRow:
        """Store a new task for the owner, within the quota; ids and timestamps are always assigned here."""
        if data.after is not None:
            return await self._create_after(data, data.after)
        task = await self._insert(data)
        if task is None:
            count = await self.repository.task_count()
            if count is None or count < self.max_tasks:
                # The owner's row was gone at the insert (the account erased, or deleted by an operator), and may
                # be back by now (another request provisioned it): provision it if need be, and retry once, rather
                # than failing a valid request.
                if count is None:
                    await self.provision_owner_again()
                task = await self._insert(data)
        if task is None:
            raise TaskQuotaExceededError(self.max_tasks)
        return task

    async def _create_after(self, data: TaskCreate, after: UUID) -> TaskRow:
        """Create the task right after ``after`` in the manual order: its key is computed under the owner's lock."""
        async with transaction(self.session):
            await self.repository.lock_order()
            anchor = await self.repository.find(after)
            if anchor is None:
                raise InvalidFieldError("after", "No task of yours has this id.", source="body")
            position = key_between(anchor.position, await self.repository.following(anchor.position, after))
            task = await self._insert(data, position)
            if task is None:
                raise TaskQuotaExceededError(self.max_tasks)
            return task

    async def _insert(self, data: TaskCreate, position: str | None = None) -> TaskRow | None:
        now = utcnow()
        values = {
            "id": uuid4(),
            "title": data.title,
            "description": data.description,
            "completed": data.completed,
            "created_at": now,
            "updated_at": now,
            "version": 1,
            "due_at": data.due_at,
            "priority": PRIORITY_RANKS[data.priority],
            # None: the insert trigger puts the task first (migration 0005).
            "position": position,
        }
        task = await self.repository.insert(values, self.max_tasks)
        if task is not None:
            self._changed()
        await commit(self.session)
        return task

    async def update(self, task_id: UUID, data: TaskUpdate, versions: Versions = None) -> TaskRow:
        """Change the fields the client sent, in one atomic statement (only at ``versions``, if given)."""
        fields = data.changes()
        if not fields:
            task = await self.get(task_id)
            if versions is not None and task.version not in versions:
                raise TaskChangedError(task_id)
            return task
        return await self._written(task_id, await self.repository.update(task_id, fields, utcnow(), versions))

    async def toggle(self, task_id: UUID, versions: Versions = None) -> TaskRow:
        """Flip ``completed``. The flip happens in the database, so concurrent toggles never read a stale value."""
        return await self._written(task_id, await self.repository.toggle(task_id, utcnow(), versions))

    async def delete(self, task_id: UUID, versions: Versions = None) -> None:
        """Remove the owner's task with this id (only at ``versions``, if given)."""
        if not await self.repository.remove(task_id, versions):
            await self._missing_or_changed(task_id)
        self._changed()
        await commit(self.session)

    async def set_all_completed(self, completed: bool) -> TasksUpdated:
        """Set ``completed`` on every task of the owner, in one statement; each changed task takes a revision."""
        async with transaction(self.session):
            updated = await self.repository.set_all_completed(completed, utcnow())
            if updated:
                self._changed()
            return TasksUpdated(updated=updated, revision=await self.repository.revision())

    async def delete_completed(self) -> TasksDeleted:
        """Delete the owner's completed tasks, in one statement; each leaves a tombstone with its revision."""
        async with transaction(self.session):
            deleted = await self.repository.remove_completed()
            if deleted:
                self._changed()
            return TasksDeleted(deleted=deleted, revision=await self.repository.revision())

    async def move(self, task_id: UUID, after: UUID | None) -> TaskRow:
        """Place the task right after ``after`` (``None``: first). One row written, unless the keys around have
        grown long: then the owner's keys are spread out first, in one statement."""
        if after == task_id:
            raise InvalidFieldError("after", "A task cannot be moved after itself.", source="body")
        async with transaction(self.session):
            first = await self.repository.lock_order()
            if first is None or await self.repository.find(task_id) is None:
                raise TaskNotFoundError
            position = await self._position_after(task_id, after, first)
            if len(position) > MAX_KEY_LENGTH:
                # first_position is the lowest integer part in use: the spread keys all go below it.
                count = (await self.repository.task_count()) or 0
                first = await self.repository.spread(first, count, utcnow())
                await self.repository.set_first(first)
                position = await self._position_after(task_id, after, first)
            task = await self.repository.place(task_id, position, utcnow())
            if task is None:  # pragma: no cover - found above, under the owner's lock
                raise TaskNotFoundError
            self._changed()
            return task

    async def _position_after(self, task_id: UUID, after: UUID | None, first: int) -> str:
        if after is None:
            # Below every key in use: the owner's first_position is the lowest integer part.
            await self.repository.set_first(first - GAP)
            return key_of(first - GAP)
        anchor = await self.repository.find(after)
        if anchor is None:
            raise TaskNotFoundError("The task to move after was not found.")
        return key_between(anchor.position, await self.repository.following(anchor.position, task_id))

    async def changes(self, since: int, limit: int) -> ChangeFeed:
        """Up to ``limit`` changes after revision ``since``, oldest first; ``since=0``: every live task."""
        try:
            rows, current, purged_through = await self.repository.changes(since, limit)
        except LookupError:
            # The owner's row is gone (the account was erased, here or through another instance): a valid token
            # simply gets a fresh, empty account, as on any other route.
            await self.provision_owner_again()
            rows, current, purged_through = await self.repository.changes(since, limit)
        if since > current:
            raise InvalidFieldError("since", f"No revision {since} yet: the latest is {current}.")
        if 0 < since < purged_through:
            raise RevisionExpiredError(since=str(since))
        has_more = len(rows) > limit
        rows = rows[:limit]
        revision = rows[-1].revision if has_more else current
        changes = [change_from_row(row) for row in rows]
        if since == 0 and has_more and revision < purged_through:
            # A full sync continued from an old revision would run into the 410 above. Finish every live task up
            # to purged_through in this page instead: what lies between is only purged tombstones, of tasks
            # deleted long before this sync began, which the client never had. Tasks changed since this page's
            # first statement have moved past purged_through, and the next page brings them.
            changes += [
                TaskUpsert(revision=row.revision, task=TaskRead.from_row(row))
                for row in await self.repository.live_through(revision, purged_through)
            ]
            revision = purged_through
        return ChangeFeed(changes=changes, revision=revision, has_more=has_more)

    async def _written(self, task_id: UUID, task: TaskRow | None) -> TaskRow:
        # The version check is part of the same statement as the write, so of N concurrent writers holding
        # the same ETag exactly one succeeds; the others find no row at that version.
        if task is None:
            await self._missing_or_changed(task_id)
        self._changed()
        await commit(self.session)
        return task

    async def _missing_or_changed(self, task_id: UUID) -> NoReturn:
        """Nothing was written: say whether the task is absent (404) or at another version (412)."""
        if await self.repository.find(task_id) is not None:
            raise TaskChangedError(task_id)
        raise TaskNotFoundError
