"""Approval gates on grants made through the admin API (docs/approvals.md): five nullable columns on `grants`.
Existing rows get nulls, which read as "no gate" (and the gate's defaults).

A column already there is left alone: a database adopted by the baseline may have been made by code that
already declared them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import JSON, Boolean, Column, Float, String

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _columns() -> list[Column[object]]:
    return [
        Column("require_approval", JSON),
        Column("approvers", String(400)),
        Column("approval_timeout_seconds", Float),
        Column("approval_valid_seconds", Float),
        Column("self_approval", Boolean),
    ]


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("grants")}
    for column in _columns():
        if column.name not in present:
            op.add_column("grants", column)


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
