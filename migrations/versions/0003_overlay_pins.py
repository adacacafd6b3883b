"""Overlay trust-on-first-use pins: the certificate first seen signing for a domain.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``overlay_pins``."""
    op.create_table(
        "overlay_pins",
        sa.Column("domain", sa.String(), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("first_seen", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    """Drop ``overlay_pins``."""
    op.drop_table("overlay_pins")
