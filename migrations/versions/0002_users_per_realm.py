"""Users keyed by digest username and realm, with an update time.

A user's credentials are one row per realm: ``(username, realm)`` is what a Digest
``Authorization`` names, so it is the key; ``aor`` says which address-of-record the
credentials may register and call as. ``updated_at`` lets gateways notice changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _user_part(aor: str) -> str:
    rest = aor.split(":", 1)[-1]
    return rest.rsplit("@", 1)[0] if "@" in rest else rest


def _rows(table: sa.TableClause) -> list[sa.RowMapping]:
    """The rows to carry over (none when only SQL is being generated)."""
    if context.is_offline_mode():
        return []
    return list(op.get_bind().execute(sa.select(table)).mappings().all())


def upgrade() -> None:
    """Rebuild ``users`` with the ``(username, realm)`` key, keeping existing rows."""
    old = sa.table("users", sa.column("aor"), sa.column("realm"), sa.column("ha1_md5"),
                   sa.column("ha1_sha256"), sa.column("created_at"))
    rows = _rows(old)
    op.drop_table("users")
    users = op.create_table(
        "users",
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("realm", sa.String(), nullable=False),
        sa.Column("aor", sa.String(), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("username", "realm", name="pk_users"),
    )
    op.create_index("ix_users_aor", "users", ["aor"])
    if rows:
        op.bulk_insert(users, [
            {"username": _user_part(row["aor"]), "realm": row["realm"], "aor": row["aor"],
             "ha1_md5": row["ha1_md5"], "ha1_sha256": row["ha1_sha256"],
             "created_at": row["created_at"], "updated_at": row["created_at"]}
            for row in rows])


def downgrade() -> None:
    """Back to one row per AoR (the first realm of each AoR is kept)."""
    new = sa.table("users", sa.column("aor"), sa.column("realm"), sa.column("ha1_md5"),
                   sa.column("ha1_sha256"), sa.column("created_at"))
    rows = _rows(new)
    op.drop_index("ix_users_aor", table_name="users")
    op.drop_table("users")
    users = op.create_table(
        "users",
        sa.Column("aor", sa.String(), primary_key=True),
        sa.Column("realm", sa.String(), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    kept: dict[str, dict] = {}
    for row in rows:
        kept.setdefault(row["aor"], dict(row))
    if kept:
        op.bulk_insert(users, list(kept.values()))
