"""Live events as one concern of the app: its route, its hub, where news of changes comes from, and its shutdown.

The task service announces each committed change (``app.state.announce_change``). On PostgreSQL one
:class:`~app.sync.listener.ChangeListener` per process wakes its own streams and tells the other processes through
NOTIFY, hearing theirs in turn; the embedded SQLite is one process, so there the hub alone is told.

On SIGTERM uvicorn stops accepting, then waits (up to its graceful timeout) for every open response before it runs
the app's shutdown: a stream would hold it the whole time. So the plugin chains a handler in front of uvicorn's
that ends every stream first; each ends its response cleanly and its client reconnects to another instance.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin

from app.config import Settings
from app.errors import InvalidFieldError
from app.sync.events import FEED_PAGE, EventController
from app.sync.hub import StreamHub
from app.sync.listener import ChangeListener
from app.sync.stream import AccountErasedError, FeedReader
from app.tasks.schemas import ChangeFeed
from app.tasks.service import TaskService
from app.users.owner import Owner

__all__ = ("LiveEvents",)

logger = logging.getLogger(__name__)

_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class LiveEvents(InitPlugin):
    """``GET /api/{user_id}/tasks/events`` and what feeds it, started and stopped with the app."""

    def __init__(self, settings: Settings, database: SQLAlchemyAsyncConfig) -> None:
        self.settings = settings
        self.hub = StreamHub(settings.sse_max_streams_per_user, settings.sse_max_streams_per_process)
        self.listener = ChangeListener(settings, self.hub) if settings.database.dialect == "postgresql" else None
        self._database = database

    @property
    def announce_change(self) -> Callable[[str], None]:
        """What the task service tells of each committed change: on PostgreSQL the listener, which wakes this
        process's streams and tells the other processes; on SQLite (one process) the hub alone."""
        return self.hub.announce if self.listener is None else self.listener.publish

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(EventController)
        app_config.lifespan.append(self._lifespan)
        app_config.state["live_events"] = self
        return app_config

    def feed_reader(self, owner: Owner) -> FeedReader:
        """Reads ``owner``'s change feed for a stream, each page in a session that is closed before it is sent."""
        session_maker = self._database.create_session_maker()
        max_tasks = self.settings.max_tasks_per_user

        async def erased() -> None:
            # Where a request would provision a vanished user again, a stream ends: the account was erased.
            raise AccountErasedError(owner.id)

        async def read(since: int) -> ChangeFeed:
            async with session_maker() as session:
                tasks = TaskService(session, owner.id, max_tasks=max_tasks, provision_owner_again=erased)
                try:
                    return await tasks.changes(since, FEED_PAGE)
                except InvalidFieldError:
                    # The owner's revision went back below the stream's: erased, and provisioned afresh since.
                    raise AccountErasedError(owner.id) from None

        return read

    @asynccontextmanager
    async def _lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        if self.listener is not None:
            await self.listener.start(wait_seconds=self.settings.database_connect_timeout)
        signals = _EndStreamsOnSignals(self.hub, asyncio.get_running_loop())
        signals.install()
        try:
            yield
        finally:
            signals.uninstall()
            self.hub.close()
            if self.listener is not None:
                await self.listener.stop()


_Handler = Callable[[int, FrameType | None], Any] | int | None


class _EndStreamsOnSignals:
    """SIGTERM and SIGINT end every stream, then go on to the handler installed before (uvicorn's, which begins
    its graceful shutdown). Only the main thread can install signal handlers: elsewhere (an app run by a test
    client in a thread) this does nothing."""

    def __init__(self, hub: StreamHub, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self._loop = loop
        self._previous: dict[int, _Handler] = {}
        self._active = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SHUTDOWN_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        self._active = True

    def uninstall(self) -> None:
        self._active = False
        for sig, previous in self._previous.items():
            # Restored only if still ours: a handler installed after this one (another app in the process) keeps
            # calling this one, which now only passes the signal on.
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if self._active:
            # A signal handler runs between two bytecodes of whatever the loop was doing, the hub's own code
            # included: the streams are ended from the loop, at its next turn.
            self._loop.call_soon_threadsafe(self._hub.close)
        previous = self._previous.get(sig)
        if callable(previous):
            previous(sig, frame)
        elif previous != signal.SIG_IGN:
            # The default action (SIGTERM: terminate), as if this handler had never been installed.
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
