"""signing keys: the secret list cursors are signed with, shared by every instance on the database

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 11:00:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The key itself is created by the first instance that needs it (app/signing.py), never by a migration:
    # a migration's output can end up in logs and in SQL scripts generated offline.
    op.create_table(
        "signing_keys",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_signing_keys")),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
