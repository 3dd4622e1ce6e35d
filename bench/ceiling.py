"""The ceiling: the service's work with no framework and no ORM, to measure the service against.

A bare ASGI application that answers the same routes with the same SQL through a raw asyncpg pool, and
verifies tokens with the service's own :class:`~app.auth.tokens.TokenVerifier` (same keys, same checks, same
cache). List pages link their next page with the service's own signed cursors (same key, same codec), and
a cursor's page is read with the service's keyset statement. It skips what a framework adds — validation of
every input, problem details, rate limiting, security headers, audit logging — so it is an upper bound, not an
alternative: never deploy it.

    uvicorn bench.ceiling:app --workers N   (reads the same settings as the service: DATABASE_URL, JWT_*)
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from sqlalchemy.engine import make_url

from app.auth.tokens import InvalidTokenError, Principal, TokenVerifier
from app.config import load_settings
from app.errors import InvalidFieldError
from app.signing import KEY_BYTES
from app.tasks.cursor import CURSOR_KEY, Cursor, CursorCodec
from app.tasks.repository import TaskFilters
from app.tasks.schemas import (
    PRIORITIES,
    ChangeFeed,
    CompletionChange,
    TaskChange,
    TaskDeletion,
    TaskRead,
    TasksDeleted,
    TasksUpdated,
    TaskUpsert,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Rows = list[asyncpg.Record]

COLUMNS = "id, user_id, title, description, completed, created_at, updated_at, version"
#: What a task response shows: the columns written plus what the database's triggers and defaults fill in.
RETURNED = f"{COLUMNS}, revision, due_at, priority, position"
ORDER = {
    "created_at": "created_at ASC, id ASC",
    "-created_at": "created_at DESC, id DESC",
    "updated_at": "updated_at ASC, id ASC",
    "-updated_at": "updated_at DESC, id DESC",
    "title": "lower(title) ASC, id ASC",
    "-title": "lower(title) DESC, id DESC",
}
#: What a cursor records of a page's last task (with its id), for each sort: the sort's leading value.
SORT_KEYS = {"created_at": "created_at", "updated_at": "updated_at", "title": "lower(title)"}
#: The listing every cursor here is signed for: the ceiling takes no filters.
UNFILTERED = TaskFilters().listing()


def page_statement(sort: str) -> str:
    """The service's first (or ``OFFSET``) page: a deferred join, the page's ids from the index first, then their
    rows, each with its sort key and the owner's revision (for the next page's cursor). $1 owner, $2 limit,
    $3 offset."""
    order = ORDER[sort]
    columns = ", ".join(f"tasks.{c}" for c in RETURNED.split(", "))
    return (
        f"SELECT {columns}, {SORT_KEYS[sort.removeprefix('-')]} AS sort_key, "
        "(SELECT users.revision FROM users WHERE users.id = $1) AS owner_revision FROM tasks JOIN "
        f"(SELECT id FROM tasks WHERE user_id = $1 ORDER BY {order} LIMIT $2 OFFSET $3) AS page "
        f"ON tasks.id = page.id WHERE tasks.user_id = $1 ORDER BY {order}"
    )


def walk_statement(sort: str) -> str:
    """The service's page after a cursor (``app.tasks.repository._walk``), one statement and so one snapshot: part
    0, the tasks ahead of the cursor (keyset); part 1, those behind it changed after ``seen_through``; the owner's
    revision on every row. $1 owner, $2 and $3 the cursor's key and id, $4 limit, $5 seen_through."""
    order, key = ORDER[sort], SORT_KEYS[sort.removeprefix("-")]
    ahead, behind = ("<", ">=") if sort.startswith("-") else (">", "<=")
    columns = f"{RETURNED}, {key} AS sort_key"
    return (
        "SELECT users.revision AS owner_revision, parts.* FROM users LEFT JOIN ("
        f"(SELECT 0 AS part, {columns}, row_number() OVER (ORDER BY {order}) AS n FROM tasks "
        f"WHERE user_id = $1 AND ({key}, id) {ahead} ($2, $3) ORDER BY {order} LIMIT $4) UNION ALL "
        f"(SELECT 1 AS part, {columns}, row_number() OVER (ORDER BY revision) AS n FROM tasks "
        f"WHERE user_id = $1 AND revision > $5 AND ({key}, id) {behind} ($2, $3) ORDER BY revision LIMIT $4)"
        ") AS parts ON true WHERE users.id = $1 ORDER BY parts.part, parts.n"
    )


PAGES = {sort: page_statement(sort) for sort in ORDER}
WALKS = {sort: walk_statement(sort) for sort in ORDER}
#: The service's change feed (``app.tasks.repository._changes``): the owner's tasks changed after ``since``, and
#: its tombstones after it unless ``since`` is 0, as rows of one shape, oldest first, with the owner's revision
#: and ``purged_through`` from the same snapshot. A left join from the owner's row: an owner without changes
#: still gets one row, with a null ``op``. $1 owner, $2 since, $3 limit.
CHANGES = (
    "SELECT users.revision AS owner_revision, users.purged_through, changes.* FROM users LEFT JOIN ("
    f"SELECT 'upsert' AS op, {RETURNED}, NULL AS deleted_at FROM tasks WHERE user_id = $1 AND revision > $2 "
    "UNION ALL SELECT 'delete', task_id, user_id, NULL, NULL, NULL, NULL, NULL, NULL, revision, NULL, NULL, NULL, "
    "deleted_at FROM task_tombstones WHERE user_id = $1 AND revision > $2 AND $2 > 0"
    ") AS changes ON true WHERE users.id = $1 ORDER BY changes.revision LIMIT $3"
)
#: Every write of the service locks the owner's row before any task row (app/tasks/repository.py, _owner_locked);
#: the triggers then stamp each row's revision and tombstone.
OWNER_LOCKED = "EXISTS (SELECT users.id FROM users WHERE users.id = $1 FOR UPDATE)"
#: The service's create (``_insert``): inserted only while the owner, whose row it locks, is under the quota.
INSERT = (
    f"INSERT INTO tasks ({COLUMNS}) SELECT $2, users.id, $3, $4, $5, $6, $6, 1 FROM users "
    f"WHERE users.id = $1 AND users.task_count < $7 FOR UPDATE RETURNING {RETURNED}"
)
#: The service's single-task writes (``_update``, ``_toggle``, ``_remove``) and bulk ones (``_set_all_completed``,
#: ``_remove_completed``).
TOGGLE = (
    "UPDATE tasks SET completed = NOT completed, updated_at = $3, version = version + 1 "
    f"WHERE user_id = $1 AND {OWNER_LOCKED} AND id = $2 RETURNING {RETURNED}"
)
REMOVE = f"DELETE FROM tasks WHERE user_id = $1 AND {OWNER_LOCKED} AND id = $2 RETURNING id"
SET_ALL_COMPLETED = (
    "UPDATE tasks SET completed = $2, updated_at = $3, version = version + 1 WHERE user_id = $1 "
    f"AND {OWNER_LOCKED} AND completed != $2 RETURNING {RETURNED}"
)
REMOVE_COMPLETED = f"DELETE FROM tasks WHERE user_id = $1 AND {OWNER_LOCKED} AND completed = true RETURNING id"


class TaskIn(msgspec.Struct):
    title: str
    description: str | None = None
    completed: bool = False


class TaskChanges(msgspec.Struct):
    title: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType | None = msgspec.UNSET
    completed: bool | msgspec.UnsetType = msgspec.UNSET


encoder = msgspec.json.Encoder()


def task_out(row: asyncpg.Record) -> TaskRead:
    # The service's own response type: both targets send byte-for-byte the same body.
    return TaskRead(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        description=row["description"],
        completed=row["completed"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        revision=row["revision"],
        due_at=row["due_at"],
        priority=PRIORITIES[row["priority"]],
        position=row["position"],
    )


class Ceiling:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.verifier = TokenVerifier.from_settings(self.settings)
        self.pool: asyncpg.Pool | None = None
        self.provisioned: dict[Principal, float] = {}
        self.cursor_secret: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        status, body, headers = await self.handle(scope, receive)
        raw_headers = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in headers.items())]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                url = make_url(self.settings.database_url)
                self.pool = await asyncpg.create_pool(
                    host=url.host,
                    port=url.port or 5432,
                    user=url.username,
                    password=url.password,
                    database=url.database,
                    min_size=self.settings.database_pool_size,
                    max_size=self.settings.database_pool_size + self.settings.database_max_overflow,
                )
                if self.verifier.jwks is not None:
                    await self.verifier.jwks.refresh()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes, dict[str, str]]:
        parts = scope["path"].strip("/").split("/")
        if len(parts) < 3 or parts[0] != "api" or parts[2] != "tasks":
            return 404, b'{"status":404}', {}
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode()
        if not authorization.lower().startswith("bearer "):
            return 401, b'{"status":401}', {"www-authenticate": 'Bearer realm="todo-api"'}
        try:
            principal = await self.verifier.verify(authorization[7:].strip())
        except InvalidTokenError:
            return 401, b'{"status":401}', {"www-authenticate": 'Bearer error="invalid_token"'}
        if parts[1] != principal.id:
            return 403, b'{"status":403}', {}
        assert self.pool is not None
        async with self.pool.acquire() as connection:
            await self.provision(connection, principal)
            method = scope["method"]
            if len(parts) == 3:
                if method == "GET":
                    return await self.list(connection, principal.id, scope["query_string"])
                if method == "POST":
                    return await self.create(connection, principal.id, await read_body(receive))
                if method == "PATCH":
                    return await self.set_all_completed(connection, principal.id, await read_body(receive))
                if method == "DELETE":
                    return await self.delete_completed(connection, principal.id, scope["query_string"])
            if len(parts) == 4 and parts[3] == "changes" and method == "GET":
                return await self.changes(connection, principal.id, scope["query_string"])
            task_id = uuid.UUID(parts[3])
            if len(parts) == 4 and method == "GET":
                row = await connection.fetchrow(
                    f"SELECT {RETURNED} FROM tasks WHERE user_id = $1 AND id = $2", principal.id, task_id
                )
                return one(row)
            if len(parts) == 4 and method == "PUT":
                changes = msgspec.json.decode(await read_body(receive), type=TaskChanges)
                return await self.update(connection, principal.id, task_id, changes)
            if len(parts) == 4 and method == "DELETE":
                deleted = await connection.fetchval(REMOVE, principal.id, task_id)
                return (204, b"", {}) if deleted else (404, b'{"status":404}', {})
            if len(parts) == 5 and method == "PATCH":
                row = await connection.fetchrow(TOGGLE, principal.id, task_id, datetime.now(UTC))
                return one(row)
        return 405, b'{"status":405}', {}

    async def provision(self, connection: asyncpg.Connection, principal: Principal) -> None:
        now = time.monotonic()
        if self.provisioned.get(principal, 0) > now:
            return
        stamp = datetime.now(UTC)
        await connection.execute(
            "INSERT INTO users (id, email, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) "
            "ON CONFLICT (id) DO NOTHING",
            principal.id,
            principal.email,
            principal.name,
            stamp,
        )
        self.provisioned[principal] = now + 300

    async def list(self, connection: asyncpg.Connection, owner: str, query: bytes) -> tuple[int, bytes, dict[str, str]]:
        pairs = [pair.split("=", 1) for pair in query.decode().split("&") if "=" in pair]
        params = dict(pairs)
        limit, sort = int(params.get("limit", "1000")), params.get("sort", "-created_at")
        codec: CursorCodec | None = None
        cursor: Cursor | None = None
        if "cursor" in params:
            codec = await self.cursor_codec(connection, owner, sort)
            try:
                cursor = codec.decode(params["cursor"])
            except InvalidFieldError:
                return 422, b'{"status":422}', {}
        total = await connection.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", owner)
        headers = {"x-total-count": str(total)}
        if cursor is None:
            tasks, following = await self.page(connection, owner, sort, limit, int(params.get("offset", "0")), total)
        else:
            tasks, following = await self.walk(connection, owner, sort, limit, cursor)
        if following is not None:
            codec = codec or await self.cursor_codec(connection, owner, sort)
            kept = "".join(f"{name}={value}&" for name, value in pairs if name not in {"cursor", "offset"})
            headers["link"] = f'</api/{owner}/tasks?{kept}cursor={codec.encode(following)}>; rel="next"'
        return 200, encoder.encode([task_out(row) for row in tasks]), headers

    async def page(
        self, connection: asyncpg.Connection, owner: str, sort: str, limit: int, offset: int, total: int
    ) -> tuple[Rows, Cursor | None]:
        """As ``TaskRepository.page``: the first page, or one ``offset`` tasks in, and the cursor after it."""
        if total == 0 or offset >= total:
            return [], None
        rows = await connection.fetch(PAGES[sort], owner, limit + 1, offset)
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        return rows[:limit], Cursor(last["sort_key"], last["id"], last["owner_revision"], datetime.now(UTC))

    async def walk(
        self, connection: asyncpg.Connection, owner: str, sort: str, limit: int, cursor: Cursor
    ) -> tuple[Rows, Cursor | None]:
        """As ``TaskRepository.walk``: the page after ``cursor`` (changes behind it first) and the cursor after it."""
        rows = await connection.fetch(WALKS[sort], owner, cursor.key, cursor.task_id, limit + 1, cursor.seen_through)
        if not rows:
            return [], None
        revision = rows[0]["owner_revision"]
        ahead = [row for row in rows if row["part"] == 0]
        behind = [row for row in rows if row["part"] == 1]
        if len(behind) > limit:
            return behind[:limit], replace(cursor, seen_through=behind[limit - 1]["revision"])
        room = limit - len(behind)
        tasks = [*behind, *ahead[:room]]
        if len(ahead) <= room:
            return tasks, None
        if room == 0:
            return tasks, replace(cursor, seen_through=revision)
        last = ahead[room - 1]
        return tasks, Cursor(last["sort_key"], last["id"], revision, cursor.now)

    async def changes(
        self, connection: asyncpg.Connection, owner: str, query: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """As ``TaskService.changes``: up to ``limit`` changes after ``since``, and where the next page starts."""
        params = dict(pair.split("=", 1) for pair in query.decode().split("&") if "=" in pair)
        since, limit = int(params.get("since", "0")), int(params.get("limit", "1000"))
        rows = await connection.fetch(CHANGES, owner, since, limit + 1)
        if not rows:  # the owner's row is gone (never here: the ceiling provisions it): an empty account
            return 200, encoder.encode(ChangeFeed(changes=[], revision=0, has_more=False)), {}
        current, purged_through = rows[0]["owner_revision"], rows[0]["purged_through"]
        if since > current:
            return 422, b'{"status":422}', {}
        if 0 < since < purged_through:
            return 410, b'{"status":410}', {}
        changed = [row for row in rows if row["op"] is not None]
        has_more = len(changed) > limit
        changed = changed[:limit]
        revision = changed[-1]["revision"] if has_more else current
        changes = [change_out(row) for row in changed]
        if since == 0 and has_more and revision < purged_through:
            # As the service: a full sync finishes the live tasks up to purged_through in this page.
            through = await connection.fetch(
                f"SELECT {RETURNED} FROM tasks WHERE user_id = $1 AND revision > $2 AND revision <= $3 "
                "ORDER BY revision",
                owner,
                revision,
                purged_through,
            )
            changes += [TaskUpsert(revision=row["revision"], task=task_out(row)) for row in through]
            revision = purged_through
        return 200, encoder.encode(ChangeFeed(changes=changes, revision=revision, has_more=has_more)), {}

    async def set_all_completed(
        self, connection: asyncpg.Connection, owner: str, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """As ``TaskService.set_all_completed``: one statement, and the revision it reached, in one transaction."""
        data = msgspec.json.decode(body, type=CompletionChange)
        async with connection.transaction():
            updated = await connection.fetch(SET_ALL_COMPLETED, owner, data.completed, datetime.now(UTC))
            revision = await connection.fetchval("SELECT revision FROM users WHERE id = $1", owner)
        return 200, encoder.encode(TasksUpdated(updated=len(updated), revision=revision or 0)), {}

    async def delete_completed(
        self, connection: asyncpg.Connection, owner: str, query: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """As ``TaskService.delete_completed``: one statement, and the revision it reached, in one transaction."""
        if b"completed=true" not in query.split(b"&"):
            return 422, b'{"status":422}', {}
        async with connection.transaction():
            deleted = await connection.fetch(REMOVE_COMPLETED, owner)
            revision = await connection.fetchval("SELECT revision FROM users WHERE id = $1", owner)
        return 200, encoder.encode(TasksDeleted(deleted=len(deleted), revision=revision or 0)), {}

    async def cursor_codec(self, connection: asyncpg.Connection, owner: str, sort: str) -> CursorCodec:
        """The service's codec for this listing, with the service's key (read, or created, once per process)."""
        if self.cursor_secret is None:
            # As app/signing.py: the first to need the key creates it; everyone else reads the winner's.
            await connection.execute(
                "INSERT INTO signing_keys (name, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                CURSOR_KEY,
                secrets.token_bytes(KEY_BYTES),
                datetime.now(UTC),
            )
            secret = await connection.fetchval("SELECT secret FROM signing_keys WHERE name = $1", CURSOR_KEY)
            self.cursor_secret = bytes(secret)
        return CursorCodec(self.cursor_secret, owner_id=owner, sort=sort, listing=UNFILTERED)

    async def create(
        self, connection: asyncpg.Connection, owner: str, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        data = msgspec.json.decode(body, type=TaskIn)
        now = datetime.now(UTC)
        row = await connection.fetchrow(
            INSERT,
            owner,
            uuid.uuid4(),
            data.title,
            data.description,
            data.completed,
            now,
            self.settings.max_tasks_per_user,
        )
        if row is None:
            return 409, b'{"status":409}', {}
        status, payload, headers = one(row)
        headers["location"] = f"/api/{owner}/tasks/{row['id']}"
        return 201, payload, headers

    async def update(
        self, connection: asyncpg.Connection, owner: str, task_id: uuid.UUID, changes: TaskChanges
    ) -> tuple[int, bytes, dict[str, str]]:
        values = {k: getattr(changes, k) for k in changes.__struct_fields__ if getattr(changes, k) is not msgspec.UNSET}
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(values, start=4))
        row = await connection.fetchrow(
            f"UPDATE tasks SET {assignments}{', ' if values else ''}updated_at = $3, version = version + 1 "
            f"WHERE user_id = $1 AND {OWNER_LOCKED} AND id = $2 RETURNING {RETURNED}",
            owner,
            task_id,
            datetime.now(UTC),
            *values.values(),
        )
        return one(row)


def change_out(row: asyncpg.Record) -> TaskChange:
    """A change feed row as the service's change: a tombstone, or the task in its latest state."""
    if row["op"] == "delete":
        return TaskDeletion(revision=row["revision"], id=row["id"], deleted_at=row["deleted_at"])
    return TaskUpsert(revision=row["revision"], task=task_out(row))


def one(row: asyncpg.Record | None) -> tuple[int, bytes, dict[str, str]]:
    if row is None:
        return 404, b'{"status":404}', {}
    return 200, encoder.encode(task_out(row)), {"etag": f'"{row["version"]}"'}


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


app = Ceiling()
