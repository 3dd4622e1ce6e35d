"""Task rows, scoped to one owner by construction.

:class:`TaskRepository` is Advanced Alchemy's repository for :class:`~app.models.Task`, built for one owner:
its base statement filters on ``user_id``, and so does every statement of its own below.

Those statements are the request paths, and they differ from the generic repository methods on purpose
(measured in docs/benchmarks.md):

- they are built once per shape, with bind parameters, so a request pays neither for building SQLAlchemy
  expressions nor for generating their cache keys;
- they return rows, not ORM objects: identity-map bookkeeping and object construction cost more than the
  query itself for a page of tasks, and nothing here needs a unit of work;
- each write is a single statement (``UPDATE … RETURNING``, ``DELETE … RETURNING``, ``INSERT … RETURNING``),
  atomic on its own, so the engine runs in autocommit and no request spends round trips on BEGIN/COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Final, cast
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Executable,
    Result,
    Row,
    Select,
    Table,
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

__all__ = ("TOGGLE", "TaskRepository", "TaskRow", "escape_like")

TaskRow = Row[Any]
"""A task as its columns: ``id, user_id, title, description, completed, created_at, updated_at, version``."""

_TABLE = cast("Table", Task.__table__)
_USERS = cast("Table", User.__table__)
_C = _TABLE.c
_OWNER: Final = bindparam("owner", type_=_C.user_id.type)
_ID: Final = bindparam("task_id", type_=_C.id.type)
_VERSIONS: Final = bindparam("versions", expanding=True, type_=_C.version.type)
#: What Advanced Alchemy's ``__init__`` would build per repository (``select(Task)``); handed in ready-made.
_UNSCOPED: Final = select(Task)
TOGGLE: Final = object()
"""A value for ``completed`` that flips it in the database."""

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


@cache
def _change(fields: frozenset[str], toggle: bool, conditional: bool) -> ReturningUpdate[Any]:
    values: dict[str, Any] = {name: bindparam(f"new_{name}", type_=_C[name].type) for name in fields}
    if toggle:
        values["completed"] = ~_C.completed
    criteria = _owned(_C.id == _ID, *([_C.version.in_(_VERSIONS)] if conditional else []))
    return (
        update(_TABLE)
        .where(*criteria)
        .values(**values, updated_at=bindparam("updated_at", type_=_C.updated_at.type), version=_C.version + 1)
        .returning(*_C)
    )


@cache
def _remove(conditional: bool) -> ReturningDelete[Any]:
    criteria = _owned(_C.id == _ID, *([_C.version.in_(_VERSIONS)] if conditional else []))
    return delete(_TABLE).where(*criteria).returning(_C.id)


class TaskRepository(SQLAlchemyAsyncRepository[Task]):
    """Advanced Alchemy repository for one owner's :class:`Task` rows."""

    model_type = Task

    def __init__(self, *, session: AsyncSession, owner_id: str, **kwargs: Any) -> None:
        self.owner_id = owner_id
        self._statement: Select[tuple[Task]] | None = None
        super().__init__(session=session, statement=_UNSCOPED, **kwargs)

    @property
    def statement(self) -> Select[tuple[Task]]:
        """The owner-scoped base statement of the inherited repository methods.

        Built on first use: the request paths below never need it, and building it costs a fifth of a GET.
        """
        if self._statement is None:
            self._statement = select(Task).where(Task.user_id == self.owner_id)
        return self._statement

    @statement.setter
    def statement(self, value: Select[tuple[Task]]) -> None:
        # Advanced Alchemy assigns the statement it was given in __init__ (unscoped); only a scoped one is kept.
        if value is not _UNSCOPED:
            self._statement = value

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

    async def change(self, task_id: UUID, values: dict[str, Any], versions: frozenset[int] | None) -> TaskRow | None:
        """Set ``values`` (``completed=TOGGLE`` flips it) and bump the version, only at ``versions`` if given."""
        toggle = values.get("completed") is TOGGLE
        fields = frozenset(name for name in values if name != "updated_at" and not (toggle and name == "completed"))
        statement = _change(fields, toggle, versions is not None)
        params: dict[str, Any] = {f"new_{name}": values[name] for name in fields}
        params.update(owner=self.owner_id, task_id=task_id, updated_at=values["updated_at"])
        if versions is not None:
            params["versions"] = sorted(versions)
        return (await self._run(statement, params)).first()

    async def remove(self, task_id: UUID, versions: frozenset[int] | None) -> bool:
        """Delete the owner's task with this id (only at ``versions`` if given); whether a row went."""
        params: dict[str, Any] = {"owner": self.owner_id, "task_id": task_id}
        if versions is not None:
            params["versions"] = sorted(versions)
        return (await self._run(_remove(versions is not None), params)).first() is not None
