"""Task rows, scoped to one owner by construction.

:class:`TaskRepository` holds one owner's :class:`~app.models.Task` rows: every statement below filters on
``user_id`` inside the statement itself, so no caller can forget it. It is a plain class over the session, not
an Advanced Alchemy repository: nothing here would use that class's generic methods, and keeping them
owner-scoped too took overriding its base statement.

Its statements differ from the generic repository methods on purpose (measured in docs/benchmarks.md):

- they are built once per shape, with bind parameters, so a request pays neither for building SQLAlchemy
  expressions nor for generating their cache keys;
- they return rows, not ORM objects: identity-map bookkeeping and object construction cost more than the
  query itself for a page of tasks, and nothing here needs a unit of work;
- each write is a single statement (``UPDATE … RETURNING``, ``DELETE … RETURNING``, ``INSERT … RETURNING``),
  atomic on its own, so the engine runs in autocommit and no request spends round trips on BEGIN/COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final, cast
from uuid import UUID

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Executable,
    Result,
    Row,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate

from app.models import Task, User

__all__ = ("TaskRepository", "TaskRow", "escape_like")

TaskRow = Row[Any]
"""A task as its columns: ``id, user_id, title, description, completed, created_at, updated_at, version``."""

_TABLE = cast("Table", Task.__table__)
_USERS = cast("Table", User.__table__)
_C = _TABLE.c
_OWNER: Final = bindparam("owner", type_=_C.user_id.type)
_ID: Final = bindparam("task_id", type_=_C.id.type)
_VERSIONS: Final = bindparam("versions", expanding=True, type_=_C.version.type)

_ORDERINGS: dict[str, tuple[ColumnElement[Any], ...]] = {
    "created_at": (_C.created_at.asc(), _C.id.asc()),
    "-created_at": (_C.created_at.desc(), _C.id.desc()),
    "updated_at": (_C.updated_at.asc(), _C.id.asc()),
    "-updated_at": (_C.updated_at.desc(), _C.id.desc()),
    # Alphabetical as people read it ("apple" before "Banana"), then by id so pages never overlap.
    "title": (func.lower(_C.title).asc(), _C.id.asc()),
    "-title": (func.lower(_C.title).desc(), _C.id.desc()),
}


def escape_like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (``%`` and ``_`` are not wildcards in a search)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _owned(*criteria: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    return (_C.user_id == _OWNER, *criteria)


@cache
def _find() -> Select[Any]:
    return select(*_C).where(*_owned(_C.id == _ID))


@cache
def _page(completed: bool, search: bool, sort: str) -> tuple[Select[Any], Select[Any]]:
    """The count and the page of a listing with these filters (each shape built once).

    The page is a deferred join: the ids of the page are found first, from the ``(user_id, <sort>, id)``
    index alone, then only those rows are read. A plain ``OFFSET 9950`` would read 9 950 rows from the table
    to throw them away; this skips them inside the index (docs/benchmarks.md has the figures).
    """
    criteria = list(_owned())
    if completed:
        criteria.append(_C.completed == bindparam("completed"))
    if search:
        pattern: BindParameter[str] = bindparam("pattern")
        criteria.append(or_(_C.title.ilike(pattern, escape="\\"), _C.description.ilike(pattern, escape="\\")))
    count = select(func.count()).select_from(_TABLE).where(*criteria)
    ids = (
        select(_C.id)
        .where(*criteria)
        .order_by(*_ORDERINGS[sort])
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
        .subquery("page")
    )
    page = select(*_C).join_from(_TABLE, ids, _C.id == ids.c.id).where(*_owned()).order_by(*_ORDERINGS[sort])
    return count, page


#: The columns a create names, in the order of the values selected for them below.
_INSERTED = ("id", "user_id", "title", "description", "completed", "created_at", "updated_at", "version")


@cache
def _insert() -> ReturningInsert[Any]:
    """Insert a task only while its owner is under the quota: ``INSERT … SELECT … FROM users … FOR UPDATE``.

    The owner's row is locked, and its ``task_count`` (kept by triggers) re-read after any wait for that lock,
    so concurrent creates of one user cannot overshoot the quota; other users' creates never wait. No row
    inserted means the owner is at the quota, or has no user row.
    """
    values = [bindparam(f"new_{name}", type_=_C[name].type) for name in _INSERTED if name != "user_id"]
    source = (
        select(values[0], _USERS.c.id, *values[1:])
        .where(_USERS.c.id == _OWNER, _USERS.c.task_count < bindparam("max_tasks"))
        .with_for_update()
    )
    return insert(_TABLE).from_select(list(_INSERTED), source).returning(*_C)


@cache
def _task_count() -> Select[Any]:
    return select(_USERS.c.task_count).where(_USERS.c.id == _OWNER)


def _versioned(conditional: bool, *criteria: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    """The owner's task ``:task_id``, at one of ``:versions`` when the write is conditional."""
    return _owned(_C.id == _ID, *criteria, *([_C.version.in_(_VERSIONS)] if conditional else []))


@cache
def _update(fields: frozenset[str], conditional: bool) -> ReturningUpdate[Any]:
    values: dict[str, Any] = {name: bindparam(f"new_{name}", type_=_C[name].type) for name in fields}
    return _bumped(update(_TABLE).where(*_versioned(conditional)).values(**values))


@cache
def _toggle(conditional: bool) -> ReturningUpdate[Any]:
    # Flipped in the database, so concurrent toggles never act on a value read earlier.
    return _bumped(update(_TABLE).where(*_versioned(conditional)).values(completed=~_C.completed))


def _bumped(statement: Update) -> ReturningUpdate[Any]:
    """Every change stamps ``updated_at`` and moves the version (the ETag) on."""
    stamp = bindparam("updated_at", type_=_C.updated_at.type)
    return statement.values(updated_at=stamp, version=_C.version + 1).returning(*_C)


@cache
def _remove(conditional: bool) -> ReturningDelete[Any]:
    return delete(_TABLE).where(*_versioned(conditional)).returning(_C.id)


class TaskRepository:
    """One owner's task rows. Writes take ``versions``: the write applies only to a task at one of them
    (``None``: at any version), in the same statement, so of concurrent writers holding one ETag exactly one wins."""

    def __init__(self, session: AsyncSession, owner_id: str) -> None:
        self.session = session
        self.owner_id = owner_id

    async def _run(self, statement: Executable, params: dict[str, Any]) -> Result[Any]:
        # Straight to the session's connection: these statements are Core, so the ORM's execution layer
        # (compile state, identity map, events) would only add time.
        connection = await self.session.connection()
        return await connection.execute(statement, params)

    async def find(self, task_id: UUID) -> TaskRow | None:
        """The owner's task with this id."""
        return (await self._run(_find(), {"owner": self.owner_id, "task_id": task_id})).first()

    async def page(
        self, *, completed: bool | None, search: str | None, sort: str, limit: int, offset: int
    ) -> tuple[Sequence[TaskRow], int]:
        """One page of the owner's tasks and the number matching the filters."""
        count, page = _page(completed is not None, bool(search), sort)
        params: dict[str, Any] = {"owner": self.owner_id, "limit": limit, "offset": offset}
        if completed is not None:
            params["completed"] = completed
        if search:
            params["pattern"] = f"%{escape_like(search)}%"
        total = int((await self._run(count, params)).scalar_one())
        if total == 0 or offset >= total:
            return [], total
        return (await self._run(page, params)).all(), total

    async def insert(self, values: dict[str, Any], max_tasks: int) -> TaskRow | None:
        """Insert one of the owner's tasks (``values`` names every column but ``user_id``) and return it;
        ``None`` when nothing was inserted (see :meth:`task_count` for why)."""
        params = {f"new_{name}": value for name, value in values.items()}
        return (await self._run(_insert(), {**params, "owner": self.owner_id, "max_tasks": max_tasks})).first()

    async def task_count(self) -> int | None:
        """How many tasks the owner holds; ``None`` when the owner has no user row."""
        count = (await self._run(_task_count(), {"owner": self.owner_id})).scalar_one_or_none()
        return None if count is None else int(count)

    async def update(
        self, task_id: UUID, fields: dict[str, Any], updated_at: datetime, versions: frozenset[int] | None
    ) -> TaskRow | None:
        """Set ``fields`` (column name to value) on the task; the task as written, or ``None`` if none was."""
        params: dict[str, Any] = {f"new_{name}": value for name, value in fields.items()}
        params.update(self._target(task_id, versions), updated_at=updated_at)
        return (await self._run(_update(frozenset(fields), versions is not None), params)).first()

    async def toggle(self, task_id: UUID, updated_at: datetime, versions: frozenset[int] | None) -> TaskRow | None:
        """Flip ``completed``; the task as written, or ``None`` if none was."""
        params = {**self._target(task_id, versions), "updated_at": updated_at}
        return (await self._run(_toggle(versions is not None), params)).first()

    async def remove(self, task_id: UUID, versions: frozenset[int] | None) -> bool:
        """Delete the task; whether a row went."""
        return (await self._run(_remove(versions is not None), self._target(task_id, versions))).first() is not None

    def _target(self, task_id: UUID, versions: frozenset[int] | None) -> dict[str, Any]:
        params: dict[str, Any] = {"owner": self.owner_id, "task_id": task_id}
        if versions is not None:
            params["versions"] = sorted(versions)
        return params
