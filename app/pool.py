"""A connection pool that hands connections out in the order requests asked for them.

SQLAlchemy's asyncio pool keeps its idle connections in an ``asyncio.Queue``. When a connection comes back, the
queue wakes the longest waiter, but the waiter only runs on a later turn of the event loop, and a request that
arrives in between takes the connection first (``get`` tries ``get_nowait`` before it waits). The woken waiter
then finds the queue empty and joins the *back* of the line again. Under saturation (64 clients, 16 connections
per process) most requests are served straight away by barging while a few lose that race over and over: the
99th percentile is those few, many times the median (issue 14, docs/benchmarks.md "The tail").

:class:`FairAsyncAdaptedQueuePool` replaces the queue with one that hands a returned connection *directly* to the
longest waiter, and makes a newcomer wait whenever anyone is already waiting: first come, first served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Full

__all__ = ("FairAsyncAdaptedQueue", "FairAsyncAdaptedQueuePool")

_T = TypeVar("_T")


class FairAsyncAdaptedQueue(AsyncAdaptedQueue[_T]):
    """Idle items, and a line of waiters that each returned item goes to before anyone else sees it.

    The interface is SQLAlchemy's pool queue (``get``/``put`` are called from the pool's synchronous code, inside
    the greenlet that SQLAlchemy's asyncio layer runs it in, and block through ``await_``).
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._idle: deque[_T] = deque()
        self._waiters: deque[asyncio.Future[_T]] = deque()

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def qsize(self) -> int:
        return len(self._idle)

    def waiting(self) -> int:
        """Callers waiting for an item now."""
        return sum(not waiter.done() for waiter in self._waiters)

    def put_nowait(self, item: _T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a waiter that timed out or was cancelled has left the line
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._idle.append(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:  # noqa: ARG002
        # The pool never holds more connections than the queue's size, so a put never has to wait for room.
        self.put_nowait(item)

    def get_nowait(self) -> _T:
        if not self._idle:
            raise Empty()
        return self._idle.pop() if self.use_lifo else self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        # No barging: while anyone waits, an idle item (there is none for long: put hands it over) is theirs.
        if self._idle and not self._waiters:
            return self.get_nowait()
        if not block:
            raise Empty()
        return self.await_(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> _T:  # noqa: ASYNC109 - the pool's own timeout, passed on
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # asyncio.wait, not wait_for: a timeout must not cancel a future that put may be completing.
            await asyncio.wait((waiter,), timeout=timeout)
        except BaseException:
            self._leave(waiter)
            raise
        if waiter.done():
            return waiter.result()
        self._leave(waiter)
        raise Empty()

    def _leave(self, waiter: asyncio.Future[_T]) -> None:
        """Take ``waiter`` out of the line; an item handed to it meanwhile goes to the next one."""
        if waiter.done() and not waiter.cancelled():
            self.put_nowait(waiter.result())
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):  # already handed over and popped by put_nowait
            self._waiters.remove(waiter)


class FairAsyncAdaptedQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool, with connections handed out first come, first served."""

    _queue_class: Any = FairAsyncAdaptedQueue
