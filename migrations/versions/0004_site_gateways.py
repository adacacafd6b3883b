"""Site gateways: every gateway using the registry and its last heartbeat.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``site_gateways``."""
    op.create_table(
        "site_gateways",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_every", sa.Double(), nullable=False),
        sa.Column("stopped_at", sa.Double(), nullable=False, server_default="0"),
    )
    op.create_index("ix_site_gateways_heartbeat_at", "site_gateways", ["heartbeat_at"])


def downgrade() -> None:
    """Drop ``site_gateways``."""
    op.drop_index("ix_site_gateways_heartbeat_at", "site_gateways")
    op.drop_table("site_gateways")
