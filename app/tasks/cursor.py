"""List cursors: where a walk through a task listing stands, opaque to clients and signed so none can be forged.

A cursor records the sort key and id of the last task the walk returned in order, and the owner's revision
through which changes *behind* that point have been returned (the walk itself is in
:meth:`app.tasks.repository.TaskRepository.walk`). Its signature (HMAC-SHA256, truncated to 128 bits) covers
the owner, the sort and the filters of the listing that issued it, so a cursor edited by hand, or replayed on
another listing or by another user, is refused (422) rather than read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

import msgspec

from app.errors import InvalidFieldError

__all__ = ("CURSOR_KEY", "CURSOR_PATTERN", "CURSOR_VERSION", "MAX_CURSOR_LENGTH", "Cursor", "CursorCodec", "SortKey")

#: The name of the signing key cursors are signed with (app/signing.py).
CURSOR_KEY: Final = "list-cursor"
#: The alphabet of a cursor: unpadded base64url.
CURSOR_PATTERN: Final = "^[A-Za-z0-9_-]+$"

#: The layout below; a cursor of another layout (from an older release, say) is refused like a tampered one.
CURSOR_VERSION: Final = 1
#: 128 bits of HMAC-SHA256: forging one takes 2**128 guesses, each a request.
MAC_BYTES: Final = 16
#: The longest cursor issued (a 200-character title of 4-byte characters as the key) with room to spare.
MAX_CURSOR_LENGTH: Final = 2048

SortKey = datetime | str | int | None
"""A task's value of the sort's key: a timestamp, a lowercased title, a position, a priority rank, or ``None``
(no due date)."""

#: What each sort's key may hold; ``None`` only where the column is nullable.
_KEY_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "created_at": (datetime,),
    "updated_at": (datetime,),
    "title": (str,),
    "position": (str,),
    "due_at": (datetime, type(None)),
    "priority": (int,),
}
_REFUSED: Final = "Not a cursor of this listing (edited, or issued for other parameters); list again without it."


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a walk stands."""

    #: The sort key of the last task returned in order (the walk resumes after it, then after ``task_id``).
    key: SortKey
    task_id: UUID
    #: Changes up to this revision of the owner's, to tasks behind the key, have been returned.
    seen_through: int
    #: The walk's "now": ``overdue`` means overdue as of the first page, so the listing holds still.
    now: datetime


class _Layout(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    key: str | int | None
    task_id: UUID
    seen_through: int
    now: datetime


class CursorCodec:
    """Encodes and verifies the cursors of one listing: one owner, one sort, one set of filters (``listing``)."""

    def __init__(self, secret: bytes, *, owner_id: str, sort: str, listing: bytes) -> None:
        self._field = _KEY_TYPES[sort.removeprefix("-")]
        # Everything the cursor is only valid for goes into the MAC, not into the cursor: nothing to compare.
        context = b"\0".join((b"todo-api list cursor", owner_id.encode(), sort.encode(), listing))
        self._mac = hmac.new(secret, context, hashlib.sha256)

    def encode(self, cursor: Cursor) -> str:
        key = cursor.key.isoformat() if isinstance(cursor.key, datetime) else cursor.key
        payload = msgspec.json.encode(_Layout(CURSOR_VERSION, key, cursor.task_id, cursor.seen_through, cursor.now))
        token = base64.urlsafe_b64encode(payload + self._sign(payload))
        return token.rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> Cursor:
        """The cursor ``token`` stands for; 422 naming ``cursor`` if it was not issued for this listing."""
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise _refused() from None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, self._sign(payload)):
            raise _refused()
        # Signed by this service, so well-formed unless it is of another layout (another release's, say).
        try:
            layout = msgspec.json.decode(payload, type=_Layout)
            key = self._key(layout.key)
        except (msgspec.ValidationError, ValueError):
            raise _refused() from None
        if layout.version != CURSOR_VERSION or layout.now.tzinfo is None:
            raise _refused()
        return Cursor(key, layout.task_id, layout.seen_through, layout.now)

    def _sign(self, payload: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(payload)
        return mac.digest()[:MAC_BYTES]

    def _key(self, value: str | int | None) -> SortKey:
        if datetime in self._field and isinstance(value, str):
            moment = msgspec.convert(value, datetime)
            if moment.tzinfo is None:
                raise ValueError(value)
            return moment
        if isinstance(value, bool) or not isinstance(value, self._field):
            raise ValueError(value)
        return value


def _refused() -> InvalidFieldError:
    return InvalidFieldError("cursor", _REFUSED)
