"""WAL checkpoints of the SQLite registry in a background thread.

In WAL mode SQLite copies the log back into the database file ("checkpoint") when the
log passes 1000 pages, on the connection whose commit crossed that mark. With durable
commits that checkpoint writes and fsyncs the whole database file inside one
REGISTER batch: measured 130–450 ms every second or so at 5 000 REGISTER/s, long enough
for phones to retransmit. :class:`WalCheckpointer` runs PASSIVE checkpoints from its own
connection instead; a PASSIVE checkpoint never blocks writers, and SQLite releases the
GIL while it works.
"""

from __future__ import annotations

import sqlite3
import threading

from gateway.log import get_logger

log = get_logger("gateway.registry.checkpoint")


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite file at ``path`` every ``interval`` seconds."""

    def __init__(self, path: str, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        #: Checkpoints run so far, and the frames they moved to the database file.
        self.runs = 0
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint",
                                        daemon=True)

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after a last checkpoint."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        """One PASSIVE checkpoint."""
        # A read first: a connection opened before the file was switched to WAL only
        # notices the switch when it next reads, and checkpoints nothing until then.
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        busy, _log_frames, moved = connection.execute(
            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        if not busy and moved > 0:
            self.frames += moved

    def _loop(self) -> None:
        try:
            connection = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        except sqlite3.Error as exc:
            log.error("WAL checkpoints disabled: cannot open {path}: {error}",
                      path=self.path, error=exc)
            return
        try:
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA busy_timeout=10000")
            while True:
                stopping = self._stop.wait(self.interval)
                try:
                    self.checkpoint(connection)
                except sqlite3.Error as exc:
                    log.warn("WAL checkpoint of {path} failed, will retry: {error}",
                             path=self.path, error=exc)
                if stopping:
                    return
        finally:
            connection.close()
