"""The streams of one process, by user: who to wake when a user's tasks change.

News of a change carries only the user's id ("alice's tasks changed"), never the change itself: a woken stream
reads the change feed from the last revision it sent, so a burst of writes costs one read, news that arrives twice
costs an empty one, and news that never arrives (the listening connection dropped) is made good by waking every
stream once it is back. Nothing here touches the database or the network.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from litestar.exceptions import TooManyRequestsException

from app.errors import ServiceUnavailableError

__all__ = ("EndReason", "StreamCapacityError", "StreamHub", "Subscription", "TooManyStreamsError")

#: Why a stream ends before its client goes away or its token expires.
EndReason = Literal["shutdown", "disconnected"]
#: Seconds a client refused a stream is told to wait: a tab closing frees a slot at once.
RETRY_AFTER_SECONDS = 5


class TooManyStreamsError(TooManyRequestsException):
    """The user already holds ``SSE_MAX_STREAMS_PER_USER`` streams in this process (429 with ``Retry-After``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many event streams of this user at once (at most {limit} per user); close one and retry.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class StreamCapacityError(ServiceUnavailableError):
    """This process holds ``SSE_MAX_STREAMS_PER_PROCESS`` streams, or is shutting down (503 with ``Retry-After``):
    another instance may have room."""

    detail = "This server cannot open another event stream right now; retry shortly."


class Subscription:
    """One stream's place in the hub: a flag raised when its user's tasks change (or the stream must end)."""

    __slots__ = ("_dirty", "ended", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.ended: EndReason | None = None
        self._dirty = asyncio.Event()

    def wake(self) -> None:
        """The user's tasks may have changed: the stream should read the change feed."""
        self._dirty.set()

    def end(self, reason: EndReason) -> None:
        """Ask the stream to end (the first reason given is kept)."""
        if self.ended is None:
            self.ended = reason
        self._dirty.set()

    async def wait(self, seconds: float) -> bool:
        """Whether a wake-up came within ``seconds``; it is consumed, so wake-ups during the read that follows
        raise the flag again (and are not lost)."""
        if not self._dirty.is_set():
            try:
                async with asyncio.timeout(max(seconds, 0.0)):
                    await self._dirty.wait()
            except TimeoutError:
                return False
        self._dirty.clear()
        return True


class StreamHub:
    """User id → the subscriptions of that user's open streams, within per-user and per-process bounds."""

    def __init__(self, max_per_user: int, max_total: int) -> None:
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.closing = False
        self._streams: dict[str, set[Subscription]] = {}
        self._total = 0

    @property
    def open_streams(self) -> int:
        """Subscriptions held now, in this process."""
        return self._total

    def subscribe(self, user_id: str) -> Subscription:
        """A subscription for a new stream of ``user_id``; 429 or 503 when a bound is reached."""
        if self.closing or self._total >= self.max_total:
            raise StreamCapacityError
        streams = self._streams.setdefault(user_id, set())
        if len(streams) >= self.max_per_user:
            raise TooManyStreamsError(self.max_per_user)
        subscription = Subscription(user_id)
        streams.add(subscription)
        self._total += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Give a stream's slot back (idempotent)."""
        streams = self._streams.get(subscription.user_id)
        if streams is None or subscription not in streams:
            return
        streams.discard(subscription)
        self._total -= 1
        if not streams:
            del self._streams[subscription.user_id]

    def announce(self, user_id: str) -> None:
        """``user_id``'s tasks changed: wake each of their streams."""
        for subscription in self._streams.get(user_id, ()):
            subscription.wake()

    def wake_all(self) -> None:
        """Wake every stream: news may have been missed (the listening connection was down)."""
        for streams in self._streams.values():
            for subscription in streams:
                subscription.wake()

    def close(self) -> None:
        """End every stream and refuse new ones: the process is shutting down, clients reconnect elsewhere."""
        self.closing = True
        for streams in self._streams.values():
            for subscription in streams:
                subscription.end("shutdown")
