"""Tool pins (docs/pinning.md): per (upstream, tool) the approved definition and a changed one waiting.

The table is copied here, not imported from catalog/pin_store.py: a migration is history and must not
change when the code's table does.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import JSON, Column, Float, String

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_pins",
        Column("upstream", String(64), primary_key=True),
        Column("tool", String(400), primary_key=True),
        Column("approved_hash", String(64), nullable=False),
        Column("approved", JSON, nullable=False),
        Column("approved_at", Float, nullable=False),
        Column("approved_by", String(400), nullable=False),
        Column("pending_hash", String(64)),
        Column("pending", JSON),
        Column("seen_at", Float),
    )


def downgrade() -> None:
    op.drop_table("tool_pins")
