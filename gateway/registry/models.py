"""SQLAlchemy models of the registry schema.

Alembic (``migrations/``) owns the schema: these models describe it for queries and for
``alembic revision --autogenerate``; they are never used to create tables directly.

All timestamps are POSIX epoch seconds stored as double precision floats, the same
representation :class:`~gateway.registry.binding.Binding` uses, so the hot write path
converts nothing. ``docs/registry.md`` shows how to render them readably in SQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-assigns ids to a column declared exactly "INTEGER PRIMARY KEY"; other
# databases get 64-bit ids, as a busy registrar burns through 2**31 ids in days.
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Separator of the Path URIs in ``bindings.path``. A header value cannot contain a line
#: break once unfolded, whereas a comma may appear inside a quoted display name.
PATH_SEPARATOR = "\n"


class Base(DeclarativeBase):
    """Declarative base of the registry models."""


class BindingRow(Base):
    """One registered contact of an address-of-record (one row per ``Binding``)."""

    __tablename__ = "bindings"
    __table_args__ = (
        UniqueConstraint("aor", "contact", name="uq_bindings_aor_contact"),
        Index("ix_bindings_expires", "expires"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Indexed by the unique (aor, contact) constraint: a separate index would only
    # slow down the hot write path.
    aor: Mapped[str] = mapped_column(String)
    contact: Mapped[str] = mapped_column(Text)
    expires: Mapped[float] = mapped_column(Double)
    q: Mapped[float] = mapped_column(Double, default=1.0)
    call_id: Mapped[str] = mapped_column(String, default="")
    cseq: Mapped[int] = mapped_column(BigInteger, default=0)
    path: Mapped[str] = mapped_column(Text, default="")
    received: Mapped[str] = mapped_column(String, default="")
    transport: Mapped[str] = mapped_column(String(16), default="udp")
    instance_id: Mapped[str] = mapped_column(String, default="")
    reg_id: Mapped[int] = mapped_column(Integer, default=0)
    user_agent: Mapped[str] = mapped_column(String, default="")
    source: Mapped[str] = mapped_column(String(16), default="local")
    registered_at: Mapped[float] = mapped_column(Double, default=0.0)
    updated_at: Mapped[float] = mapped_column(Double, default=0.0)
    #: The gateway (``site_gateways.id``) that holds the flow the phone registered
    #: over; "" for bindings written by p2psip-admin or before there were owners.
    owner: Mapped[str] = mapped_column(String(32), default="")


class UserRow(Base):
    """Digest credentials of a user in one realm (RFC 8760 hashes of
    ``username:realm:password``, never the password). ``aor`` is the address-of-record
    these credentials may register and send requests as."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String, primary_key=True)
    realm: Mapped[str] = mapped_column(String, primary_key=True)
    aor: Mapped[str] = mapped_column(String, index=True)
    ha1_md5: Mapped[str] = mapped_column(String(32), default="")
    ha1_sha256: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Double, default=0.0)
    updated_at: Mapped[float] = mapped_column(Double, default=0.0)


class OverlayNodeRow(Base):
    """A Kademlia node seen in the overlay, remembered to bootstrap the next start."""

    __tablename__ = "overlay_nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String)
    port: Mapped[int] = mapped_column(Integer)
    last_seen: Mapped[float] = mapped_column(Double, index=True)


class OverlayPinRow(Base):
    """Trust on first use: the certificate first seen signing records for a domain."""

    __tablename__ = "overlay_pins"

    domain: Mapped[str] = mapped_column(String, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[float] = mapped_column(Double)


class RegistryChangeRow(Base):
    """One entry of the change log: the bindings of ``aor`` changed at ``changed_at``.

    Readers poll for ids greater than the last one they saw to keep their caches
    coherent. ``origin`` identifies the writing :class:`LocationStore` so a gateway can
    skip its own changes, which it already has in memory.
    """

    __tablename__ = "registry_changes"
    # AUTOINCREMENT: never reuse an id after the newest rows were pruned, which would
    # make pollers miss changes.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    aor: Mapped[str] = mapped_column(String)
    changed_at: Mapped[float] = mapped_column(Double, index=True)
    origin: Mapped[str] = mapped_column(String(32), default="")


class SiteGatewayRow(Base):
    """A gateway using this registry, and when it last said it was alive: the gateways
    of a site sharing one PostgreSQL registry know which of them are up."""

    __tablename__ = "site_gateways"

    #: Random per run of a gateway (a restarted gateway is a new row).
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: Host name, process id and data dir, for people.
    name: Mapped[str] = mapped_column(String)
    started_at: Mapped[float] = mapped_column(Double)
    heartbeat_at: Mapped[float] = mapped_column(Double, index=True)
    #: Seconds between its heartbeats (it is down after three missed ones).
    heartbeat_every: Mapped[float] = mapped_column(Double)
    #: When it stopped cleanly (0: it has not).
    stopped_at: Mapped[float] = mapped_column(Double, default=0.0)
    #: Where the site's other gateways send requests for the phones whose flows it
    #: holds ([site] uri; "": it takes no part in routing between gateways).
    uri: Mapped[str] = mapped_column(String, default="")
