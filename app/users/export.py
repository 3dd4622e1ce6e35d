"""The caller's own data as one JSON document (GDPR article 20): ``{"user": {…}, "tasks": [every task]}``.

The document is written as it is read, in batches of :data:`EXPORT_BATCH` tasks, oldest first. Each batch is read in
a session of its own that goes back to the pool before the batch is sent. So neither the account nor a database
connection is held for the length of the download, however large the account and however slowly the client reads.
Batches follow each other by ``(created_at, id)``, which never changes: each task comes exactly once. A task changed
during the export comes in the state its batch read; one created during it may or may not come.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.tasks.repository import TaskRepository, TaskRow
from app.tasks.schemas import TaskRead

__all__ = ("EXPORT_BATCH", "AccountExport", "AccountRead", "export_document")

#: Tasks per batch: about 0.5 MB of JSON, one short query each.
EXPORT_BATCH: Final = 1000

_encoder = msgspec.json.Encoder()


class AccountRead(msgspec.Struct, kw_only=True):
    """The user as this service stores them (from their token's claims)."""

    id: str
    email: str | None
    name: str | None
    created_at: datetime


class AccountExport(msgspec.Struct, kw_only=True):
    """Everything stored for a user: the document ``GET /api/{user_id}/export`` streams."""

    user: AccountRead
    tasks: list[TaskRead]
    """Every task, oldest first, as the API shows it."""


async def export_document(
    user: AccountRead,
    first: Sequence[TaskRow],
    sessions: Callable[[], AsyncSession],
) -> AsyncIterator[bytes]:
    """The document's bytes, piece by piece: ``first`` is the first batch (read before the response began, so a
    database that cannot answer is a 503, not a broken download); the rest is read in ``sessions`` as it goes."""
    yield b'{"user":' + _encoder.encode(user) + b',"tasks":['
    batch, separator = first, b""
    while batch:
        yield separator + b",".join(_encoder.encode(TaskRead.from_row(task)) for task in batch)
        separator = b","
        if len(batch) < EXPORT_BATCH:
            break
        async with sessions() as session:
            batch = await TaskRepository(session, user.id).exported(batch[-1], EXPORT_BATCH)
    yield b"]}"
