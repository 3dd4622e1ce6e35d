"""One live event stream, as the raw ASGI response of ``GET /api/{user_id}/tasks/events``.

Server-sent events (WHATWG HTML §9.2): each change of the change feed is one event, ``id`` its revision, ``event``
its ``op`` and ``data`` the feed's JSON for it on one line. The stream is a raw ASGI app rather than Litestar's
``ServerSentEvent`` because it must own ``send``: every write is bounded by ``SSE_SEND_TIMEOUT_SECONDS`` (uvicorn's
``send`` waits while the socket's buffer is full, so a client that stopped reading would otherwise hold the stream
forever), and the end of the client is noticed from ``receive`` while the stream idles.

The stream sleeps on its :class:`~app.sync.hub.Subscription` and holds no database connection meanwhile; woken,
it reads the feed after the last revision it sent, page by page, in a session of its own that it closes at once.
It ends when its token expires, when the process shuts down, or when its client goes away or stops reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from litestar.types import Message, Receive, Scope, Send

from app.errors import is_database_unavailable
from app.http_layers import HEAD_REQUEST
from app.observability.metrics import EVENT_STREAMS_OPEN, EVENTS_SENT
from app.sync.hub import StreamHub, Subscription
from app.tasks.schemas import ChangeFeed, TaskChange, TaskUpsert
from app.tasks.service import RevisionExpiredError

__all__ = ("RETRY_MILLISECONDS", "AccountErasedError", "EventStream", "FeedReader", "encode_changes", "encode_page")

logger = logging.getLogger(__name__)

#: How long a client waits before reconnecting after the stream ends (the ``retry`` field).
RETRY_MILLISECONDS = 3000
#: Reads the change feed after a revision: one page, in a database session of its own.
FeedReader = Callable[[int], Awaitable[ChangeFeed]]

_HEADERS = [
    (b"content-type", b"text/event-stream"),
    # Neither a cache nor nginx (which buffers proxied responses unless told not to) may hold events back.
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_HEARTBEAT = b": heartbeat\n\n"
_ENDINGS = {
    "expired": b": the token has expired; reconnect with a fresh one and Last-Event-ID\n\n",
    "shutdown": b": this server is shutting down; reconnect with Last-Event-ID\n\n",
    "unreadable": b": the change feed cannot be read now; reconnect with Last-Event-ID\n\n",
    "erased": b": this account was erased; its events end here\n\n",
}
_SENT = {"upsert": EVENTS_SENT.labels(event="upsert"), "delete": EVENTS_SENT.labels(event="delete")}
_encoder = msgspec.json.Encoder()


def encode_changes(changes: list[TaskChange]) -> bytes:
    """The events for ``changes``, in their order: one ``id``/``event``/``data`` block each."""
    blocks = []
    for change in changes:
        op = "upsert" if isinstance(change, TaskUpsert) else "delete"
        # msgspec's JSON has no raw line breaks (they are escaped inside strings), so ``data`` is one line.
        blocks.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (change.revision, op.encode(), _encoder.encode(change)))
    return b"".join(blocks)


def encode_page(feed: ChangeFeed, position: int) -> bytes:
    """A page of the feed as events, for a client whose last event id is ``position``.

    When the feed's ``revision`` lies past its last change (changes superseded or tombstones purged in between, or
    a full sync's tasks all older), an ``id`` block without data follows: it moves the client's Last-Event-ID to
    where the feed says to continue from, without dispatching an event.
    """
    body = encode_changes(feed.changes)
    last = feed.changes[-1].revision if feed.changes else position
    return body if feed.revision == last else body + b"id: %d\n\n" % feed.revision


class AccountErasedError(Exception):
    """The stream's user was erased (``DELETE /api/{user_id}``, on any instance): their stream ends."""


class _StalledError(Exception):
    """A write did not complete within the send timeout: the client stopped reading."""


class EventStream:
    """The response of one stream: ``first`` is the feed already read when it was opened (the replay's first page,
    or nothing but the current revision), ``read`` reads what follows."""

    def __init__(
        self,
        hub: StreamHub,
        subscription: Subscription,
        first: ChangeFeed,
        *,
        resume_from: int,
        read: FeedReader,
        lifetime: float,
        heartbeat: float,
        send_timeout: float,
    ) -> None:
        self._hub = hub
        self._subscription = subscription
        self._first = first
        self._resume_from = resume_from
        self._read = read
        self._lifetime = lifetime
        self._heartbeat = heartbeat
        self._send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("state", {}).get(HEAD_REQUEST):
            # HEAD: the head of the stream and no more (served as a GET, the stream would last until its token ends).
            self._hub.unsubscribe(self._subscription)
            await send({"type": "http.response.start", "status": 200, "headers": list(_HEADERS)})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        loop = asyncio.get_running_loop()
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        EVENT_STREAMS_OPEN.inc()
        try:
            await self._stream(send, expires_at=loop.time() + self._lifetime)
        except _StalledError:
            # Returning without finishing the response makes uvicorn close the connection (and log that it did).
            logger.warning("Closed an event stream of %s: its client stopped reading", self._subscription.user_id)
        finally:
            EVENT_STREAMS_OPEN.dec()
            watcher.cancel()
            self._hub.unsubscribe(self._subscription)

    async def _stream(self, send: Send, expires_at: float) -> None:
        loop = asyncio.get_running_loop()
        await self._send(send, {"type": "http.response.start", "status": 200, "headers": list(_HEADERS)})
        # ``id`` before any event: a client that reconnects before the first one resumes from here, not from
        # whatever the current revision is by then. ``retry``: how soon to reconnect.
        opening = b"retry: %d\nid: %d\n\n" % (RETRY_MILLISECONDS, self._resume_from)
        await self._write(send, opening + encode_page(self._first, self._resume_from), self._first.changes)
        cursor, more = self._first.revision, self._first.has_more
        last_write = loop.time()
        while True:
            # While a catch-up has more pages, the next is read at once; otherwise wait for news, a heartbeat, or
            # the token's end, whichever comes first.
            woken = more or await self._subscription.wait(min(last_write + self._heartbeat, expires_at) - loop.time())
            ending = self._ending(loop.time() >= expires_at)
            if ending == "disconnected":
                return
            if ending is not None:
                await self._finish(send, _ENDINGS[ending])
                return
            # A heartbeat reads the feed too: a change whose news was lost (its process died between the commit and
            # telling the others) reaches the stream within one heartbeat.
            heartbeat = not woken and loop.time() >= last_write + self._heartbeat
            if woken or heartbeat:
                try:
                    feed = await self._read(cursor)
                except AccountErasedError:
                    logger.info("Ended an event stream of %s: the account was erased", self._subscription.user_id)
                    await self._finish(send, _ENDINGS["erased"])
                    return
                except Exception as exc:
                    self._log_unreadable(exc)
                    await self._finish(send, _ENDINGS["unreadable"])
                    return
                if feed.revision != cursor:
                    await self._write(send, encode_page(feed, cursor), feed.changes)
                    last_write = loop.time()
                cursor, more = feed.revision, feed.has_more
            if heartbeat and loop.time() >= last_write + self._heartbeat:
                await self._write(send, _HEARTBEAT, [])
                last_write = loop.time()

    def _ending(self, expired: bool) -> str | None:
        if self._subscription.ended is not None:
            return self._subscription.ended
        return "expired" if expired else None

    async def _write(self, send: Send, body: bytes, changes: list[TaskChange]) -> None:
        await self._send(send, {"type": "http.response.body", "body": body, "more_body": True})
        for change in changes:
            _SENT["upsert" if isinstance(change, TaskUpsert) else "delete"].inc()

    async def _finish(self, send: Send, farewell: bytes) -> None:
        """End the response properly, with a comment saying why, so the client knows to reconnect."""
        await self._send(send, {"type": "http.response.body", "body": farewell, "more_body": False})

    async def _send(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await send(message)
        except TimeoutError:
            raise _StalledError from None

    async def _watch_disconnect(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:
            logger.debug("Reading from an event stream's client failed; taking it as gone", exc_info=True)
        self._subscription.end("disconnected")

    def _log_unreadable(self, exc: Exception) -> None:
        user = self._subscription.user_id
        if isinstance(exc, RevisionExpiredError):
            # Tombstones purged past the stream's position (it outlived the retention): the reconnect answers what
            # the client must do (410: sync again from 0).
            logger.info("Ended an event stream of %s: %s", user, type(exc).__name__)
        elif is_database_unavailable(exc):
            logger.warning("Ended an event stream of %s: the database is unavailable (%s)", user, type(exc).__name__)
        else:
            logger.error("Ended an event stream of %s: reading the change feed failed", user, exc_info=exc)
