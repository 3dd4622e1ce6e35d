"""Reading a server-sent event stream from a real server, parsed as a browser's ``EventSource`` parses it.

:func:`open_stream` reads in the background, so a test writes through the API and then waits on what the stream
has received (:meth:`LiveStream.wait_for`), never on time. The parser follows WHATWG HTML §9.2.6 (event stream
interpretation): lines end with CRLF, LF or CR; a blank line dispatches; ``id`` sets the last event id even when
no event is dispatched; comments start with a colon.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.servers import until

__all__ = ("EventStreamParser", "LiveStream", "ServerSentEvent", "open_stream")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: ``id`` is the stream's last event id when it was dispatched."""

    id: str
    type: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class EventStreamParser:
    """Incremental parser: feed it text as it arrives; it collects events, comments, ``retry`` and the last id."""

    events: list[ServerSentEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    last_event_id: str = ""
    retry: int | None = None
    _pending: str = ""
    _data: list[str] = field(default_factory=list)
    _type: str = ""
    _id: str = ""

    def feed(self, text: str) -> None:
        self._pending += text
        while True:
            cut = next((i for i, ch in enumerate(self._pending) if ch in "\r\n"), None)
            if cut is None:
                return
            if self._pending[cut] == "\r" and cut + 1 == len(self._pending):
                return  # a CR at the end may be the first half of a CRLF: wait for the next chunk
            line = self._pending[:cut]
            skip = 2 if self._pending.startswith("\r\n", cut) else 1
            self._pending = self._pending[cut + skip :]
            self._line(line)

    def _line(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)

    def _dispatch(self) -> None:
        self.last_event_id = self._id
        if self._data:
            self.events.append(ServerSentEvent(id=self._id, type=self._type or "message", data="\n".join(self._data)))
        self._data, self._type = [], ""


class LiveStream:
    """A stream being read in the background: what has arrived so far, and how it ended (if it has)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = EventStreamParser()
        self.ended = asyncio.Event()
        #: What ended the reading, if not the server ending the response properly.
        self.error: BaseException | None = None

    @property
    def events(self) -> list[ServerSentEvent]:
        return self.parser.events

    @property
    def comments(self) -> list[str]:
        return self.parser.comments

    @property
    def last_event_id(self) -> str:
        return self.parser.last_event_id

    async def wait_for(self, condition: Callable[[LiveStream], bool], what: str) -> None:
        """Return once ``condition`` holds of the stream; fail if the stream ends first or it never does."""

        def holds() -> bool:
            if condition(self):
                return True
            if self.ended.is_set():
                raise AssertionError(f"the stream ended ({self.error!r}) before {what}")
            return False

        await until(holds, what)

    async def wait_until_open(self) -> None:
        """Return once the stream's opening (its ``retry``) has arrived: from then on it is subscribed."""
        await self.wait_for(lambda s: s.parser.retry is not None, "the stream opened")

    async def wait_for_events(self, count: int) -> list[ServerSentEvent]:
        """All events received, once there are at least ``count``."""
        await self.wait_for(lambda s: len(s.events) >= count, f"{count} events arrived")
        return list(self.events)

    async def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            async for chunk in self.response.aiter_raw():
                self.parser.feed(decoder.decode(chunk))
        except Exception as exc:
            self.error = exc
        finally:
            self.ended.set()


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str | int] | None = None,
) -> AsyncIterator[LiveStream]:
    """``GET url`` as an event stream (it must answer 200), read in the background until the block ends."""
    async with client.stream("GET", url, headers=headers, params=params) as response:
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"the stream was refused: {response.status_code} {response.text}")
        stream = LiveStream(response)
        reader = asyncio.create_task(stream._read())
        try:
            yield stream
        finally:
            reader.cancel()
            with suppress(asyncio.CancelledError):
                await reader
