"""Approvals (docs/approvals.md): the `approvals` table, one row per call held for a human approver.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(400), nullable=False),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("member", sa.String(64), nullable=False),
        sa.Column("upstream", sa.String(64), nullable=False),
        sa.Column("tool", sa.String(400), nullable=False),
        sa.Column("arguments", sa.JSON, nullable=False),
        sa.Column("arguments_hash", sa.String(64), nullable=False),
        sa.Column("grant_label", sa.String(400), nullable=False),
        sa.Column("approvers", sa.String(400), nullable=False),
        sa.Column("self_approval", sa.Boolean, nullable=False),
        sa.Column("valid_seconds", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("decided_by", sa.String(400)),
        sa.Column("decided_at", sa.Float),
        sa.Column("valid_until", sa.Float),
    )
    op.create_index("ix_approvals_call", "approvals", ["principal", "server", "tool", "arguments_hash"])
    op.create_index("ix_approvals_expires", "approvals", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_approvals_expires", table_name="approvals")
    op.drop_index("ix_approvals_call", table_name="approvals")
    op.drop_table("approvals")
