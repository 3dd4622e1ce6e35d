"""The tables. Constraints and indexes live here, next to the columns they protect."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

__all__ = (
    "DESCRIPTION_MAX_LENGTH",
    "IDEMPOTENCY_KEY_MAX_LENGTH",
    "TITLE_MAX_LENGTH",
    "USER_ID_MAX_LENGTH",
    "IdempotencyKey",
    "SigningKey",
    "Task",
    "TaskTombstone",
    "User",
    "utcnow",
)

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 1000
USER_ID_MAX_LENGTH = 255
EMAIL_MAX_LENGTH = 320
NAME_MAX_LENGTH = 255
IDEMPOTENCY_KEY_MAX_LENGTH = 255
POSITION_MAX_LENGTH = 64
#: Where the positions of a user's tasks start (the integer part of a position: 18 digits, fixed width).
FIRST_POSITION = 500_000_000_000_000_000


def utcnow() -> datetime:
    """The current time, timezone-aware UTC; every stored timestamp comes from here."""
    return datetime.now(UTC)


class User(DefaultBase):
    """An account, provisioned from the claims of its first valid token (there is no sign-up here)."""

    __tablename__ = "users"

    # Better Auth ids are 32 random alphanumerics (or UUIDs with generateId: "uuid"): a string key.
    id: Mapped[str] = mapped_column(String(USER_ID_MAX_LENGTH), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    name: Mapped[str | None] = mapped_column(String(NAME_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # How many tasks the user has: kept by database triggers on every insert and delete of a task (migration
    # 0003), so no code path can let it drift. The quota check on create reads it under this row's lock.
    task_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # The user's latest revision: every write to one of their tasks takes the next one, stamped by triggers
    # (migration 0004) in the writing statement itself. The change feed reads it as "where you are now".
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # The highest revision of a tombstone purged so far: a change feed asked for changes since an older
    # revision may have missed a deletion, so it answers 410 and the client syncs again from 0.
    purged_through: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # The integer part of the owner's first task position: a new task goes just below it (migration 0005).
    first_position: Mapped[int] = mapped_column(
        BigInteger, default=FIRST_POSITION, server_default=text(str(FIRST_POSITION))
    )


class Task(DefaultBase):
    """One to-do item, always owned by exactly one user."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(f"length(title) BETWEEN 1 AND {TITLE_MAX_LENGTH}", name="title_length"),
        CheckConstraint(
            f"description IS NULL OR length(description) <= {DESCRIPTION_MAX_LENGTH}",
            name="description_length",
        ),
        Index("ix_tasks_user_id_completed", "user_id", "completed"),
        # The list's orderings: newest first by default, with id as the tie-breaker that keeps paging stable.
        Index("ix_tasks_user_id_created_at", "user_id", "created_at", "id"),
        Index("ix_tasks_user_id_updated_at", "user_id", "updated_at", "id"),
        # The change feed: the owner's tasks changed after a revision.
        Index("ix_tasks_user_id_revision", "user_id", "revision"),
        # The manual order: unique per owner, so two tasks can never share a place.
        Index("ix_tasks_user_id_position", "user_id", "position", unique=True),
        Index("ix_tasks_user_id_due_at", "user_id", "due_at", "id"),
        Index("ix_tasks_user_id_priority", "user_id", "priority", "id"),
        # The search (`q`, ILIKE '%…%') on PostgreSQL: trigram indexes (pg_trgm). SQLite scans the owner's rows,
        # at most MAX_TASKS_PER_USER of them.
        Index("ix_tasks_title_trgm", "title", postgresql_using="gin", postgresql_ops={"title": "gin_trgm_ops"}).ddl_if(
            dialect="postgresql"
        ),
        Index(
            "ix_tasks_description_trgm",
            "description",
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[UUID] = mapped_column(GUID(length=16), primary_key=True, default=uuid4)
    user_id: Mapped[str] = mapped_column(ForeignKey(User.id, ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX_LENGTH))
    completed: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # Bumped by every change; the ETag clients send back in If-Match to avoid overwriting each other.
    version: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    # The owner's revision at this task's last change (stamped by triggers, see User.revision).
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    due_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    # 0 none, 1 low, 2 medium, 3 high: stored as a number so that it sorts in that order.
    priority: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))
    # The user's manual order (ascending): set by the insert trigger for a new task (first), by a move otherwise.
    position: Mapped[str | None] = mapped_column(String(POSITION_MAX_LENGTH))


class TaskTombstone(DefaultBase):
    """What is left of a deleted task for the change feed: written by a trigger on every task delete, purged
    after SYNC_TOMBSTONE_RETENTION_DAYS."""

    __tablename__ = "task_tombstones"
    __table_args__ = (
        Index("ix_task_tombstones_user_id_revision", "user_id", "revision"),
        Index("ix_task_tombstones_deleted_at", "deleted_at"),
    )

    task_id: Mapped[UUID] = mapped_column(GUID(length=16), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey(User.id, ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class IdempotencyKey(DefaultBase):
    """A write made with an ``Idempotency-Key``: the request's fingerprint and the response it got, stored in
    the write's own transaction so a retry replays it instead of writing again."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(ForeignKey(User.id, ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX_LENGTH), primary_key=True)
    # SHA-256 (hex) of method, path and body: the same key with another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)


class SigningKey(DefaultBase):
    """A secret the service signs its own tokens with (list cursors), stored here so that every instance on
    the database shares it without configuration. Deleting a row rotates that key: what it signed stops verifying."""

    __tablename__ = "signing_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
