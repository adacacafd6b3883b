"""Initial registry schema: bindings, users, overlay_nodes, registry_changes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain INTEGER on SQLite so that it aliases the rowid and is auto-assigned.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the four registry tables."""
    op.create_table(
        "bindings",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("aor", sa.String(), nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("expires", sa.Double(), nullable=False),
        sa.Column("q", sa.Double(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("cseq", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("received", sa.String(), nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("reg_id", sa.Integer(), nullable=False),
        sa.Column("user_agent", sa.String(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("registered_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("aor", "contact", name="uq_bindings_aor_contact"),
    )
    op.create_index("ix_bindings_expires", "bindings", ["expires"])

    op.create_table(
        "users",
        sa.Column("aor", sa.String(), primary_key=True),
        sa.Column("realm", sa.String(), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )

    op.create_table(
        "overlay_nodes",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
    )
    op.create_index("ix_overlay_nodes_last_seen", "overlay_nodes", ["last_seen"])

    op.create_table(
        "registry_changes",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("aor", sa.String(), nullable=False),
        sa.Column("changed_at", sa.Double(), nullable=False),
        sa.Column("origin", sa.String(32), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_registry_changes_changed_at", "registry_changes", ["changed_at"])


def downgrade() -> None:
    """Drop the four registry tables."""
    op.drop_table("registry_changes")
    op.drop_table("overlay_nodes")
    op.drop_table("users")
    op.drop_table("bindings")
