"""Registry changes pushed between gateways that share one PostgreSQL registry.

Every transaction that writes bindings also runs ``pg_notify('p2psip_registry',
"<origin> <time>")`` (gateway/registry/store.py); PostgreSQL delivers the notification to every
listener when the transaction commits. :class:`ChangeFeed` keeps one connection that
``LISTEN``s on that channel and tells the location service at once when another writer
committed, so a sync follows within milliseconds instead of at the next poll
(``database.sync_interval``, kept as the fallback). Notifications carry only the
writer's origin and when it wrote (the receiver measures the sync delay): what changed
is read from the change log, as the poll does, so a notification lost while the
connection was down costs nothing but time (on every reconnection the service syncs
once).

The connection runs on the reactor's asyncio loop (psycopg's async connection): no
thread. A silent network failure is found within ``KEEPALIVE`` seconds (a ``SELECT 1``
when nothing arrived); the feed then reconnects with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from gateway.log import get_logger
from gateway.registry.store import FEED_CHANNEL as CHANNEL

log = get_logger("gateway.registry.feed")
#: Seconds without a notification after which the connection is checked.
KEEPALIVE = 15.0
#: Pause before reconnecting: from the first value, doubling up to the second.
RETRY = (0.5, 30.0)


def conninfo(url: str) -> str:
    """A libpq connection URI for a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://``
    and the like; query parameters such as ``sslmode`` kept)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeFeed:
    """``LISTEN`` on :data:`CHANNEL`; ``on_change`` is called for every notification
    from another writer than ``origin``, with the time it wrote, and after every
    (re)connection (with None)."""

    def __init__(self, url: str, on_change: Callable[[float | None], None]) -> None:
        self._conninfo = conninfo(url)
        self._safe = make_url(url).render_as_string(hide_password=True)
        self.on_change = on_change
        #: The writer whose notifications are our own (set by :meth:`start`).
        self.origin = ""
        self.state = "stopped"
        self.last_error = ""
        self.notifications = 0
        self.connected_since = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self, origin: str) -> None:
        """Listen in the background, ignoring notifications of ``origin``."""
        self.origin = origin
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """For the status file: state, notifications received, last error."""
        return {"state": self.state, "notifications": self.notifications,
                "last_error": self.last_error, "since": self.connected_since}

    async def _run(self) -> None:
        pause = RETRY[0]
        while True:
            self.state = "connecting"
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # psycopg raises many kinds on a lost server
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                    type(exc).__name__
                if error != self.last_error or self.state == "listening":
                    log.warn("registry change feed from {url} lost: {error}; polling every "
                             "sync_interval until it is back", url=self._safe, error=error)
                self.last_error = error
            self.state = "down"
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(pause * 2, RETRY[1])

    async def _listen(self) -> None:
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                           connect_timeout=5)
        async with connection:
            await connection.execute(f"LISTEN {CHANNEL}")
            self.state, self.connected_since = "listening", time.time()
            if self.last_error:
                log.info("registry change feed from {url} is back", url=self._safe)
            self.last_error = ""
            self.on_change(None)  # catch up with whatever was missed while not listening
            while True:
                heard = False
                async for notify in connection.notifies(timeout=KEEPALIVE):
                    heard = True
                    origin, _, written = notify.payload.partition(" ")
                    if origin != self.origin:
                        self.notifications += 1
                        self.on_change(_stamp(written))
                if not heard:
                    await connection.execute("SELECT 1")  # raises on a dead connection


def _stamp(text: str) -> float | None:
    """The writer's time in a notification (None when absent or garbled: a change
    written by hand in SQL, or an older gateway)."""
    try:
        return float(text)
    except ValueError:
        return None
