"""task quota and indexed search: users.task_count kept by triggers, trigram indexes for `q` on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 18:30:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The count follows every insert and delete of a task, whichever statement (or cascade, or operator) makes
# it: the quota check on create reads it under the owner's row lock instead of counting the owner's tasks.
# Statement-level on PostgreSQL, so deleting many tasks at once updates each owner's row once.
_POSTGRES_TRIGGERS = (
    """CREATE FUNCTION tasks_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET task_count = users.task_count + added.n
    FROM (SELECT user_id, count(*) AS n FROM inserted GROUP BY user_id) AS added
    WHERE users.id = added.user_id;
    RETURN NULL;
END $$""",
    """CREATE FUNCTION tasks_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET task_count = users.task_count - removed.n
    FROM (SELECT user_id, count(*) AS n FROM deleted GROUP BY user_id) AS removed
    WHERE users.id = removed.user_id;
    RETURN NULL;
END $$""",
    """CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_inserted()""",
    """CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_deleted()""",
)
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
        UPDATE users SET task_count = task_count + 1 WHERE id = NEW.user_id;
    END""",
    """CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
        UPDATE users SET task_count = task_count - 1 WHERE id = OLD.user_id;
    END""",
)


def upgrade() -> None:
    op.add_column("users", sa.Column("task_count", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.execute("UPDATE users SET task_count = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id)")
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES_TRIGGERS:
            op.execute(statement)
        # `q` is ILIKE '%…%' on title and description: a B-tree cannot serve it, trigram GIN indexes can.
        # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it, on Neon too.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX IF NOT EXISTS ix_tasks_title_trgm ON tasks USING gin (title gin_trgm_ops)")
        op.execute("CREATE INDEX IF NOT EXISTS ix_tasks_description_trgm ON tasks USING gin (description gin_trgm_ops)")
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_tasks_description_trgm")
        op.execute("DROP INDEX ix_tasks_title_trgm")
        # The extension stays: other objects of the database may use it, and it costs nothing unused.
        op.execute("DROP TRIGGER tasks_count_delete ON tasks")
        op.execute("DROP TRIGGER tasks_count_insert ON tasks")
        op.execute("DROP FUNCTION tasks_count_deleted()")
        op.execute("DROP FUNCTION tasks_count_inserted()")
    else:
        op.execute("DROP TRIGGER tasks_count_delete")
        op.execute("DROP TRIGGER tasks_count_insert")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("task_count")
