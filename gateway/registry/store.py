"""Blocking SQL access to the registry: the location store.

Every method blocks on the database and is meant to run in a worker thread (see
:class:`gateway.registry.service.LocationService`); this module never touches the
reactor. One :class:`LocationStore` may be used from several threads, though not by two
at the same time for one connection; each method is one transaction.
"""

from __future__ import annotations

import importlib.resources
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, bindparam, create_engine, delete, event, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from gateway.registry.binding import Binding
from gateway.registry.checkpoint import WalCheckpointer
from gateway.registry.models import PATH_SEPARATOR, BindingRow, RegistryChangeRow, SiteGatewayRow

__all__ = [
    "LocationStore",
    "guard_database",
    "RegistryUnavailable",
    "create_registry_engine",
    "migrations_directory",
]

_bindings = BindingRow.__table__
_changes = RegistryChangeRow.__table__
_gateways = SiteGatewayRow.__table__
#: Heartbeats missed before a gateway is taken as down.
MISSED_HEARTBEATS = 3
#: Stopped or dead gateways are forgotten after this many seconds.
GATEWAY_RETENTION = 86400.0

# Rows per "IN (...)" list: far below SQLite's bound-parameter limit (32766).
_CHUNK = 500
# Any constant key: serialises the change-log inserts of concurrent PostgreSQL writers.
_CHANGE_LOCK_KEY = 0x5_1B_0C_A7
#: PostgreSQL NOTIFY channel of registry changes (gateway/registry/change_feed.py).
FEED_CHANNEL = "p2psip_registry"
# Attempts of a write that lost a race with another gateway on the (aor, contact) key.
_WRITE_ATTEMPTS = 3

T = TypeVar("T")


class RegistryUnavailable(Exception):
    """The registry database could not be read or written (the message says why)."""


def migrations_directory() -> Path:
    """Directory of the Alembic environment (``gateway.migrations`` once installed)."""
    try:
        path = Path(str(importlib.resources.files("gateway.migrations")))
    except ModuleNotFoundError:
        path = None
    if path is not None and (path / "env.py").is_file():
        return path
    # A source checkout: migrations/ lies next to the gateway package.
    return Path(__file__).resolve().parent.parent.parent / "migrations"


def _sqlite_file(url: str) -> str | None:
    """The file of an SQLite URL, None for other databases, in-memory SQLite and
    invalid URLs (left to :func:`create_registry_engine` to report)."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or (
            database.startswith("file:")):
        return None
    return str(Path(database).expanduser())


def create_registry_engine(url: str, *, autocheckpoint: bool = True) -> Engine:
    """Create an engine for the registry at ``url`` with durable, concurrent settings.

    SQLite: the parent directory of the file is created, the journal is WAL (readers do
    not block the writer), ``synchronous=FULL`` (a commit survives a power cut),
    ``busy_timeout`` (wait for another process' write instead of failing) and write
    transactions start with ``BEGIN IMMEDIATE`` (see :meth:`LocationStore._write`).
    With ``autocheckpoint`` off, commits never checkpoint the WAL; the caller must (see
    :class:`~gateway.registry.checkpoint.WalCheckpointer`).
    Other databases: connections are checked before use so the registry recovers after
    a database restart, and connecting gives up after 10 seconds.
    """
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise RegistryUnavailable(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = 10
        try:
            return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        except (sa_exc.ArgumentError, ImportError) as exc:
            raise RegistryUnavailable(f"cannot use database URL {url!r}: {exc}") from exc

    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        # One shared connection, else every thread would see its own empty database.
        options["poolclass"] = StaticPool
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                if not autocheckpoint:
                    cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # A deferred BEGIN that reads first and writes later cannot wait for the lock
        # (SQLITE_BUSY at once); IMMEDIATE takes the write lock up front and waits.
        if connection.get_execution_options().get("registry_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def _row_values(aor: str, binding: Binding, now: float) -> dict[str, Any]:
    return {
        "aor": aor,
        "contact": binding.contact,
        "expires": binding.expires,
        "q": binding.q,
        "call_id": binding.call_id,
        "cseq": binding.cseq,
        "path": PATH_SEPARATOR.join(binding.path),
        "received": binding.received,
        "transport": binding.transport,
        "instance_id": binding.instance_id,
        "reg_id": binding.reg_id,
        "user_agent": binding.user_agent,
        "source": binding.source,
        "registered_at": binding.registered_at,
        "updated_at": now,
        "owner": binding.owner,
    }


def _binding(row: Any) -> Binding:
    return Binding(
        aor=row.aor,
        contact=row.contact,
        expires=row.expires,
        q=row.q,
        call_id=row.call_id,
        cseq=row.cseq,
        path=tuple(row.path.split(PATH_SEPARATOR)) if row.path else (),
        received=row.received,
        transport=row.transport,
        instance_id=row.instance_id,
        reg_id=row.reg_id,
        user_agent=row.user_agent,
        source=row.source,
        registered_at=row.registered_at,
        owner=row.owner,
    )


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


_BINDING_COLUMNS = [c for c in _bindings.c if c.name not in ("id", "updated_at")]


def guard_database(safe_url: str, what: str, work: Callable[[], T]) -> T:
    """Run ``work``; a database failure becomes :class:`RegistryUnavailable` with one
    line saying what could not be done (and a hint when the schema is missing)."""
    try:
        return work()
    except CommandError as exc:
        raise RegistryUnavailable(
            f"registry database {safe_url}: cannot {what}: {exc}"
        ) from exc
    except sa_exc.SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        message = str(detail).strip().splitlines()[0] if str(detail).strip() else ""
        hint = ""
        if isinstance(exc, sa_exc.OperationalError | sa_exc.ProgrammingError) and (
            "no such table" in message
            or ("relation" in message and "does not exist" in message)
        ):
            hint = " (is the schema installed? run 'p2psip-admin db upgrade')"
        raise RegistryUnavailable(
            f"registry database {safe_url}: cannot {what}: "
            f"{type(detail).__name__}: {message}{hint}"
        ) from exc


class LocationStore:
    """The registry tables behind a blocking API (run it in a worker thread).

    ``url`` is any SQLAlchemy URL, e.g. ``sqlite:///data/registry.sqlite3`` or
    ``postgresql+psycopg://user@host/db``. Database failures surface as
    :class:`RegistryUnavailable`. Each store has a random :attr:`origin` written into the
    change log, so that :meth:`changes_since` can leave out its own changes.
    """

    def __init__(self, url: str, *, background_checkpoints: bool = False) -> None:
        self.url = url
        self.origin = uuid.uuid4().hex
        sqlite_file = _sqlite_file(url)
        background = background_checkpoints and sqlite_file is not None
        self._engine = create_registry_engine(url, autocheckpoint=not background)
        #: Checkpoints the SQLite WAL off the commit path (``background_checkpoints``).
        self.checkpointer: WalCheckpointer | None = None
        if background:
            assert sqlite_file is not None
            self.checkpointer = WalCheckpointer(sqlite_file)
            self.checkpointer.start()
        self._writer = self._engine.execution_options(registry_write=True)
        self._postgres = self._engine.dialect.name == "postgresql"
        #: Whether the database lives in this process only (SQLite ``:memory:``).
        self.in_memory = isinstance(self._engine.pool, StaticPool)

    @property
    def is_postgres(self) -> bool:
        """Whether the registry is PostgreSQL (shareable; changes are notified)."""
        return self._postgres

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (shared by the user store for in-memory databases)."""
        return self._engine

    def __repr__(self) -> str:
        return f"<LocationStore {self.safe_url}>"

    @property
    def safe_url(self) -> str:
        """The database URL with any password masked, for messages."""
        return self._engine.url.render_as_string(hide_password=True)

    # -- plumbing --------------------------------------------------------------------

    def _guard(self, what: str, work: Callable[[], T]) -> T:
        return guard_database(self.safe_url, what, work)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer.begin() as conn:
            yield conn

    def _log_changes(self, conn: Connection, aors: Iterable[str], now: float) -> None:
        rows = [{"aor": aor, "changed_at": now, "origin": self.origin} for aor in aors]
        if not rows:
            return
        if self._postgres:
            # Held until commit: change ids then become visible in increasing order, so
            # a poller that has seen id N can never later see a smaller one appear.
            conn.execute(select(func.pg_advisory_xact_lock(_CHANGE_LOCK_KEY)))
            # Delivered to the other gateways' change feeds when this commits; the time
            # lets them measure how long the change took to reach them.
            conn.execute(select(func.pg_notify(FEED_CHANNEL,
                                               f"{self.origin} {time.time():.6f}")))
        conn.execute(_changes.insert(), rows)

    def writer_origin(self) -> str:
        """The origin this store writes into the change log (and its notifications)."""
        return self.origin

    def _alembic_config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(migrations_directory()))
        url = self._engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    # -- schema ----------------------------------------------------------------------

    def upgrade_schema(self) -> None:
        """Bring the schema up to the newest Alembic revision (no-op when current)."""

        def work() -> None:
            with self._writer.begin() as conn:
                if self._postgres:
                    # Two gateways starting together must not both run the migrations.
                    conn.execute(select(func.pg_advisory_xact_lock(_CHANGE_LOCK_KEY + 1)))
                command.upgrade(self._alembic_config(conn), "head")

        self._guard("upgrade the schema", work)

    def schema_is_current(self) -> bool:
        """Whether the database is at the newest Alembic revision."""

        def work() -> bool:
            heads = set(ScriptDirectory.from_config(self._alembic_config()).get_heads())
            with self._engine.connect() as conn:
                current = set(MigrationContext.configure(conn).get_current_heads())
            return current == heads

        return self._guard("read the schema version", work)

    # -- bindings --------------------------------------------------------------------

    def _select_live(self, now: float) -> Any:
        return (
            select(*_BINDING_COLUMNS)
            .where(_bindings.c.expires > now)
            .order_by(_bindings.c.aor, _bindings.c.q.desc(), _bindings.c.id)
        )

    def load_live(self, now: float) -> dict[str, list[Binding]]:
        """All bindings with ``expires > now``, grouped by AoR, highest q first."""

        def work() -> dict[str, list[Binding]]:
            result: dict[str, list[Binding]] = {}
            with self._engine.connect() as conn:
                for row in conn.execute(self._select_live(now)):
                    result.setdefault(row.aor, []).append(_binding(row))
            return result

        return self._guard("load the bindings", work)

    def load_aors(self, aors: Iterable[str], now: float | None = None) -> dict[str, list[Binding]]:
        """The live bindings of ``aors``; every AoR asked for is a key (maybe ``[]``).

        ``now`` defaults to 0, i.e. every stored binding of those AoRs.
        """
        wanted = sorted(set(aors))
        cutoff = 0.0 if now is None else now

        def work() -> dict[str, list[Binding]]:
            result: dict[str, list[Binding]] = {aor: [] for aor in wanted}
            query = self._select_live(cutoff).where(
                _bindings.c.aor.in_(bindparam("aors", expanding=True))
            )
            with self._engine.connect() as conn:
                for chunk in _chunks(wanted):
                    for row in conn.execute(query, {"aors": chunk}):
                        result[row.aor].append(_binding(row))
            return result

        return self._guard("load bindings", work)

    def write_snapshots(self, snapshots: dict[str, list[Binding]], now: float) -> None:
        """Replace the bindings of every AoR in ``snapshots`` in one transaction.

        An empty list removes all bindings of that AoR. Every AoR gets one change-log
        entry. Should two contacts of one AoR be equal, the later one wins.
        """
        if not snapshots:
            return
        aors = list(snapshots)
        rows: list[dict[str, Any]] = []
        for aor, bindings in snapshots.items():
            by_contact = {b.contact: b for b in bindings}
            rows.extend(_row_values(aor, b, now) for b in by_contact.values())
        delete_stmt = delete(_bindings).where(
            _bindings.c.aor.in_(bindparam("aors", expanding=True))
        )

        def work() -> None:
            for attempt in range(1, _WRITE_ATTEMPTS + 1):
                try:
                    with self._write() as conn:
                        for chunk in _chunks(aors):
                            conn.execute(delete_stmt, {"aors": chunk})
                        if rows:
                            conn.execute(_bindings.insert(), rows)
                        self._log_changes(conn, aors, now)
                    return
                except sa_exc.IntegrityError:
                    # Another gateway inserted a row of the same AoR after our DELETE
                    # looked: the next attempt sees and deletes it.
                    if attempt == _WRITE_ATTEMPTS:
                        raise

        self._guard(f"write the bindings of {len(aors)} AoR(s)", work)

    def delete_expired(self, now: float) -> list[str]:
        """Delete the bindings with ``expires <= now``; return their AoRs (sorted)."""

        def work() -> list[str]:
            with self._write() as conn:
                expired = _bindings.c.expires <= now
                aors = sorted(
                    conn.execute(select(_bindings.c.aor).where(expired).distinct()).scalars()
                )
                if aors:
                    conn.execute(delete(_bindings).where(expired))
                    self._log_changes(conn, aors, now)
            return aors

        return self._guard("delete expired bindings", work)

    def list_bindings(self, aor: str | None, now: float) -> list[Binding]:
        """Live bindings of ``aor`` (or of every AoR), by AoR then highest q first."""

        def work() -> list[Binding]:
            query = self._select_live(now)
            if aor is not None:
                query = query.where(_bindings.c.aor == aor)
            with self._engine.connect() as conn:
                return [_binding(row) for row in conn.execute(query)]

        return self._guard("list bindings", work)

    def remove_aor(self, aor: str, now: float) -> int:
        """Delete every binding of ``aor`` (expired ones too); return how many."""

        def work() -> int:
            with self._write() as conn:
                removed = conn.execute(delete(_bindings).where(_bindings.c.aor == aor)).rowcount
                if removed:
                    self._log_changes(conn, [aor], now)
            return removed

        return self._guard(f"remove the bindings of {aor}", work)

    # -- change log ------------------------------------------------------------------

    def current_change_id(self) -> int:
        """The newest change-log id (0 when the log is empty)."""

        def work() -> int:
            with self._engine.connect() as conn:
                return conn.execute(select(func.max(_changes.c.id))).scalar() or 0

        return self._guard("read the change log", work)

    def changes_since(self, last_id: int, exclude_own: bool = False) -> tuple[int, set[str]]:
        """The newest change id and the AoRs changed after ``last_id``.

        With ``exclude_own``, changes written by this store are left out of the AoRs
        (the returned id still covers them). When nothing changed, ``last_id`` itself
        is returned.
        """

        def work() -> tuple[int, set[str]]:
            with self._engine.connect() as conn:
                newest = conn.execute(select(func.max(_changes.c.id))).scalar() or 0
                if newest <= last_id:
                    return last_id, set()
                query = (
                    select(_changes.c.aor)
                    .distinct()
                    .where(_changes.c.id > last_id, _changes.c.id <= newest)
                )
                if exclude_own:
                    query = query.where(_changes.c.origin != self.origin)
                return newest, set(conn.execute(query).scalars())

        return self._guard("read the change log", work)

    def prune_changes(self, older_than: float) -> int:
        """Delete change-log entries written before ``older_than``; return how many."""

        def work() -> int:
            with self._write() as conn:
                stmt = delete(_changes).where(_changes.c.changed_at < older_than)
                return conn.execute(stmt).rowcount

        return self._guard("prune the change log", work)

    def heartbeat(self, gateway_id: str, name: str, started_at: float, interval: float,
                  now: float, uri: str = "") -> list[dict[str, Any]]:
        """Say that gateway ``gateway_id`` (reached by the site's other gateways at
        ``uri``) is alive at ``now``; return every gateway of the registry
        (:meth:`site_gateways`). Gateways gone for a day are forgotten."""

        def work() -> None:
            with self._write() as conn:
                updated = conn.execute(_gateways.update()
                                       .where(_gateways.c.id == gateway_id)
                                       .values(heartbeat_at=now, heartbeat_every=interval,
                                               stopped_at=0.0, uri=uri)).rowcount
                if not updated:
                    conn.execute(_gateways.insert().values(
                        id=gateway_id, name=name, started_at=started_at, heartbeat_at=now,
                        heartbeat_every=interval, stopped_at=0.0, uri=uri))
                conn.execute(delete(_gateways).where(
                    _gateways.c.heartbeat_at < now - GATEWAY_RETENTION))

        self._guard("write the heartbeat", work)
        return self.site_gateways(now)

    def gateway_stopped(self, gateway_id: str, now: float) -> None:
        """Gateway ``gateway_id`` stopped cleanly."""

        def work() -> None:
            with self._write() as conn:
                conn.execute(_gateways.update().where(_gateways.c.id == gateway_id)
                             .values(stopped_at=now))

        self._guard("write the heartbeat", work)

    def site_gateways(self, now: float) -> list[dict[str, Any]]:
        """Every gateway that used the registry lately: id, name, uri, started_at,
        heartbeat_at, state (``up``; ``stopped``; ``down``: no heartbeat for
        :data:`MISSED_HEARTBEATS` intervals)."""

        def work() -> list[dict[str, Any]]:
            with self._engine.connect() as conn:
                rows = conn.execute(select(_gateways).order_by(_gateways.c.started_at)).all()
            found = []
            for row in rows:
                state = ("stopped" if row.stopped_at else
                         "up" if now - row.heartbeat_at <= MISSED_HEARTBEATS * row.heartbeat_every
                         else "down")
                found.append({"id": row.id, "name": row.name, "uri": row.uri,
                              "started_at": row.started_at,
                              "heartbeat_at": row.heartbeat_at, "state": state})
            return found

        return self._guard("read the site's gateways", work)

    def close(self) -> None:
        """Close every pooled connection (and stop the WAL checkpoints)."""
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        self._engine.dispose()
