"""One table for every durable record.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_KEY = sa.String(512).with_variant(sa.String(512, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "broker_records",
        sa.Column("kind", sa.String(40), primary_key=True),
        sa.Column("account", sa.String(32), primary_key=True),
        sa.Column("key", _KEY, primary_key=True),
        sa.Column("parent_kind", sa.String(40), nullable=True),
        sa.Column("parent_key", _KEY, nullable=True),
        sa.Column("lookup", sa.String(512), nullable=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.UniqueConstraint("kind", "lookup", name="uq_broker_records_lookup"),
    )
    op.create_index(
        "ix_broker_records_parent",
        "broker_records",
        ["account", "parent_kind", "parent_key", "kind"],
    )


def downgrade() -> None:
    op.drop_index("ix_broker_records_parent", table_name="broker_records")
    op.drop_table("broker_records")
