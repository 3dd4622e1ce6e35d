"""task version: a counter bumped by every change, behind ETag and If-Match

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:40:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows start at version 1; the server default fills them in one statement on both backends.
    op.add_column("tasks", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("version")
