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
from app.tasks.schemas import PRIORITIES, TaskRead

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
                deleted = await connection.fetchval(
                    "DELETE FROM tasks WHERE user_id = $1 AND id = $2 RETURNING id", principal.id, task_id
                )
                return (204, b"", {}) if deleted else (404, b'{"status":404}', {})
            if len(parts) == 5 and method == "PATCH":
                row = await connection.fetchrow(
                    "UPDATE tasks SET completed = NOT completed, updated_at = $3, version = version + 1 "
                    f"WHERE user_id = $1 AND id = $2 RETURNING {RETURNED}",
                    principal.id,
                    task_id,
                    datetime.now(UTC),
                )
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
            f"INSERT INTO tasks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6, 1) RETURNING {RETURNED}",
            uuid.uuid4(),
            owner,
            data.title,
            data.description,
            data.completed,
            now,
        )
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
            f"WHERE user_id = $1 AND id = $2 RETURNING {RETURNED}",
            owner,
            task_id,
            datetime.now(UTC),
            *values.values(),
        )
        return one(row)


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
