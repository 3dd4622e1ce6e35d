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

Revisions (the change feed's order) are stamped by triggers (migration 0004), which lock the owner's row. Every
write therefore locks that row *first*, before any task row (the ``EXISTS (… FOR UPDATE)`` below runs as a
one-time filter ahead of the scan): with one lock order for all writes, a bulk statement and a single-task write
of one user queue behind each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final, cast
from uuid import UUID

import msgspec
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Executable,
    Result,
    Row,
    Select,
    String,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    not_,
    null,
    or_,
    select,
    true,
    tuple_,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate
from sqlalchemy.sql.functions import FunctionElement

from app.db import transaction
from app.models import Task, TaskTombstone, User
from app.tasks.cursor import Cursor
from app.tasks.ordering import GAP, INTEGER_DIGITS

__all__ = ("ChangeRow", "Page", "TaskFilters", "TaskRepository", "TaskRow", "escape_like")

TaskRow = Row[Any]
"""A task as its columns: ``id, user_id, title, description, completed, created_at, updated_at, version, revision``."""
ChangeRow = Row[Any]
"""A change feed row: ``op`` (``upsert``/``delete``), the task's columns (only ``id`` for a delete), ``deleted_at``."""

_TABLE = cast("Table", Task.__table__)
_USERS = cast("Table", User.__table__)
_TOMBSTONES = cast("Table", TaskTombstone.__table__)
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
    "position": (_C.position.asc(), _C.id.asc()),
    # Tasks without a due date last in both directions (NULLS LAST, spelt so that SQLite understands it too).
    "due_at": (_C.due_at.is_(None).asc(), _C.due_at.asc(), _C.id.asc()),
    "-due_at": (_C.due_at.is_(None).asc(), _C.due_at.desc(), _C.id.desc()),
    "priority": (_C.priority.asc(), _C.id.asc()),
    "-priority": (_C.priority.desc(), _C.id.desc()),
}

#: What a cursor records of a page's last task (with its id) for each sort: the sort's leading value.
_SORT_KEYS: dict[str, ColumnElement[Any]] = {
    "created_at": _C.created_at,
    "updated_at": _C.updated_at,
    "title": func.lower(_C.title),
    "position": _C.position,
    "due_at": _C.due_at,
    "priority": _C.priority,
}


def escape_like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (``%`` and ``_`` are not wildcards in a search)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _owned(*criteria: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    return (_C.user_id == _OWNER, *criteria)


def _owner_locked() -> ColumnElement[bool]:
    """Lock the owner's row before any task row (see the module docstring); SQLite has no row locks to order."""
    return select(_USERS.c.id).where(_USERS.c.id == _OWNER).with_for_update().exists()


@cache
def _find() -> Select[Any]:
    return select(*_C).where(*_owned(_C.id == _ID))


@dataclass(frozen=True, kw_only=True)
class TaskFilters:
    """What a listing is narrowed to; ``None`` (or ``False``) leaves a filter out. They combine with AND."""

    completed: bool | None = None
    search: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    #: Due in the past (as of the listing's ``now``) and not completed.
    overdue: bool = False
    #: A priority's rank (0 none … 3 high).
    priority: int | None = None

    def shape(self) -> tuple[bool, ...]:
        """Which filters are present: listings of one shape share one prebuilt statement."""
        return (
            self.completed is not None,
            bool(self.search),
            self.due_before is not None,
            self.due_after is not None,
            self.overdue,
            self.priority is not None,
        )

    def listing(self) -> bytes:
        """The filters in one canonical form: what a cursor is signed for, besides the owner and the sort."""
        moments = [None if moment is None else moment.astimezone(UTC) for moment in (self.due_before, self.due_after)]
        return msgspec.json.encode([self.completed, self.search or None, *moments, self.overdue, self.priority])

    def params(self, now: datetime) -> dict[str, Any]:
        """The bind parameters of this listing's statement."""
        params: dict[str, Any] = {}
        if self.completed is not None:
            params["completed"] = self.completed
        if self.search:
            params["pattern"] = f"%{escape_like(self.search)}%"
        if self.due_before is not None:
            params["due_before"] = self.due_before
        if self.due_after is not None:
            params["due_after"] = self.due_after
        if self.overdue:
            params["now"] = now
        if self.priority is not None:
            params["priority"] = self.priority
        return params


def _criteria(shape: tuple[bool, ...]) -> list[ColumnElement[bool]]:
    """The owner's tasks narrowed by the filters present in ``shape`` (see :meth:`TaskFilters.shape`)."""
    completed, search, due_before, due_after, overdue, priority = shape
    criteria = list(_owned())
    if completed:
        criteria.append(_C.completed == bindparam("completed"))
    if search:
        pattern: BindParameter[str] = bindparam("pattern")
        criteria.append(or_(_C.title.ilike(pattern, escape="\\"), _C.description.ilike(pattern, escape="\\")))
    if due_before:
        criteria.append(_C.due_at < bindparam("due_before", type_=_C.due_at.type))
    if due_after:
        criteria.append(_C.due_at > bindparam("due_after", type_=_C.due_at.type))
    if overdue:
        criteria += [_C.due_at < bindparam("now", type_=_C.due_at.type), _C.completed == false()]
    if priority:
        criteria.append(_C.priority == bindparam("priority", type_=_C.priority.type))
    return criteria


def _sort_key(sort: str) -> ColumnElement[Any]:
    return _SORT_KEYS[sort.removeprefix("-")].label("sort_key")


def _owner_revision_now() -> ColumnElement[Any]:
    # Uncorrelated: both databases evaluate it once per statement, in the statement's own snapshot.
    return select(_USERS.c.revision).where(_USERS.c.id == _OWNER).scalar_subquery().label("owner_revision")


def _after_cursor(sort: str, key_is_null: bool) -> ColumnElement[bool]:
    """The tasks after the cursor's ``(:after_key, :after_id)`` in the sort's order."""
    key_column = _SORT_KEYS[sort.removeprefix("-")]
    key = bindparam("after_key", type_=key_column.type)
    task: BindParameter[UUID] = bindparam("after_id", type_=_C.id.type)
    ascending = not sort.startswith("-")

    def beyond(left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[bool]:
        return left > right if ascending else left < right

    if sort.removeprefix("-") != "due_at":
        return beyond(tuple_(key_column, _C.id), tuple_(key, task))
    # Undated tasks come last in both directions: after a dated cursor come the later dated ones, then all
    # undated ones; after an undated cursor, only the undated ones past its id.
    if key_is_null:
        return and_(_C.due_at.is_(None), beyond(_C.id, task))
    return or_(_C.due_at.is_(None), beyond(tuple_(key_column, _C.id), tuple_(key, task)))


@cache
def _page(shape: tuple[bool, ...], sort: str) -> tuple[Select[Any], Select[Any]]:
    """The count and the first page (or an ``OFFSET`` page) of a listing with these filters (each shape built once).

    The page is a deferred join: the ids of the page are found first, from the ``(user_id, <sort>, id)``
    index alone, then only those rows are read. A plain ``OFFSET 9950`` would read 9 950 rows from the table
    to throw them away; this skips them inside the index (docs/benchmarks.md has the figures). Each row carries
    its sort key and the owner's revision, for the cursor of the next page.
    """
    criteria = _criteria(shape)
    count = select(func.count()).select_from(_TABLE).where(*criteria)
    ids = (
        select(_C.id)
        .where(*criteria)
        .order_by(*_ORDERINGS[sort])
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
        .subquery("page")
    )
    page = (
        select(*_C, _sort_key(sort), _owner_revision_now())
        .join_from(_TABLE, ids, _C.id == ids.c.id)
        .where(*_owned())
        .order_by(*_ORDERINGS[sort])
    )
    return count, page


@cache
def _walk(shape: tuple[bool, ...], sort: str, key_is_null: bool) -> Select[Any]:
    """A cursor's next page (see :meth:`TaskRepository.walk`), in two parts read in one statement, and so one
    snapshot, with the owner's revision: ``part`` 0, the tasks *ahead* of the cursor in the sort's order (keyset:
    from the index, as cheap on the last page as on the first); ``part`` 1, the tasks *behind* it changed after
    ``:seen_through``, in the order they changed. ``n`` numbers each part's rows in its order.

    A left join from the owner's row, as in :func:`_changes`: the revision comes even when both parts are empty.
    """
    criteria = _criteria(shape)
    after = _after_cursor(sort, key_is_null)
    limit: BindParameter[int] = bindparam("limit")
    in_order = func.row_number().over(order_by=_ORDERINGS[sort]).label("n")
    ahead = (
        select(literal(0).label("part"), *_C, _sort_key(sort), in_order)
        .where(*criteria, after)
        .order_by(*_ORDERINGS[sort])
        .limit(limit)
        .subquery("ahead")
    )
    changed_after = _C.revision > bindparam("seen_through", type_=_C.revision.type)
    behind = (
        select(literal(1).label("part"), *_C, _sort_key(sort), func.row_number().over(order_by=_C.revision).label("n"))
        .where(*criteria, changed_after, not_(after))
        .order_by(_C.revision)
        .limit(limit)
        .subquery("behind")
    )
    parts = union_all(select(*ahead.c), select(*behind.c)).subquery("parts")
    return (
        select(_USERS.c.revision.label("owner_revision"), *parts.c)
        .select_from(_USERS.outerjoin(parts, true()))
        .where(_USERS.c.id == _OWNER)
        .order_by(parts.c.part, parts.c.n)
    )


@cache
def _changes() -> Select[Any]:
    """The owner's changes after ``:since`` (tombstones only when ``:since`` > 0), oldest first, with the
    owner's revision and ``purged_through`` on every row, all read in one statement and so one snapshot.

    A left join from the owner's row, so an owner without changes still gets one row (with a null ``op``).
    """
    since: BindParameter[int] = bindparam("since", type_=_C.revision.type)
    tombstone = _TOMBSTONES.c
    # Typed, so that each backend's result processing (SQLite's text timestamps) applies to the union's column.
    no_deletion = type_coerce(null(), tombstone.deleted_at.type).label("deleted_at")
    upserts = select(literal("upsert").label("op"), *_C, no_deletion).where(*_owned(_C.revision > since))
    # A tombstone in the shape of a task row: its id, owner and revision, every other column null.
    kept = {"id": tombstone.task_id, "user_id": tombstone.user_id, "revision": tombstone.revision}
    deletes = select(
        literal("delete"),
        *(kept.get(column.name, null()) for column in _C),
        tombstone.deleted_at,
    ).where(tombstone.user_id == _OWNER, tombstone.revision > since, since > 0)
    changes = union_all(upserts, deletes).subquery("changes")
    return (
        select(_USERS.c.revision.label("owner_revision"), _USERS.c.purged_through, *changes.c)
        .select_from(_USERS.outerjoin(changes, true()))
        .where(_USERS.c.id == _OWNER)
        .order_by(changes.c.revision)
        .limit(bindparam("limit"))
    )


@cache
def _live_through() -> Select[Any]:
    """The owner's live tasks with a revision in ``(:since, :through]``, oldest first."""
    return (
        select(*_C)
        .where(*_owned(_C.revision > bindparam("since"), _C.revision <= bindparam("through")))
        .order_by(_C.revision)
    )


#: The columns a create names, in the order of the values selected for them below.
_INSERTED = (
    "id",
    "user_id",
    "title",
    "description",
    "completed",
    "created_at",
    "updated_at",
    "version",
    "due_at",
    "priority",
    "position",
)


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
    """The owner's task ``:task_id``, at one of ``:versions`` when the write is conditional; owner row first."""
    return _owned(_owner_locked(), _C.id == _ID, *criteria, *([_C.version.in_(_VERSIONS)] if conditional else []))


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


@cache
def _set_all_completed() -> ReturningUpdate[Any]:
    """Set ``completed`` on every task of the owner that differs: a task already so is not a change."""
    value: BindParameter[bool] = bindparam("completed", type_=_C.completed.type)
    return _bumped(update(_TABLE).where(*_owned(_owner_locked(), _C.completed != value)).values(completed=value))


@cache
def _remove_completed() -> ReturningDelete[Any]:
    return delete(_TABLE).where(*_owned(_owner_locked(), _C.completed == true())).returning(_C.id)


class _Padded(FunctionElement[str]):
    """An integer as an order key's integer part: 18 digits, zero-padded (app/tasks/ordering.py)."""

    type = String()
    inherit_cache = True


@compiles(_Padded, "postgresql")
def _padded_postgresql(element: _Padded, compiler: Any, **kw: Any) -> str:
    return f"lpad(CAST({compiler.process(element.clauses, **kw)} AS text), {INTEGER_DIGITS}, '0')"


@compiles(_Padded, "sqlite")
def _padded_sqlite(element: _Padded, compiler: Any, **kw: Any) -> str:
    return f"printf('%0{INTEGER_DIGITS}d', {compiler.process(element.clauses, **kw)})"


@cache
def _owner_locked_first() -> ReturningUpdate[Any]:
    # An UPDATE that changes nothing, not SELECT … FOR UPDATE: SQLite has no row locks, and its driver begins the
    # transaction (taking the write lock) only at the first write; an UPDATE locks on both backends.
    return (
        update(_USERS)
        .where(_USERS.c.id == _OWNER)
        .values(first_position=_USERS.c.first_position)
        .returning(_USERS.c.first_position)
    )


@cache
def _set_first() -> Update:
    return update(_USERS).where(_USERS.c.id == _OWNER).values(first_position=bindparam("first"))


@cache
def _following() -> Select[Any]:
    """The position right after ``:position`` in the owner's order, leaving out the task being moved."""
    return (
        select(_C.position)
        .where(*_owned(_C.position > bindparam("position"), _C.id != _ID))
        .order_by(_C.position)
        .limit(1)
    )


@cache
def _place() -> ReturningUpdate[Any]:
    return _bumped(update(_TABLE).where(*_owned(_C.id == _ID)).values(position=bindparam("new_position")))


@cache
def _spread() -> Update:
    """Every task of the owner a GAP apart from ``:base`` up, in their order, as a change each (new version and
    revision: replicas sort by position too). ``:base`` lies below every key in use, so no two keys ever meet."""
    ranked = (
        select(_C.id, func.row_number().over(order_by=(_C.position, _C.id)).label("n"))
        .where(*_owned())
        .subquery("ranked")
    )
    return (
        update(_TABLE)
        .where(_C.id == ranked.c.id)
        .values(
            position=_Padded(bindparam("base") + ranked.c.n * GAP),
            version=_C.version + 1,
            updated_at=bindparam("updated_at", type_=_C.updated_at.type),
        )
    )


@cache
def _export_batch(first: bool) -> Select[Any]:
    """The owner's tasks oldest first, after ``(:after_created, :after_id)`` unless ``first``: ``created_at`` never
    changes, so batches read one after another meet each task once."""
    after = tuple_(_C.created_at, _C.id) > tuple_(
        bindparam("after_created", type_=_C.created_at.type), bindparam("after_id", type_=_C.id.type)
    )
    return (
        select(*_C).where(*_owned(*([] if first else [after]))).order_by(_C.created_at, _C.id).limit(bindparam("limit"))
    )


@cache
def _owner_revision() -> Select[Any]:
    return select(_USERS.c.revision).where(_USERS.c.id == _OWNER)


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a listing."""

    tasks: Sequence[TaskRow]
    #: The tasks matching the filters, all pages together.
    total: int
    #: Where the next page starts; ``None`` when this page ends the listing.
    next: Cursor | None


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

    async def _write(self, statement: Executable, params: dict[str, Any]) -> TaskRow | None:
        """Run a single-task write; the row as written, with the revision its trigger stamped.

        PostgreSQL's triggers set the revision before the row is written, so ``RETURNING`` shows it. SQLite's
        can only stamp the row after the fact, and its ``RETURNING`` reports the row as first written: there the
        row is read again, in one transaction with the write so that no other write comes between.
        """
        if self._dialect() != "sqlite":
            return (await self._run(statement, params)).first()
        async with transaction(self.session):
            task = (await self._run(statement, params)).first()
            return None if task is None else await self.find(task.id)

    def _dialect(self) -> str:
        bind = self.session.bind
        return "" if bind is None else bind.dialect.name

    async def changes(self, since: int, limit: int) -> tuple[Sequence[ChangeRow], int, int]:
        """Up to ``limit`` changes after revision ``since`` (plus one, to tell whether more follow), oldest
        first; with the owner's revision and ``purged_through`` from the same snapshot."""
        rows = (await self._run(_changes(), {"owner": self.owner_id, "since": since, "limit": limit + 1})).all()
        if not rows:
            raise LookupError(self.owner_id)
        owner_revision, purged_through = int(rows[0].owner_revision), int(rows[0].purged_through)
        return [row for row in rows if row.op is not None], owner_revision, purged_through

    async def live_through(self, since: int, through: int) -> Sequence[TaskRow]:
        """The owner's live tasks with a revision after ``since`` and at most ``through``, oldest first."""
        return (await self._run(_live_through(), {"owner": self.owner_id, "since": since, "through": through})).all()

    async def page(self, filters: TaskFilters, *, sort: str, limit: int, offset: int, now: datetime) -> Page:
        """The first page of a listing, or one ``offset`` tasks in (``now``: what "overdue" means)."""
        count, page = _page(filters.shape(), sort)
        params: dict[str, Any] = {"owner": self.owner_id, "limit": limit + 1, "offset": offset, **filters.params(now)}
        total = int((await self._run(count, params)).scalar_one())
        if total == 0 or offset >= total:
            return Page([], total, None)
        tasks = (await self._run(page, params)).all()
        if len(tasks) <= limit:
            return Page(tasks, total, None)
        last = tasks[limit - 1]
        return Page(tasks[:limit], total, Cursor(last.sort_key, last.id, int(last.owner_revision), now))

    async def walk(self, filters: TaskFilters, *, sort: str, limit: int, cursor: Cursor) -> Page:
        """The page after ``cursor``.

        Ahead of the cursor the walk is keyset pagination: the next tasks in the sort's order after the cursor's
        key and id. On its own that would miss a task whose sort key changed to one behind the cursor before the
        walk reached it (and meet twice one moved the other way). So each page starts with the tasks behind the
        cursor that changed after ``cursor.seen_through``, in the order they changed. A task that exists
        throughout a walk is never missed; one met again has changed since it was returned (this is its newer
        state); a task unchanged during the walk comes exactly once, in order.

        Both parts and the owner's revision come from one statement, so one snapshot: the next cursor's
        ``seen_through`` is that revision, and every change after it is a later page's.
        """
        params: dict[str, Any] = {
            "owner": self.owner_id,
            "limit": limit + 1,
            "after_key": cursor.key,
            "after_id": cursor.task_id,
            "seen_through": cursor.seen_through,
            **filters.params(cursor.now),
        }
        total = int((await self._run(_page(filters.shape(), sort)[0], params)).scalar_one())
        rows = (await self._run(_walk(filters.shape(), sort, cursor.key is None), params)).all()
        if not rows:  # the owner's row is gone, and their tasks with it
            return Page([], total, None)
        revision = int(rows[0].owner_revision)
        ahead = [row for row in rows if row.part == 0]
        behind = [row for row in rows if row.part == 1]
        if len(behind) > limit:
            # More changed behind the cursor than a page holds: the page is the oldest of them; the cursor stays.
            return Page(behind[:limit], total, replace(cursor, seen_through=int(behind[limit - 1].revision)))
        room = limit - len(behind)
        tasks = [*behind, *ahead[:room]]
        if len(ahead) <= room:
            return Page(tasks, total, None)
        if room == 0:
            return Page(tasks, total, replace(cursor, seen_through=revision))
        last = ahead[room - 1]
        return Page(tasks, total, Cursor(last.sort_key, last.id, revision, cursor.now))

    async def exported(self, after: TaskRow | None, limit: int) -> Sequence[TaskRow]:
        """Up to ``limit`` of the owner's tasks, oldest first, from the one after ``after`` (``None``: the oldest)."""
        params: dict[str, Any] = {"owner": self.owner_id, "limit": limit}
        if after is not None:
            params.update(after_created=after.created_at, after_id=after.id)
        return (await self._run(_export_batch(after is None), params)).all()

    async def insert(self, values: dict[str, Any], max_tasks: int) -> TaskRow | None:
        """Insert one of the owner's tasks (``values`` names every column but ``user_id``) and return it;
        ``None`` when nothing was inserted (see :meth:`task_count` for why)."""
        params = {f"new_{name}": value for name, value in values.items()}
        return await self._write(_insert(), {**params, "owner": self.owner_id, "max_tasks": max_tasks})

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
        return await self._write(_update(frozenset(fields), versions is not None), params)

    async def toggle(self, task_id: UUID, updated_at: datetime, versions: frozenset[int] | None) -> TaskRow | None:
        """Flip ``completed``; the task as written, or ``None`` if none was."""
        params = {**self._target(task_id, versions), "updated_at": updated_at}
        return await self._write(_toggle(versions is not None), params)

    async def remove(self, task_id: UUID, versions: frozenset[int] | None) -> bool:
        """Delete the task; whether a row went."""
        return (await self._run(_remove(versions is not None), self._target(task_id, versions))).first() is not None

    async def set_all_completed(self, completed: bool, updated_at: datetime) -> int:
        """Set ``completed`` on each of the owner's tasks not already so, in one statement; how many changed.
        Call inside a transaction: :meth:`revision` after it reads the revision the last of them took."""
        params = {"owner": self.owner_id, "completed": completed, "updated_at": updated_at}
        return len((await self._run(_set_all_completed(), params)).all())

    async def remove_completed(self) -> int:
        """Delete the owner's completed tasks in one statement; how many went (see :meth:`set_all_completed`)."""
        return len((await self._run(_remove_completed(), {"owner": self.owner_id})).all())

    async def lock_order(self) -> int | None:
        """Lock the owner's row (every write's first lock) and return the integer part of its first position;
        ``None`` when the owner has no row (then they have no tasks either)."""
        first = (await self._run(_owner_locked_first(), {"owner": self.owner_id})).scalar_one_or_none()
        return None if first is None else int(first)

    async def set_first(self, first: int) -> None:
        await self._run(_set_first(), {"owner": self.owner_id, "first": first})

    async def following(self, position: str, moving: UUID) -> str | None:
        """The position after ``position`` in the owner's order, not counting the task ``moving``."""
        params = {"owner": self.owner_id, "position": position, "task_id": moving}
        return cast("str | None", (await self._run(_following(), params)).scalar_one_or_none())

    async def place(self, task_id: UUID, position: str, updated_at: datetime) -> TaskRow | None:
        """Give the task ``position``: one row written."""
        params = {"owner": self.owner_id, "task_id": task_id, "new_position": position, "updated_at": updated_at}
        return await self._write(_place(), params)

    async def spread(self, below: int, count: int, updated_at: datetime) -> int:
        """Spread the owner's ``count`` tasks a GAP apart, all below ``below``; the new first integer part."""
        base = below - (count + 1) * GAP
        await self._run(_spread(), {"owner": self.owner_id, "base": base, "updated_at": updated_at})
        return base + GAP

    async def revision(self) -> int:
        """The owner's current revision (0 if their row is gone: erased meanwhile, and their tasks with it)."""
        return int((await self._run(_owner_revision(), {"owner": self.owner_id})).scalar_one_or_none() or 0)

    def _target(self, task_id: UUID, versions: frozenset[int] | None) -> dict[str, Any]:
        params: dict[str, Any] = {"owner": self.owner_id, "task_id": task_id}
        if versions is not None:
            params["versions"] = sorted(versions)
        return params
