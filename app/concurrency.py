"""A per-user bound on requests in flight, so one user cannot take the database pool from everyone else.

The pool is shared: 20 slow requests of one user would otherwise hold every connection, and another user's
plain read would wait out the pool timeout and get 503. Each process lets a user run at most
``MAX_CONCURRENT_REQUESTS_PER_USER`` requests at once; the next few wait in line (first come, first served)
for up to :data:`WAIT_SECONDS`, and anything beyond that is answered 429 with ``Retry-After``. The rate limiter
bounds how many requests a user sends per minute; this bounds how many they hold at the same moment.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.auth.tokens import Principal

__all__ = ("EXEMPT_FROM_CONCURRENCY_LIMIT", "UserConcurrencyLimiter", "UserConcurrencyMiddleware")

#: How long a request over the bound waits for one of its user's requests to finish.
WAIT_SECONDS = 2.0
#: Requests of one user waiting at once; more are refused at once rather than parked.
MAX_WAITING = 64
#: The ``opt`` key of routes whose requests take no slot: a live event stream lasts as long as its token and holds
#: no database connection while it idles (app/sync/), so counting it would lock its user out of the API.
EXEMPT_FROM_CONCURRENCY_LIMIT = "exempt_from_concurrency_limit"


class _Line:
    __slots__ = ("active", "waiting")

    def __init__(self) -> None:
        self.active = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class UserConcurrencyLimiter:
    """Slots per user: ``limit`` at once, a short line behind them, a freed slot handed to the longest waiter."""

    def __init__(self, limit: int, *, wait_seconds: float = WAIT_SECONDS, max_waiting: int = MAX_WAITING) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.max_waiting = max_waiting
        self._lines: dict[str, _Line] = {}

    def in_flight(self, user_id: str) -> int:
        """Requests of ``user_id`` holding a slot now."""
        line = self._lines.get(user_id)
        return 0 if line is None else line.active

    def waiting(self, user_id: str) -> int:
        """Requests of ``user_id`` waiting for a slot now."""
        line = self._lines.get(user_id)
        return 0 if line is None else sum(not f.done() for f in line.waiting)

    async def acquire(self, user_id: str) -> bool:
        """Take a slot, waiting up to ``wait_seconds`` for one; ``False`` if none came (the caller answers 429)."""
        line = self._lines.get(user_id)
        if line is None:
            line = self._lines[user_id] = _Line()
        if line.active < self.limit and not line.waiting:
            line.active += 1
            return True
        if len(line.waiting) >= self.max_waiting:
            return False
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.waiting.append(handed)
        try:
            # asyncio.wait, not wait_for: a timeout must not cancel the future a releaser may be completing.
            await asyncio.wait((handed,), timeout=self.wait_seconds)
        except BaseException:
            # Cancelled while waiting (the client went away): give back a slot handed over meanwhile.
            self._withdraw(user_id, line, handed)
            raise
        if handed.done():
            return True  # a finishing request passed its slot on (``active`` already counts it)
        self._withdraw(user_id, line, handed)
        return False

    def release(self, user_id: str) -> None:
        """Give a slot back: to the first request still waiting, else to the pool of free slots."""
        line = self._lines[user_id]
        while line.waiting:
            handed = line.waiting.popleft()
            if not handed.done():
                handed.set_result(None)
                return
        line.active -= 1
        if line.active == 0:
            del self._lines[user_id]

    def _withdraw(self, user_id: str, line: _Line, handed: asyncio.Future[None]) -> None:
        if handed.done() and not handed.cancelled():
            self.release(user_id)  # the slot arrived as this request gave up: pass it on
            return
        handed.cancel()
        line.waiting.remove(handed)  # still there: a releaser only pops a future it completes
        if line.active == 0 and not line.waiting:
            self._lines.pop(user_id, None)


class UserConcurrencyMiddleware(ASGIMiddleware):
    """Holds one of the authenticated user's slots for the whole request; anonymous requests pass through
    (they are answered 401 by the guard without touching the database)."""

    exclude_opt_key = EXEMPT_FROM_CONCURRENCY_LIMIT

    def __init__(self, limiter: UserConcurrencyLimiter) -> None:
        self.limiter = limiter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        user: Any = scope.get("user")
        if not isinstance(user, Principal):
            await next_app(scope, receive, send)
            return
        if not await self.limiter.acquire(user.id):
            raise TooManyRequestsException(
                f"Too many requests of this user at once (at most {self.limiter.limit} run together); "
                "retry when one has finished.",
                headers={"Retry-After": "1"},
            )
        try:
            await next_app(scope, receive, send)
        finally:
            self.limiter.release(user.id)
