"""The service's own signing secrets (list cursors are signed with one).

Kept in the database (``signing_keys``), so every instance on it signs and verifies alike with nothing to
configure: the first instance to need a key creates it, the others read it. Each process reads a key once.
Deleting a key's row rotates it: what the old key signed stops verifying (a cursor then gets its 422, and the
client starts its listing again), once the processes restart.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Final, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.models import SigningKey, utcnow

__all__ = ("KEY_BYTES", "SigningKeys")

#: 256 bits: the size of HMAC-SHA256's block of security.
KEY_BYTES: Final = 32
_TABLE = cast("Table", SigningKey.__table__)


class SigningKeys:
    """The secrets by name, read (or created) through the first session that asks, then kept for the process."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._lock = asyncio.Lock()

    async def get(self, session: AsyncSession, name: str) -> bytes:
        key = self._keys.get(name)
        if key is not None:
            return key
        async with self._lock:
            if name not in self._keys:
                self._keys[name] = await _read_or_create(session, name)
            return self._keys[name]


async def _read_or_create(session: AsyncSession, name: str) -> bytes:
    table = _TABLE
    values = {"name": name, "secret": secrets.token_bytes(KEY_BYTES), "created_at": utcnow()}
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    create = insert(table).values(values).on_conflict_do_nothing(index_elements=["name"])
    # Two instances creating the key at once: one insert wins, and both read the winner's secret.
    async with transaction(session):
        connection = await session.connection()
        await connection.execute(create)
        secret = (await connection.execute(select(table.c.secret).where(table.c.name == name))).scalar_one()
    return bytes(secret)
