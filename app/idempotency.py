"""Safe retries of writes: the ``Idempotency-Key`` request header (draft-ietf-httpapi-idempotency-key-header).

A client that lost the response to a write (a timeout, a dropped connection, a crash on either side) sends the
same request again with the same key and gets the first response back instead of a second write. Each write
handler hands its work to :meth:`Idempotency.respond`, which runs it in one transaction with the key's row:

1. insert the key's row, a placeholder no one else can see until it commits, with the owner's row locked first.
   Every write locks the owner's row before anything else (app/tasks/repository.py), and a row that references
   it share-locks it: two keyed writes of one user inserting their keys first would each hold a share lock that
   the other's write then waits on, a deadlock (PostgreSQL found them at once under tests/test_idempotency.py);
2. run the write, and store its response (status, headers, body) in the row;
3. commit: the write and its response are durable together or not at all, so no crash can leave one without
   the other. A write that fails (404, 409, 412) rolls its key back with it, and a retry is processed afresh.

A retry that arrives while the first request is in flight waits behind its locks, then finds the committed row
and replays it (``Idempotent-Replayed: true``); if the first rolled back, the retry's insert succeeds and it is
processed. The wait is bounded inside the statement timeout (PostgreSQL's ``lock_timeout``, SQLite's busy
timeout), so a key held too long is answered 409, not 503. A live key whose request differs (method, path,
query or body, by fingerprint) is refused with 422. Keys expire after IDEMPOTENCY_KEY_RETENTION_HOURS: an
expired row counts as absent (a new request takes it over) until :func:`purge_expired_keys` removes it.

Requests without the header take none of this: no transaction and no statement beyond the handler's own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Annotated, Any, Final, NamedTuple, TypeVar, cast

from litestar import Request, Response
from litestar.enums import MediaType
from litestar.params import HeaderParameter
from sqlalchemy import BindParameter, Delete, Select, Table, Update, bindparam, delete, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from app.db import commit, transaction
from app.errors import DomainError, InvalidFieldError
from app.models import IdempotencyKey, User, utcnow
from app.observability.metrics import IDEMPOTENT_REPLAYS

__all__ = (
    "IDEMPOTENCY_KEY_HEADER",
    "KEY_PATTERN",
    "REPLAYED_HEADER",
    "Idempotency",
    "IdempotencyKeyHeader",
    "IdempotencyKeyInFlightError",
    "IdempotencyKeyReusedError",
    "IdempotencyStore",
    "KeyHolder",
    "StoredResponse",
    "fingerprint_of",
    "parse_key",
    "purge_expired_keys",
)

T = TypeVar("T")

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
#: The header as it arrives: a structured-field string (``"…"``, the draft's form, ``\"`` and ``\\`` escaped)
#: of 1-255 printable ASCII characters, or those characters bare. A bare key cannot begin with ``"`` (it would
#: be read as a string) nor begin or end with a space (HTTP strips them); quote such a key. The documented
#: schema and :func:`parse_key` use this one pattern, so the OpenAPI document and the service cannot disagree.
KEY_PATTERN = (
    r'^(?:"(?:[\x20\x21\x23-\x5B\x5D-\x7E]|\\["\\]){1,255}"'  # quoted: 1-255 characters once unescaped
    r"|[\x21\x23-\x7E](?:[\x20-\x7E]{0,253}[\x21-\x7E])?)$"  # bare: 1-255 characters
)
_KEY = re.compile(KEY_PATTERN)
_ESCAPE = re.compile(r'\\(["\\])')
#: The status of a row whose request is still in flight. Never committed (the row is completed in the same
#: transaction), so no one else should ever read it; if someone does, the key is in flight.
_PENDING = 0
#: How much of the statement timeout a retry may spend waiting for the request holding its key.
_LOCK_WAIT_SHARE = 0.75

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name=IDEMPOTENCY_KEY_HEADER,
        description=(
            "Makes a retry safe: the first request with a key is processed and its response kept for "
            "IDEMPOTENCY_KEY_RETENTION_HOURS (24 h); the same request again with the same key gets that "
            "response back (`Idempotent-Replayed: true`) and writes nothing. 1-255 printable ASCII characters, "
            'as a structured-field string (`"…"`) or bare. The same key with another request is 422; while the '
            "first is still being processed, 409."
        ),
        # Checked by parse_key (which also unquotes it and refuses two headers), not by the framework.
        schema_extra={"pattern": KEY_PATTERN},
    ),
]


class IdempotencyKeyInFlightError(DomainError):
    """The first request with this key is still being processed: retrying later gets its response."""

    status_code = 409
    detail = f"A request with this {IDEMPOTENCY_KEY_HEADER} is still being processed; retry later."
    retry_after_seconds = 1


class IdempotencyKeyReusedError(InvalidFieldError):
    """The key was used for another request (method, path, query or body) within its retention."""

    def __init__(self) -> None:
        super().__init__(
            IDEMPOTENCY_KEY_HEADER,
            "This key was already used for a different request (method, path, query or body); use a new key.",
            source="header",
        )


def parse_key(values: Sequence[str]) -> str | None:
    """The key the ``Idempotency-Key`` headers carry (``values``: every one received); ``None`` without one."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidFieldError(IDEMPOTENCY_KEY_HEADER, "Send one key, in one header.", source="header")
    # Optional whitespace around a field value is not part of it (RFC 9110 §5.5); servers strip it, ASGI may not.
    value = values[0].strip(" \t")
    if not _KEY.fullmatch(value):
        raise InvalidFieldError(
            IDEMPOTENCY_KEY_HEADER,
            'Must be 1-255 printable ASCII characters, bare or as a quoted string ("…").',
            source="header",
        )
    return _ESCAPE.sub(r"\1", value[1:-1]) if value.startswith('"') else value


def fingerprint_of(method: str, path: str, query: bytes, body: bytes) -> str:
    """SHA-256 (hex) of what makes two requests the same one; each part length-prefixed, so none can pass for
    another's end."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class StoredResponse(NamedTuple):
    """A response as a key keeps it: exactly the bytes the first request was answered with."""

    status_code: int
    headers: dict[str, str]
    body: bytes

    def to_response(self, *, replayed: bool = False) -> Response[bytes]:
        """This response for the client, marked as a replay when it answers a retry."""
        headers = {**self.headers, REPLAYED_HEADER: "true"} if replayed else self.headers
        return Response(self.body, status_code=self.status_code, headers=headers, media_type=MediaType.JSON)


class KeyHolder(NamedTuple):
    """The live row of a key that was not this request's to take: the first request's fingerprint and response."""

    fingerprint: str
    response: StoredResponse


_KEYS = cast("Table", IdempotencyKey.__table__)
_USERS = cast("Table", User.__table__)
_K = _KEYS.c
_OWNER: Final = bindparam("owner", type_=_K.user_id.type)
_KEY_PARAM: Final = bindparam("idempotency_key", type_=_K.key.type)
_NOW: Final = bindparam("now", type_=_K.expires_at.type)
_COLUMNS = ("user_id", "key", "fingerprint", "status_code", "headers", "body", "created_at", "expires_at")


@cache
def _claim(dialect: str) -> ReturningInsert[Any]:
    """Insert the key's placeholder row, the owner's row locked first (``INSERT … SELECT … FROM users … FOR
    UPDATE``); a live row with the key stays as it is, an expired one is taken over. Returns a row when the key
    is this request's; none when a live row holds it, or the owner has no row."""
    placeholder = (
        bindparam("new_fingerprint", type_=_K.fingerprint.type),
        literal(_PENDING, _K.status_code.type),
        bindparam("new_headers", type_=_K.headers.type),
        bindparam("new_body", type_=_K.body.type),
        _NOW,
        bindparam("new_expires_at", type_=_K.expires_at.type),
    )
    source = select(_USERS.c.id, _KEY_PARAM, *placeholder).where(_USERS.c.id == _OWNER).with_for_update()
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(_KEYS).from_select(list(_COLUMNS), source)
    return statement.on_conflict_do_update(
        index_elements=[_K.user_id, _K.key],
        set_={name: statement.excluded[name] for name in _COLUMNS[2:]},
        where=_K.expires_at <= _NOW,
    ).returning(_K.key)


@cache
def _find() -> Select[Any]:
    return select(_K.fingerprint, _K.status_code, _K.headers, _K.body).where(_K.user_id == _OWNER, _K.key == _KEY_PARAM)


@cache
def _complete() -> Update:
    values: dict[str, BindParameter[Any]] = {
        name: bindparam(f"new_{name}", type_=_K[name].type) for name in ("status_code", "headers", "body")
    }
    return update(_KEYS).where(_K.user_id == _OWNER, _K.key == _KEY_PARAM).values(**values)


@cache
def _purge() -> Delete:
    return delete(_KEYS).where(_K.expires_at <= _NOW)


class _OwnerMissingError(Exception):
    """The owner's row is gone (deleted behind the service's back): the key has nothing to hang on."""


class IdempotencyStore:
    """One owner's idempotency keys: every statement filters on the owner, like the task repository's."""

    def __init__(self, session: AsyncSession, owner_id: str) -> None:
        self.session = session
        self.owner_id = owner_id

    def _dialect(self) -> str:
        bind = self.session.bind
        return "" if bind is None else bind.dialect.name

    async def claim(
        self, key: str, fingerprint: str, now: datetime, expires_at: datetime, lock_wait: float
    ) -> KeyHolder | None:
        """Take ``key`` for this request (``None``), or say who holds it: the live row's fingerprint and response.
        Call inside a transaction. Waits at most ``lock_wait`` seconds for a request holding the key (or the
        owner's row), then raises :class:`IdempotencyKeyInFlightError`."""
        connection = await self.session.connection()
        dialect = self._dialect()
        params = {
            "owner": self.owner_id,
            "idempotency_key": key,
            "new_fingerprint": fingerprint,
            "new_headers": {},
            "new_body": b"",
            "now": now,
            "new_expires_at": expires_at,
        }
        try:
            if dialect == "postgresql":
                # SET takes no bind parameters; the value is a number formatted here, never client input.
                await connection.execute(text(f"SET LOCAL lock_timeout = '{round(lock_wait * 1000)}ms'"))
            claimed = (await connection.execute(_claim(dialect), params)).first() is not None
        except DBAPIError as exc:
            if _is_lock_wait_timeout(exc):
                raise IdempotencyKeyInFlightError from exc
            raise
        if claimed:
            if dialect == "postgresql":
                # The write itself waits for locks as it always does (its statement timeout bounds it).
                await connection.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
            return None
        row = (await connection.execute(_find(), {"owner": self.owner_id, "idempotency_key": key})).first()
        if row is None:
            raise _OwnerMissingError(self.owner_id)
        return KeyHolder(row.fingerprint, StoredResponse(int(row.status_code), dict(row.headers), bytes(row.body)))

    async def complete(self, key: str, response: StoredResponse) -> None:
        """Store the response of the request that claimed ``key`` (in its transaction)."""
        connection = await self.session.connection()
        params = {"new_status_code": response.status_code, "new_headers": response.headers, "new_body": response.body}
        await connection.execute(_complete(), {"owner": self.owner_id, "idempotency_key": key, **params})


def _is_lock_wait_timeout(exc: DBAPIError) -> bool:
    """PostgreSQL's ``lock_timeout`` expired (lock_not_available), or SQLite's busy timeout did."""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "55P03" or "database is locked" in str(orig)


async def purge_expired_keys(session: AsyncSession, now: datetime) -> int:
    """Remove every idempotency key expired at ``now`` (each row carries its own expiry, so pair this with no
    further retention); how many went."""
    connection = await session.connection()
    removed = (await connection.execute(_purge(), {"now": now})).rowcount
    await commit(session)
    return int(removed)


class Idempotency:
    """The ``Idempotency-Key`` of one write request, and the runner that makes the write safe to retry."""

    __slots__ = ("_clock", "_lock_wait", "_provision_owner_again", "_request", "_retention", "_store", "key")

    def __init__(
        self,
        key: str | None,
        request: Request[Any, Any, Any],
        store: IdempotencyStore,
        *,
        retention: timedelta,
        lock_wait: float,
        provision_owner_again: Callable[[], Awaitable[None]],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.key = key
        self._request = request
        self._store = store
        self._retention = retention
        self._lock_wait = lock_wait
        self._provision_owner_again = provision_owner_again
        self._clock = clock

    @staticmethod
    def lock_wait_for(statement_timeout: float) -> float:
        """How long a retry waits for its key: well inside the statement timeout, so the wait ends in a 409
        rather than in a timeout (503)."""
        return statement_timeout * _LOCK_WAIT_SHARE

    async def respond(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run ``write`` (the handler's work, returning what the handler returns) once per key.

        Without a key, ``write`` simply runs. With one, the response is either ``write``'s, encoded and stored in
        its transaction, or the one stored by the first request with the key. Either comes back as the stored
        bytes: Litestar sends a ``Response`` as it is, whatever the handler's annotation (which describes the
        body for the OpenAPI document).
        """
        if self.key is None:
            return await write()
        request = self._request
        fingerprint = fingerprint_of(
            request.method, request.scope["path"], request.scope["query_string"], await request.body()
        )
        try:
            response = await self._once(self.key, fingerprint, write)
        except _OwnerMissingError:
            # As TaskService.create does: provision the row again (that commits, so outside the rolled-back
            # transaction) and try once more.
            await self._provision_owner_again()
            response = await self._once(self.key, fingerprint, write)
        return cast("T", response)

    async def _once(self, key: str, fingerprint: str, write: Callable[[], Awaitable[object]]) -> Response[bytes]:
        now = self._clock()
        async with transaction(self._store.session):
            holder = await self._store.claim(key, fingerprint, now, now + self._retention, self._lock_wait)
            if holder is None:
                response = self._encoded(await write())
                await self._store.complete(key, response)
                return response.to_response()
        if holder.fingerprint != fingerprint:
            raise IdempotencyKeyReusedError
        if holder.response.status_code == _PENDING:
            raise IdempotencyKeyInFlightError
        IDEMPOTENT_REPLAYS.inc()
        return holder.response.to_response(replayed=True)

    def _encoded(self, result: object) -> StoredResponse:
        """The handler's result as Litestar would send it: its status, the headers it set, the JSON body."""
        handler = self._request.route_handler
        response = result if isinstance(result, Response) else Response(result)
        status = response.status_code or handler.status_code
        headers = {name: str(value) for name, value in response.headers.items()}  # the handler's: Location, ETag
        if status == 204:
            return StoredResponse(status, headers, b"")
        body = response.render(response.content, MediaType.JSON, handler.default_serializer)
        return StoredResponse(status, headers, body)
