"""Rate limiting with Litestar's middleware: per authenticated user, per client address otherwise.

Two limits, each a :class:`RateLimitConfig`: one counts requests that carry a valid token by their subject,
the other counts the rest by client address. Counters live in this process, or in Redis when ``REDIS_URL``
is set so that several instances share them. If Redis is unreachable the limiter lets requests through
(and says so in the log) rather than taking the API down with it.

Litestar's middleware stores every request's timestamp in the window and re-encodes that list on every
request, so its cost grows with the limit (at 600 a minute, a 4 KiB JSON document per request, twice). The
subclass here keeps Litestar's flow, keys and headers but counts in a fixed window with one atomic
increment (a Lua script in Redis), so concurrent requests on different instances never lose a hit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import abstractmethod
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from litestar.connection import Request
from litestar.middleware.rate_limit import (
    DURATION_VALUES,
    CacheObject,
    RateLimitConfig,
    RateLimitMiddleware,
    get_remote_address,
)
from litestar.stores.base import Store
from litestar.stores.redis import RedisStore
from litestar.types import ASGIApp, Message, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.auth.tokens import Principal
from app.config import Settings

__all__ = (
    "RATE_LIMIT_STORE",
    "CounterStore",
    "LocalStore",
    "RedisCounterStore",
    "StoreUnavailableError",
    "rate_limit_configs",
    "rate_limit_store",
)

logger = logging.getLogger(__name__)

RATE_LIMIT_STORE = "rate_limit"
#: Health checks and the docs are never limited.
EXEMPT = ["^/health", "^/schema", "^/metrics"]
_FAIL_OPEN_LOG_INTERVAL = 60.0
#: After Redis fails, how long requests go unlimited without asking it again. A Redis that hangs rather than
#: refusing would otherwise hold every request for the client's socket timeout.
STORE_RETRY_SECONDS = 5.0


def rate_limit_identity(request: Request[Any, Any, Any]) -> str:
    """``user:<sub>`` for an authenticated request, ``addr:<client>`` otherwise."""
    user = request.scope.get("user")
    return f"user:{user.id}" if isinstance(user, Principal) else f"addr:{get_remote_address(request)}"


async def _is_authenticated(request: Request[Any, Any, Any]) -> bool:
    return isinstance(request.scope.get("user"), Principal)


async def _is_anonymous(request: Request[Any, Any, Any]) -> bool:
    return not isinstance(request.scope.get("user"), Principal)


class _Tally:
    """Stands in for Litestar's list of timestamps, which it only ever measures with ``len``."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:  # pragma: no cover - Litestar does not iterate it
        return iter(())


class CounterStore(Store):
    """A store that can count hits atomically: read-then-write would lose increments between instances."""

    @abstractmethod
    async def hit(self, key: str, window: int) -> tuple[int, int]:
        """Count one hit on ``key``; return the hits in the current window (this one included) and the
        Unix time the window resets. A window opens on the first hit and lasts ``window`` seconds."""


class CountingRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's rate-limit middleware with an atomic fixed-window counter, and open when its store fails."""

    _last_warning = 0.0

    def __init__(self, app: ASGIApp, config: RateLimitConfig) -> None:
        super().__init__(app, config)
        # Litestar serialises each process's read-modify-write behind a lock held across the store round trip;
        # the counter is one atomic operation, so requests need not queue behind each other's Redis calls.
        self._lock = contextlib.nullcontext()  # type: ignore[assignment]

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        window = DURATION_VALUES[self.unit]
        if not isinstance(store, CounterStore):  # pragma: no cover - rate_limit_store only builds counter stores
            raise TypeError(f"the rate-limit store must count atomically, got {type(store).__name__}")
        try:
            count, reset = await store.hit(key, window)
        except (OSError, TimeoutError, RedisError) as exc:
            self._warn(exc)
            count, reset = 1, int(time.time()) + window
        # Litestar refuses when the history *before* this request already holds the limit.
        return CacheObject(history=_Tally(count - 1), reset=reset)  # type: ignore[arg-type]

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:  # noqa: ARG002
        # Already counted by ``hit``; only the headers' view moves on.
        cache_object.history = _Tally(len(cache_object.history) + 1)  # type: ignore[assignment]

    def create_send_wrapper(self, send: Send, cache_object: CacheObject) -> Send:
        # Litestar sets these through its mutable header view, rescanning the header list for each one.
        extra = [(k.lower().encode(), v.encode()) for k, v in self.create_response_headers(cache_object).items()]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return send_wrapper

    @classmethod
    def _warn(cls, exc: Exception) -> None:
        now = time.monotonic()
        if now - cls._last_warning > _FAIL_OPEN_LOG_INTERVAL:
            cls._last_warning = now
            logger.warning("Rate-limit store unavailable (%s); requests are not being limited", exc)


class LocalStore(CounterStore):
    """Counters in this process: a dict, swept of expired keys as it grows. No lock: each call runs to
    completion on the event loop without awaiting."""

    def __init__(self, sweep_every: int = 10_000) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._sweep_every = sweep_every
        self._writes = 0

    async def hit(self, key: str, window: int) -> tuple[int, int]:
        entry = self._data.get(key)
        now = time.time()
        if entry is None or entry[1] <= time.monotonic():
            count, reset = 1, int(now) + window
        else:
            previous, _, reset_text = entry[0].partition(b" ")
            count, reset = int(previous) + 1, int(reset_text)
        await self.set(key, f"{count} {reset}", expires_in=max(1, reset - int(now)))
        return count, reset

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        expires_at = time.monotonic() + seconds if seconds else float("inf")
        self._data[key] = (value.encode() if isinstance(value, str) else value, expires_at)
        self._writes += 1
        if self._writes % self._sweep_every == 0:
            now = time.monotonic()
            self._data = {k: v for k, v in self._data.items() if v[1] > now}

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        del renew_for  # counters are never renewed on read
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._data[key]
            return None
        return entry[0]

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def delete_all(self) -> None:
        self._data.clear()

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        entry = self._data.get(key)
        return None if entry is None or entry[1] == float("inf") else int(entry[1] - time.monotonic())


# INCR and the window's expiry in one server-side step: every instance's hits land on one counter, and a
# counter can never outlive its window (as it could if a client died between INCR and EXPIRE).
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


class StoreUnavailableError(RedisError):
    """Redis failed moments ago; not asked again until :data:`STORE_RETRY_SECONDS` have passed."""


class RedisCounterStore(RedisStore, CounterStore):
    """Litestar's Redis store plus an atomic hit counter, shared by every instance using the same Redis.

    When Redis fails, the counter stops asking it for :data:`STORE_RETRY_SECONDS` (a circuit breaker): the
    limiter fails open at once instead of every request waiting out the socket timeout of a hung server.
    """

    def __init__(self, redis: Redis, namespace: str, retry_after: float = STORE_RETRY_SECONDS) -> None:
        super().__init__(redis, namespace=namespace, handle_client_shutdown=True)
        self._hit_script = self._redis.register_script(_HIT_SCRIPT)
        self._retry_after = retry_after
        self._retry_at = 0.0

    async def hit(self, key: str, window: int) -> tuple[int, int]:
        if time.monotonic() < self._retry_at:
            raise StoreUnavailableError(f"Redis failed less than {self._retry_after:g} s ago")
        try:
            count, ttl = await self._hit_script(keys=[self._make_key(key)], args=[window])
        except (OSError, TimeoutError, RedisError):
            self._retry_at = time.monotonic() + self._retry_after
            raise
        return int(count), int(time.time()) + int(ttl)


def rate_limit_configs(settings: Settings) -> list[RateLimitConfig]:
    """The configured limits (a limit of 0 is off)."""
    configs = []
    for per_minute, applies in (
        (settings.rate_limit_per_minute, _is_authenticated),
        (settings.rate_limit_anonymous_per_minute, _is_anonymous),
    ):
        if per_minute > 0:
            configs.append(
                RateLimitConfig(
                    rate_limit=("minute", per_minute),
                    exclude=EXEMPT,
                    identifier_for_request=rate_limit_identity,
                    check_throttle_handler=applies,
                    store=RATE_LIMIT_STORE,
                    middleware_class=CountingRateLimitMiddleware,
                )
            )
    return configs


def rate_limit_store(settings: Settings) -> Store:
    """Redis when ``REDIS_URL`` is set (shared by every instance), else this process's memory."""
    if settings.redis_url:
        client = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        return RedisCounterStore(client, namespace="todo-api:rate-limit")
    return LocalStore()
