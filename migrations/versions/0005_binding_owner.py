"""Owners of bindings: the site gateway that holds each binding's flow, and the URI
the other gateways of the site reach each gateway at.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``bindings.owner`` and ``site_gateways.uri``."""
    with op.batch_alter_table("bindings") as batch:
        batch.add_column(sa.Column("owner", sa.String(32), nullable=False, server_default=""))
    with op.batch_alter_table("site_gateways") as batch:
        batch.add_column(sa.Column("uri", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("site_gateways") as batch:
        batch.drop_column("uri")
    with op.batch_alter_table("bindings") as batch:
        batch.drop_column("owner")
