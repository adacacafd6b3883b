"""Where the registry's blocking database calls run: a worker thread or a worker process.

:class:`LocationService` never calls the :class:`LocationStore` directly; it asks a runner
to call one of the store's methods and gets a Deferred back. Both runners execute one
call at a time, in the order asked, so the service's write ordering holds with either.

- :class:`ThreadStoreRunner` calls a store object in one worker thread. Simple, and the
  only choice for an in-memory SQLite database or a wrapped store (tests).
- :class:`ProcessStoreRunner` runs ``python -m gateway.registry.worker URL``, which opens
  its own store. SQLAlchemy's per-row Python work then no longer competes with the
  reactor thread for the GIL: on the REGISTER benchmark a write thread cost the reactor
  process about half as much CPU again as parsing and answering the REGISTERs
  (docs/benchmarks.md). Calls and answers cross the worker's stdin/stdout as pickles,
  read and written by the reactor like any other connection (no helper threads). A
  worker that dies fails the calls under way with :class:`RegistryUnavailable` and is
  replaced on the next call.

Every call fires with ``(stamp, result)``: ``stamp`` is ``time.monotonic_ns()`` taken
in the worker before (``stamp="before"``) or after (``"after"``) the call, so a load can
be ordered against a commit whichever side ran them.
"""

from __future__ import annotations

import pickle
import sys
from collections import deque
from typing import Any, Literal, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from gateway.log import get_logger
from gateway.registry.framing import HEADER, frame, invoke
from gateway.registry.store import LocationStore, RegistryUnavailable

__all__ = ["ProcessStoreRunner", "Stamp", "StoreRunner", "ThreadStoreRunner"]

log = get_logger("gateway.registry.runner")

Stamp = Literal["before", "after"] | None
# How long a stopping worker may take to finish its calls before it is killed.
STOP_TIMEOUT = 30.0


class StoreRunner(Protocol):
    """Runs :class:`LocationStore` methods one at a time, off the reactor thread."""

    def start(self) -> None:
        """Get ready to take calls."""

    def call(self, method: str, *args: Any, stamp: Stamp = None) -> Deferred[tuple[int, Any]]:
        """Call ``store.<method>(*args)``; fires with ``(stamp_ns, result)``."""

    def stop(self) -> Deferred[None]:
        """Finish the calls under way, then release the worker."""


class ThreadStoreRunner:
    """Runs the calls on ``store`` in one worker thread of this process."""

    def __init__(self, store: LocationStore | None, reactor: Any) -> None:
        self.store = store
        self._reactor = reactor
        self._pool = ThreadPool(1, 1, name="location-store")

    def start(self) -> None:
        """Start the worker thread."""
        self._pool.start()

    def call(self, method: str, *args: Any, stamp: Stamp = None) -> Deferred[tuple[int, Any]]:
        """Run ``store.<method>(*args)`` in the worker thread."""
        return deferToThreadPool(self._reactor, self._pool, invoke, self.store, method,
                                 args, stamp)

    def stop(self) -> Deferred[None]:
        """Stop the worker thread (after the queued calls)."""
        self._pool.stop()
        return succeed(None)


class _WorkerProtocol(ProcessProtocol):
    """The gateway's end of one worker process: frames out, answers back in order."""

    def __init__(self) -> None:
        self.pending: deque[Deferred[tuple[int, Any]]] = deque()
        self.ended: Deferred[None] = Deferred()
        self.alive = True
        self._buffer = bytearray()
        self._last_error = ""

    def send(self, request: tuple[str, tuple[Any, ...], Stamp]) -> Deferred[tuple[int, Any]]:
        d: Deferred[tuple[int, Any]] = Deferred()
        self.pending.append(d)
        self.transport.write(frame(request))
        return d

    def outReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER.size:
            size = HEADER.unpack_from(buffer)[0]
            end = HEADER.size + size
            if len(buffer) < end:
                break
            ok, value = pickle.loads(memoryview(buffer)[HEADER.size:end])
            del buffer[:end]
            d = self.pending.popleft()
            if ok:
                d.callback(value)
            else:
                d.errback(Failure(value))

    def errReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self._last_error = line.strip()
                log.warn("registry worker: {line}", line=line.rstrip())

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 - Twisted API
        self.alive = False
        if not reason.check(ProcessDone) or self.pending:
            detail = self._last_error or reason.getErrorMessage()
            log.error("the registry worker process ended: {detail}", detail=detail)
        while self.pending:
            self.pending.popleft().errback(Failure(RegistryUnavailable(
                f"the registry worker process ended ({self._last_error or 'no message'})")))
        self.ended.callback(None)


class ProcessStoreRunner:
    """Runs the calls in one worker process (``python -m gateway.registry.worker``) that
    opens its own store from ``url``; it shares no connection, thread or event loop with
    the gateway."""

    def __init__(self, url: str, reactor: Any) -> None:
        self.url = url
        self._reactor = reactor
        self._worker: _WorkerProtocol | None = None
        self._running = False

    def start(self) -> None:
        """Start the worker process."""
        self._running = True
        self._spawn()

    def _spawn(self) -> _WorkerProtocol:
        worker = _WorkerProtocol()
        self._reactor.spawnProcess(
            worker, sys.executable, [sys.executable, "-m", "gateway.registry.worker", self.url],
            env=None, childFDs={0: "w", 1: "r", 2: "r"})
        self._worker = worker
        return worker

    def call(self, method: str, *args: Any, stamp: Stamp = None) -> Deferred[tuple[int, Any]]:
        """Run ``store.<method>(*args)`` in the worker process (a new one if it died)."""
        if not self._running:
            return _failed("the registry worker is not running")
        worker = self._worker
        if worker is None or not worker.alive:
            log.warn("starting a new registry worker process")
            worker = self._spawn()
        return worker.send((method, args, stamp))

    def stop(self) -> Deferred[None]:
        """Let the worker finish its calls (closing its stdin), then wait for it to exit;
        kill it after :data:`STOP_TIMEOUT` seconds."""
        self._running = False
        worker, self._worker = self._worker, None
        if worker is None or not worker.alive:
            return succeed(None)
        worker.transport.closeStdin()
        killer = self._reactor.callLater(STOP_TIMEOUT, _kill, worker)

        def ended(_: None) -> None:
            if killer.active():
                killer.cancel()

        return worker.ended.addCallback(ended)


def _kill(worker: _WorkerProtocol) -> None:
    if worker.alive:
        log.error("the registry worker did not stop in time; killing it")
        worker.transport.signalProcess("KILL")


def _failed(message: str) -> Deferred[tuple[int, Any]]:
    d: Deferred[tuple[int, Any]] = Deferred()
    d.errback(Failure(RegistryUnavailable(message)))
    return d
