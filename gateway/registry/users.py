"""Digest credentials in the SQL registry (``users`` table) and their in-memory copy.

:class:`UserStore` is blocking SQL (the admin command line uses it directly; the gateway
runs it in a worker thread). :class:`UserDirectory` keeps every user in memory, so a
lookup on the request path costs the same for a known and an unknown user (no timing
hint for user enumeration) and never waits for the database; it polls a cheap summary
of the table and reloads when it changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, func, insert, select, update
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from gateway.log import get_logger
from gateway.registry.models import UserRow
from gateway.registry.runner import ThreadStoreRunner
from gateway.registry.store import (
    RegistryUnavailable,
    create_registry_engine,
    guard_database,
)
from gateway.sip.digest import ha1
from gateway.sip.uri import SipUri, parse_uri

log = get_logger("gateway.registry.users")
_users = UserRow.__table__
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user's credentials in one realm."""

    username: str
    realm: str
    aor: str
    ha1_md5: str
    ha1_sha256: str

    def ha1(self, algorithm: str) -> str:
        """The stored HA1 for ``algorithm`` ("" when none is stored)."""
        return self.ha1_sha256 if algorithm == "SHA-256" else self.ha1_md5


class UserError(Exception):
    """A user management request that cannot be done (the message says why)."""


def canonical_aor(text: str) -> str:
    """``sip:user@host`` for a SIP or SIPS URI with a user part; raises
    :class:`UserError` otherwise."""
    try:
        uri = parse_uri(text.strip())
    except Exception as exc:  # SipSyntaxError: the message names the problem
        raise UserError(f"{text!r} is not a SIP URI: {exc}") from None
    if not isinstance(uri, SipUri) or not uri.user:
        raise UserError(f"{text!r} is not a SIP address-of-record (sip:user@domain)")
    return uri.aor()


def user_part(aor: str) -> str:
    """The user part of a canonical AoR (the default digest username)."""
    return aor[len("sip:"):].rsplit("@", 1)[0]


def domain_part(aor: str) -> str:
    """The host of a canonical AoR (the default realm)."""
    return aor.rsplit("@", 1)[1]


class UserStore:
    """Blocking access to the ``users`` table; each method is one transaction."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        #: ``engine``: share one (an in-memory SQLite registry exists only in its own).
        self._engine = engine if engine is not None else create_registry_engine(url)
        self._owns_engine = engine is None

    def _guard(self, what: str, work: Callable[[], T]) -> T:
        return guard_database(self._engine.url.render_as_string(hide_password=True), what,
                              work)

    def add(self, aor: str, username: str, realm: str, password: str) -> None:
        """Create credentials; :class:`UserError` when ``username`` already has some in
        ``realm``."""
        now = time.time()

        def work() -> None:
            with self._engine.begin() as conn:
                exists = conn.execute(select(_users.c.aor).where(
                    _users.c.username == username, _users.c.realm == realm)).first()
                if exists is not None:
                    raise UserError(f"user {username!r} already exists in realm {realm!r} "
                                    f"(for {exists[0]}); use 'users passwd'")
                conn.execute(insert(_users).values(
                    username=username, realm=realm, aor=aor, created_at=now, updated_at=now,
                    **_hashes(username, realm, password)))

        self._guard("add the user", work)

    def set_password(self, aor: str, realm: str | None, password: str) -> int:
        """Change the password of every credential of ``aor`` (in ``realm`` only, when
        given); returns how many were changed."""

        def work() -> int:
            with self._engine.begin() as conn:
                rows = conn.execute(select(_users.c.username, _users.c.realm).where(
                    *_match(aor, realm))).all()
                for username, row_realm in rows:
                    conn.execute(update(_users).where(
                        _users.c.username == username, _users.c.realm == row_realm).values(
                        updated_at=time.time(), **_hashes(username, row_realm, password)))
                return len(rows)

        return self._guard("change the password", work)

    def remove(self, aor: str, realm: str | None = None) -> int:
        """Delete the credentials of ``aor`` (in ``realm`` only, when given)."""

        def work() -> int:
            with self._engine.begin() as conn:
                return conn.execute(delete(_users).where(*_match(aor, realm))).rowcount

        return self._guard("remove the user", work)

    def load_all(self) -> list[UserRecord]:
        """Every user, ordered by AoR and realm."""

        def work() -> list[UserRecord]:
            with self._engine.connect() as conn:
                rows = conn.execute(select(
                    _users.c.username, _users.c.realm, _users.c.aor, _users.c.ha1_md5,
                    _users.c.ha1_sha256).order_by(_users.c.aor, _users.c.realm)).all()
            return [UserRecord(*row) for row in rows]

        return self._guard("read the users", work)

    def summary(self) -> tuple[int, float]:
        """``(count, newest updated_at)``: changes when a user is added, changed or
        removed."""

        def work() -> tuple[int, float]:
            with self._engine.connect() as conn:
                count, newest = conn.execute(select(func.count(),
                                                    func.max(_users.c.updated_at))).one()
            return int(count), float(newest or 0.0)

        return self._guard("read the users", work)

    def close(self) -> None:
        """Release the connections."""
        if self._owns_engine:
            self._engine.dispose()


def _hashes(username: str, realm: str, password: str) -> dict[str, str]:
    return {"ha1_md5": ha1("MD5", username, realm, password),
            "ha1_sha256": ha1("SHA-256", username, realm, password)}


def _match(aor: str, realm: str | None) -> list[Any]:
    conditions = [_users.c.aor == aor]
    if realm is not None:
        conditions.append(_users.c.realm == realm)
    return conditions


class UserDirectory:
    """Every user in memory, by ``(username, realm)``, refreshed from the registry
    every ``sync_interval`` seconds when the table changed."""

    def __init__(self, store: UserStore | None, reactor: Any, sync_interval: float) -> None:
        self._store = store
        self._reactor = reactor
        self._runner = ThreadStoreRunner(store, reactor) if store is not None else None
        self._users: dict[tuple[str, str], UserRecord] = {}
        self._summary: tuple[int, float] | None = None
        self._poll = LoopingCall(self._refresh)
        self._poll.clock = reactor
        self.sync_interval = sync_interval

    def get(self, username: str, realm: str) -> UserRecord | None:
        """The credentials of ``username`` in ``realm``, if any."""
        return self._users.get((username, realm))

    def __len__(self) -> int:
        return len(self._users)

    def set_users(self, users: list[UserRecord]) -> None:
        """Replace the whole directory (tests, and each reload)."""
        self._users = {(u.username, u.realm): u for u in users}

    async def start(self) -> None:
        """Load every user, then keep polling for changes."""
        if self._runner is None:
            return
        self._runner.start()
        await self._reload()
        self._poll.start(self.sync_interval, now=False).addErrback(
            lambda f: log.failure("user directory polling stopped", f))

    async def _reload(self) -> None:
        assert self._runner is not None
        _, summary = await self._runner.call("summary")
        _, users = await self._runner.call("load_all")
        self._summary = summary
        self.set_users(users)

    def _refresh(self) -> Deferred[None]:
        async def refresh() -> None:
            assert self._runner is not None
            try:
                _, summary = await self._runner.call("summary")
                if summary != self._summary:
                    await self._reload()
                    log.info("user directory reloaded: {n} credentials", n=len(self._users))
            except RegistryUnavailable as exc:
                # Keep serving the users already known: an outage must not lock them out.
                log.warn("cannot refresh the users: {error}", error=str(exc))

        return Deferred.fromCoroutine(refresh())

    def stop(self) -> Deferred[None] | None:
        """Stop polling and release the worker thread."""
        if self._poll.running:
            self._poll.stop()
        if self._runner is None:
            return None
        d = self._runner.stop()
        if self._store is not None:
            self._store.close()
        return d
