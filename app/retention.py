"""Forgetting on schedule: tombstones older than SYNC_TOMBSTONE_RETENTION_DAYS and expired idempotency keys.

:func:`purge_tombstones` raises each affected user's ``purged_through`` to the newest revision it removes, in the
same transaction as the removal: a change feed reads both in one snapshot, so a client asking for changes since
an older revision gets 410 (sync again from 0) instead of a feed silently missing a deletion.
:class:`RetentionJob` runs the purges every SYNC_PURGE_INTERVAL_SECONDS in each process; on PostgreSQL a
transaction-scoped advisory lock lets one process at a time do the work while the others skip the round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, case, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.models import TaskTombstone, User, utcnow

__all__ = ("PURGE_LOCK_KEY", "RetentionJob", "purge_tombstones")

logger = logging.getLogger(__name__)

#: ``pg_try_advisory_xact_lock`` key of a purge round: any fixed 64-bit number (migrations use another).
PURGE_LOCK_KEY = 0x70D0_0A91_0002

_TOMBSTONES = cast("Table", TaskTombstone.__table__)
_USERS = cast("Table", User.__table__)

Purge = Callable[[AsyncSession, datetime], Awaitable[int]]


async def purge_tombstones(session: AsyncSession, cutoff: datetime) -> int:
    """Remove tombstones of deletions before ``cutoff``, raising each owner's ``purged_through`` first, in one
    transaction; how many went."""
    expired = _TOMBSTONES.c.deleted_at < cutoff
    newest = (
        select(_TOMBSTONES.c.user_id, func.max(_TOMBSTONES.c.revision).label("through"))
        .where(expired)
        .group_by(_TOMBSTONES.c.user_id)
        .subquery("newest")
    )
    raise_mark = (
        update(_USERS)
        .where(_USERS.c.id == newest.c.user_id)
        .values(
            purged_through=case(
                (_USERS.c.purged_through > newest.c.through, _USERS.c.purged_through), else_=newest.c.through
            )
        )
    )
    async with transaction(session):
        await session.execute(raise_mark)
        removed = await session.execute(delete(_TOMBSTONES).where(expired).returning(_TOMBSTONES.c.task_id))
        return len(removed.all())


class RetentionJob:
    """Runs each purge every ``interval`` seconds, in the background of one process, until stopped.

    ``purges`` pairs each purge with its retention: a purge is given ``now - retention`` as its cutoff.
    """

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        purges: list[tuple[Purge, timedelta]],
        interval: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.purges = purges
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def run_once(self) -> dict[str, int] | None:
        """One round of every purge: removed rows per purge, or ``None`` if another process holds the round."""
        now = self.clock()
        removed: dict[str, int] = {}
        async with self.sessions() as session, transaction(session):
            if not await _take_round(session):
                return None
            for purge, retention in self.purges:
                removed[purge.__name__] = await purge(session, now - retention)
        return removed

    def start(self) -> None:
        """Start the rounds in the background (the first right away)."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        """Stop the rounds. A round under way is let finish (it is short): cancelled, it could leave a database
        connection open mid-handshake, with nothing left to close it."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                removed = await self.run_once()
                if removed and any(removed.values()):
                    logger.info("Purged expired sync data: %s", removed)
            except Exception:
                # Retried next round; a database outage must not end the job for the life of the process.
                logger.exception("Purging expired sync data failed; retrying in %g s", self.interval)
            try:
                async with asyncio.timeout(self.interval):
                    await self._stopping.wait()
            except TimeoutError:
                pass


async def _take_round(session: AsyncSession) -> bool:
    bind = session.bind
    if bind is None or bind.dialect.name != "postgresql":
        return True  # the embedded SQLite belongs to one process
    locked = await session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PURGE_LOCK_KEY})
    return bool(locked.scalar_one())
