"""Rate limiting with Litestar's middleware: per authenticated user, per client address otherwise.

Two limits, each a :class:`RateLimitConfig`: one counts requests that carry a valid token by their
subject, the other counts the rest by client address. Counters live in process memory, or in Redis when
``REDIS_URL`` is set so that several instances share them. If Redis is unreachable the limiter lets
requests through (and says so in the log) rather than taking the API down with it.
"""

from __future__ import annotations

import logging
import time
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
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from redis.exceptions import RedisError

from app.auth.tokens import Principal
from app.config import Settings

__all__ = ("RATE_LIMIT_STORE", "rate_limit_configs", "rate_limit_store")

logger = logging.getLogger(__name__)

RATE_LIMIT_STORE = "rate_limit"
#: Health checks and the docs are never limited.
EXEMPT = ["^/health", "^/schema"]
_FAIL_OPEN_LOG_INTERVAL = 60.0


def rate_limit_identity(request: Request[Any, Any, Any]) -> str:
    """``user:<sub>`` for an authenticated request, ``addr:<client>`` otherwise."""
    user = request.scope.get("user")
    return f"user:{user.id}" if isinstance(user, Principal) else f"addr:{get_remote_address(request)}"


async def _is_authenticated(request: Request[Any, Any, Any]) -> bool:
    return isinstance(request.scope.get("user"), Principal)


async def _is_anonymous(request: Request[Any, Any, Any]) -> bool:
    return not isinstance(request.scope.get("user"), Principal)


class FailOpenRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's middleware, except that a store outage lets requests through instead of failing them."""

    _last_warning = 0.0

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        try:
            return await super().retrieve_cached_history(key, store)
        except (OSError, TimeoutError, RedisError) as exc:
            self._warn(exc)
            return CacheObject(history=[], reset=int(time.time()) + DURATION_VALUES[self.unit])

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        try:
            await super().set_cached_history(key, cache_object, store)
        except (OSError, TimeoutError, RedisError) as exc:
            self._warn(exc)

    @classmethod
    def _warn(cls, exc: Exception) -> None:
        now = time.monotonic()
        if now - cls._last_warning > _FAIL_OPEN_LOG_INTERVAL:
            cls._last_warning = now
            logger.warning("Rate-limit store unavailable (%s); requests are not being limited", exc)


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
                    middleware_class=FailOpenRateLimitMiddleware,
                )
            )
    return configs


def rate_limit_store(settings: Settings) -> Store:
    """Redis when ``REDIS_URL`` is set (shared by every instance), else this process's memory."""
    if settings.redis_url:
        return RedisStore.with_client(url=settings.redis_url, namespace="todo-api:rate-limit")
    return MemoryStore()
