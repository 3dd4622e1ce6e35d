"""task model: due dates, priority and a manual order kept by the server

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 08:40:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Positions are 18-digit integer parts (fixed width, so text order is number order) with an optional fraction for
# tasks moved between two neighbours: "500000000000000000", "499999999999998976", "5000000000000000005". A new task
# goes first: the owner's row keeps the lowest integer part in use (users.first_position), and the insert trigger
# takes the next one below it under the owner's row lock, so concurrent creates never share a position.
FIRST = 500_000_000_000_000_000
GAP = 1024

_POSTGRES = (
    """CREATE OR REPLACE FUNCTION tasks_stamp_revision() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first bigint;
BEGIN
    IF TG_OP = 'INSERT' AND NEW.position IS NULL THEN
        UPDATE users SET revision = users.revision + 1, first_position = users.first_position - 1024
        WHERE id = NEW.user_id RETURNING users.revision, users.first_position INTO NEW.revision, first;
        NEW.position := lpad(first::text, 18, '0');
    ELSE
        UPDATE users SET revision = users.revision + 1 WHERE id = NEW.user_id
        RETURNING users.revision INTO NEW.revision;
    END IF;
    RETURN NEW;
END $$""",
)
_SQLITE_INSERT = """CREATE TRIGGER tasks_revision_insert AFTER INSERT ON tasks BEGIN
        UPDATE users SET revision = revision + 1,
            first_position = first_position - (CASE WHEN NEW.position IS NULL THEN 1024 ELSE 0 END)
        WHERE id = NEW.user_id;
        UPDATE tasks SET revision = (SELECT revision FROM users WHERE id = NEW.user_id),
            position = coalesce(NEW.position, (SELECT printf('%018d', first_position) FROM users WHERE id = NEW.user_id))
        WHERE id = NEW.id;
    END"""
_SQLITE_INSERT_BEFORE = """CREATE TRIGGER tasks_revision_insert AFTER INSERT ON tasks BEGIN
        UPDATE users SET revision = revision + 1 WHERE id = NEW.user_id;
        UPDATE tasks SET revision = (SELECT revision FROM users WHERE id = NEW.user_id) WHERE id = NEW.id;
    END"""
_POSTGRES_BEFORE = """CREATE OR REPLACE FUNCTION tasks_stamp_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET revision = users.revision + 1 WHERE id = NEW.user_id RETURNING users.revision INTO NEW.revision;
    RETURN NEW;
END $$"""


def upgrade() -> None:
    op.add_column("tasks", sa.Column("due_at", DateTimeUTC(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False))
    op.add_column("tasks", sa.Column("position", sa.String(length=64), nullable=True))
    op.add_column(
        "users", sa.Column("first_position", sa.BigInteger(), server_default=sa.text(str(FIRST)), nullable=False)
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    # Existing tasks: newest first, GAP apart, below FIRST; each owner's first_position is their lowest.
    padded = (
        "lpad(CAST(:first - ranked.n * :gap AS text), 18, '0')"
        if postgresql
        else "printf('%018d', :first - ranked.n * :gap)"
    )
    numbers = {"first": FIRST, "gap": GAP}
    op.execute(
        sa.text(
            "UPDATE tasks SET position = " + padded + " FROM (SELECT id, row_number() OVER "  # noqa: S608 - one of two literal expressions
            "(PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS n FROM tasks) AS ranked "
            "WHERE tasks.id = ranked.id"
        ).bindparams(**numbers)
    )
    op.execute(
        sa.text(
            "UPDATE users SET first_position = :first - :gap * (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id)"
        ).bindparams(**numbers)
    )
    if postgresql:
        for statement in _POSTGRES:
            op.execute(statement)
    else:
        op.execute("DROP TRIGGER tasks_revision_insert")
        op.execute(_SQLITE_INSERT)
    op.create_index("ix_tasks_user_id_position", "tasks", ["user_id", "position"], unique=True)
    op.create_index("ix_tasks_user_id_due_at", "tasks", ["user_id", "due_at", "id"])
    op.create_index("ix_tasks_user_id_priority", "tasks", ["user_id", "priority", "id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_user_id_priority", table_name="tasks")
    op.drop_index("ix_tasks_user_id_due_at", table_name="tasks")
    op.drop_index("ix_tasks_user_id_position", table_name="tasks")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_BEFORE)
    else:
        op.execute("DROP TRIGGER tasks_revision_insert")
        op.execute(_SQLITE_INSERT_BEFORE)
    # Plain ALTER TABLE, not batch mode: on SQLite a batch would rebuild the tables and drop their triggers.
    op.execute("ALTER TABLE users DROP COLUMN first_position")
    op.execute("ALTER TABLE tasks DROP COLUMN position")
    op.execute("ALTER TABLE tasks DROP COLUMN priority")
    op.execute("ALTER TABLE tasks DROP COLUMN due_at")
