"""News of changes made by any process, through PostgreSQL: ``LISTEN todo_task_changes`` on one connection.

Each process announces the changes it commits (``app.state.announce_change``, called by the task service after
each commit): the streams of this process are woken at once, and the user ids are sent to the other processes as
``NOTIFY todo_task_changes, '["<user id>", …]'``, batched over :data:`NOTIFY_BATCH_SECONDS` on the listening
connection itself. Not one NOTIFY per write, nor from a trigger: a transaction that notifies takes a database-wide
lock while it commits, so notifying with every write serialised all writes (pgbench, single-task updates at 16
clients: 1 650/s with a NOTIFY in the trigger, 4 100/s without).

The connection is a direct one (``DATABASE_URL_UNPOOLED`` when set): a transaction-mode pooler hands each
transaction another server connection, so a ``LISTEN`` through it listens nowhere. It is not from the request
pool, which it would hold forever. When it drops (PostgreSQL restarted, a failover, ``pg_terminate_backend``, a
NAT that forgot it, noticed by a ping), the notifications sent meanwhile are lost: once listening again, every
stream is woken and catches up from the change feed, so nothing is. A process that dies between a commit and its
batch leaves other instances' streams to find the change at their next heartbeat, when each reads the feed too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.db import create_engine
from app.sync.hub import StreamHub

__all__ = ("CHANNEL", "LISTENER_APPLICATION_NAME", "ChangeListener", "notify_payloads")

logger = logging.getLogger(__name__)

#: The channel the triggers notify (db/migrations/versions/2026-12-05_0004_sync.py).
CHANNEL = "todo_task_changes"
#: How the listening connection shows in ``pg_stat_activity``, followed by ``-<pid>`` of its process.
LISTENER_APPLICATION_NAME = "todo-api-listener"
#: A silent connection is pinged this often: a peer that vanished without a word is only noticed by writing to it.
PING_INTERVAL_SECONDS = 15.0
PING_TIMEOUT_SECONDS = 5.0
#: Reconnection backoff: the first retry at once (a restarted server is usually back), then doubling to the cap.
FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 5.0
#: Changes committed within this window go to the other processes in one NOTIFY.
NOTIFY_BATCH_SECONDS = 0.02
#: A NOTIFY payload must stay under 8 000 bytes: user ids are sent in batches of at most this many characters.
NOTIFY_PAYLOAD_CHARACTERS = 7000


class ChangeListener:
    """Keeps one ``LISTEN`` connection open, handing each notified user id to the hub; reconnects with backoff."""

    def __init__(self, settings: Settings, hub: StreamHub) -> None:
        self.hub = hub
        self._settings = settings.migration_settings
        # A connection of its own, opened and closed here (NullPool): never one of the request pool's.
        self._engine = create_engine(self._settings, pooled=False)
        self._task: asyncio.Task[None] | None = None
        self._driver: Any = None  # the asyncpg connection while listening
        self._own_pid: int | None = None
        self._pending: set[str] = set()
        self._has_pending = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._listening = False
        self._attempted = asyncio.Event()
        self._interrupted = asyncio.Event()
        self._stopping = False
        if self._settings.database.pooler:
            logger.warning(
                "Event streams LISTEN on DATABASE_URL, which goes through a pooler where LISTEN does not work: "
                "set DATABASE_URL_UNPOOLED to the direct URL, or streams will not hear of changes."
            )

    @property
    def listening(self) -> bool:
        """Whether notifications are being received now."""
        return self._listening

    async def start(self, wait_seconds: float) -> None:
        """Start listening in the background; wait up to ``wait_seconds`` for the first attempt to connect, so
        streams opened once the app is up hear of every change. A failure is logged and retried, never fatal."""
        self._task = asyncio.create_task(self._run(), name="todo-change-listener")
        self._publisher = asyncio.create_task(self._publish_batches(), name="todo-change-publisher")
        try:
            async with asyncio.timeout(wait_seconds):
                await self._attempted.wait()
        except TimeoutError:
            logger.warning("The LISTEN connection is not up after %g s; streams start without it", wait_seconds)

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        self._interrupted.set()
        if self._publisher is not None:
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
            self._publisher = None
        if self._task is not None:
            await self._task
            self._task = None
        await self._engine.dispose()

    def publish(self, user_id: str) -> None:
        """A change of ``user_id``'s tasks has committed: wake this process's streams now, the others' shortly."""
        self.hub.announce(user_id)
        self._pending.add(user_id)
        self._has_pending.set()

    async def _publish_batches(self) -> None:
        while True:
            await self._has_pending.wait()
            await asyncio.sleep(NOTIFY_BATCH_SECONDS)  # gather what else commits meanwhile into the same NOTIFY
            self._has_pending.clear()
            users, self._pending = sorted(self._pending), set()
            driver = self._driver
            if driver is None:
                # Not listening now: the other processes catch up when they next read the feed.
                continue
            try:
                for payload in notify_payloads(users):
                    await driver.execute("SELECT pg_notify($1, $2)", CHANNEL, payload, timeout=PING_TIMEOUT_SECONDS)
            except Exception as exc:
                logger.warning("Telling other processes of %d users' changes failed: %s", len(users), _first_line(exc))

    async def _run(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while not self._stopping:
            try:
                await self._listen()
                delay = FIRST_RETRY_SECONDS  # it was up: the next drop is retried at once again
            except Exception as exc:
                # Whatever the failure, the listener must outlive it; the message only (a traceback says nothing
                # an operator can act on, and the database's own log has the details).
                logger.warning("The LISTEN connection failed: %s", _first_line(exc))
            finally:
                self._listening = False
                self._attempted.set()
            await self._back_off(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _back_off(self, delay: float) -> None:
        """Wait ``delay`` seconds (less a random part, so that instances do not reconnect in step), or until
        :meth:`stop`."""
        if self._stopping:
            return
        logger.info("Reconnecting the LISTEN connection in %.2g s", delay)
        self._interrupted.clear()
        try:
            async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):  # noqa: S311 - jitter, not secrecy
                await self._interrupted.wait()
        except TimeoutError:
            pass

    async def _listen(self) -> None:
        """Listen until the connection is lost or :meth:`stop` is called."""
        self._interrupted.clear()
        lost = False

        def on_termination(_connection: Any) -> None:
            nonlocal lost
            lost = True
            self._interrupted.set()

        connection = await self._engine.connect()
        try:
            driver: Any = (await connection.get_raw_connection()).driver_connection  # an asyncpg.Connection
            driver.add_termination_listener(on_termination)
            # Straight to asyncpg, outside SQLAlchemy's transactions: LISTEN inside a transaction waits for its
            # commit to take effect.
            await driver.execute(f"SET application_name = '{LISTENER_APPLICATION_NAME}-{os.getpid()}'")
            await driver.add_listener(CHANNEL, self._notified)
            self._own_pid = driver.get_server_pid()
            self._driver = driver
            self._listening = True
            self._attempted.set()
            logger.info("Listening for task changes on %s", CHANNEL)
            # Whatever committed while nobody listened is in the change feed: every stream reads it now.
            self.hub.wake_all()
            while not lost and not self._stopping:
                try:
                    async with asyncio.timeout(PING_INTERVAL_SECONDS):
                        await self._interrupted.wait()
                except TimeoutError:
                    await driver.execute("SELECT 1", timeout=PING_TIMEOUT_SECONDS)
            if lost:
                logger.warning("The LISTEN connection was lost; reconnecting, and every stream catches up")
        finally:
            self._driver = None
            await _release(connection, healthy=not lost and self._stopping)

    def _notified(self, _connection: Any, pid: int, _channel: str, payload: str) -> None:
        if pid == self._own_pid:
            return  # this process's own batch: its streams were woken when the changes committed
        try:
            users = json.loads(payload)
        except ValueError:
            users = [payload]  # a NOTIFY by hand (an operator's): one user id, as is
        for user in users if isinstance(users, list) else [payload]:
            self.hub.announce(str(user))


def notify_payloads(users: list[str]) -> list[str]:
    """``users`` as JSON arrays, each short enough for one NOTIFY."""
    payloads: list[str] = []
    batch: list[str] = []
    size = 2
    for user in users:
        encoded = len(json.dumps(user)) + 1
        if batch and size + encoded > NOTIFY_PAYLOAD_CHARACTERS:
            payloads.append(json.dumps(batch))
            batch, size = [], 2
        batch.append(user)
        size += encoded
    if batch:
        payloads.append(json.dumps(batch))
    return payloads


async def _release(connection: AsyncConnection, *, healthy: bool) -> None:
    """Close the listening connection; a broken one is discarded without the rollback a close would try on it
    (which would fail, and be logged with a traceback)."""
    try:
        if healthy:
            await connection.close()
        else:
            await connection.invalidate()
            await connection.close()
    except Exception as exc:
        logger.info("Closing the LISTEN connection failed: %s", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
