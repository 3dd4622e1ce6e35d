"""sync: per-user revisions stamped by triggers, task tombstones, idempotency keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 07:00:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Every write to a task takes the owner's next revision from users.revision, in the writing statement itself:
# the UPDATE of the owner's row locks it until the write commits, so one user's revisions commit in order
# (a reader who saw revision N never later finds a change ≤ N) while other users' writes never wait. Row-level,
# so each task of a bulk statement gets a revision of its own. A delete leaves a tombstone, unless the owner is
# being erased (their row is already gone: the cascade takes the tombstones too). No NOTIFY here: a transaction
# that notifies takes a database-wide lock at commit, which serialised every write (pgbench: 1 650 → 4 100 single
# task updates/s without it); the service announces changes itself, batched (app/sync/listener.py).
_POSTGRES = (
    """CREATE FUNCTION tasks_stamp_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET revision = users.revision + 1 WHERE id = NEW.user_id RETURNING users.revision INTO NEW.revision;
    RETURN NEW;
END $$""",
    """CREATE FUNCTION tasks_record_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stamped bigint;
BEGIN
    UPDATE users SET revision = users.revision + 1 WHERE id = OLD.user_id RETURNING users.revision INTO stamped;
    IF FOUND THEN
        INSERT INTO task_tombstones (task_id, user_id, revision, deleted_at)
        VALUES (OLD.id, OLD.user_id, stamped, clock_timestamp());
    END IF;
    RETURN OLD;
END $$""",
    """CREATE TRIGGER tasks_revision BEFORE INSERT OR UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_stamp_revision()""",
    """CREATE TRIGGER tasks_tombstone AFTER DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_record_tombstone()""",
)
# SQLite has one writer at a time, so ordering comes free; its triggers cannot assign NEW, so they stamp the
# row after the fact (the column list keeps the stamping UPDATE from firing the trigger again).
_STAMP = """UPDATE users SET revision = revision + 1 WHERE id = NEW.user_id;
        UPDATE tasks SET revision = (SELECT revision FROM users WHERE id = NEW.user_id) WHERE id = NEW.id;"""
_SQLITE = (
    f"CREATE TRIGGER tasks_revision_insert AFTER INSERT ON tasks BEGIN {_STAMP} END",
    "CREATE TRIGGER tasks_revision_update AFTER UPDATE OF title, description, completed, created_at, updated_at, "
    f"version ON tasks BEGIN {_STAMP} END",
    """CREATE TRIGGER tasks_tombstone AFTER DELETE ON tasks
    WHEN EXISTS (SELECT 1 FROM users WHERE id = OLD.user_id) BEGIN
        UPDATE users SET revision = revision + 1 WHERE id = OLD.user_id;
        INSERT INTO task_tombstones (task_id, user_id, revision, deleted_at)
        VALUES (OLD.id, OLD.user_id, (SELECT revision FROM users WHERE id = OLD.user_id),
                strftime('%Y-%m-%d %H:%M:%f000', 'now'));
    END""",
)


def upgrade() -> None:
    op.add_column("users", sa.Column("revision", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    op.add_column("users", sa.Column("purged_through", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    op.add_column("tasks", sa.Column("revision", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    # Existing tasks get revisions 1..n per owner in the order they last changed; the owner's revision is n.
    op.execute(
        """UPDATE tasks SET revision = ranked.n
        FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY updated_at, id) AS n FROM tasks) AS ranked
        WHERE tasks.id = ranked.id"""
    )
    op.execute("UPDATE users SET revision = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id)")
    op.create_index("ix_tasks_user_id_revision", "tasks", ["user_id", "revision"])
    op.create_table(
        "task_tombstones",
        sa.Column("task_id", GUID(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_task_tombstones_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_tombstones")),
    )
    op.create_index("ix_task_tombstones_user_id_revision", "task_tombstones", ["user_id", "revision"])
    op.create_index("ix_task_tombstones_deleted_at", "task_tombstones", ["deleted_at"])
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("expires_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_idempotency_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    for statement in _POSTGRES if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tasks_tombstone ON tasks")
        op.execute("DROP TRIGGER tasks_revision ON tasks")
        op.execute("DROP FUNCTION tasks_record_tombstone()")
        op.execute("DROP FUNCTION tasks_stamp_revision()")
    else:
        op.execute("DROP TRIGGER tasks_tombstone")
        op.execute("DROP TRIGGER tasks_revision_update")
        op.execute("DROP TRIGGER tasks_revision_insert")
    op.drop_table("idempotency_keys")
    op.drop_table("task_tombstones")
    op.drop_index("ix_tasks_user_id_revision", table_name="tasks")
    # Plain ALTER TABLE, not batch mode: on SQLite a batch would rebuild the tables and drop their triggers.
    op.execute("ALTER TABLE tasks DROP COLUMN revision")
    op.execute("ALTER TABLE users DROP COLUMN purged_through")
    op.execute("ALTER TABLE users DROP COLUMN revision")
