"""The registry worker process: runs :class:`LocationStore` calls sent by the gateway.

Started by :class:`gateway.registry.runner.ProcessStoreRunner` as
``python -m gateway.registry.worker URL``. It reads requests on stdin and writes answers
on stdout, one call at a time, in order. Every frame is a 4-byte big-endian length and a
pickle: a request is ``(method, args, stamp)``, an answer ``(True, (stamp_ns, result))``
or ``(False, exception)``. Anything else the process prints goes to stderr, which the
gateway logs. It exits when stdin closes, and ignores SIGTERM and SIGINT: the gateway
ends it once its last writes are done.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import Any, BinaryIO

from gateway.registry.framing import HEADER, frame, invoke
from gateway.registry.store import LocationStore, RegistryUnavailable


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _answer(store: LocationStore, request: Any) -> bytes:
    try:
        method, args, stamp = request
        if method.startswith("_") or not callable(getattr(store, method, None)):
            raise RegistryUnavailable(f"the registry worker has no call {method!r}")
        return frame((True, invoke(store, method, args, stamp)))
    except Exception as exc:  # every failure goes back to the caller
        try:
            return frame((False, exc))
        except Exception:  # an exception that does not pickle
            return frame((False, RegistryUnavailable(f"{type(exc).__name__}: {exc}")))


def serve(url: str, requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until ``requests`` reaches end of file."""
    store = LocationStore(url, background_checkpoints=True)
    try:
        while True:
            header = _read_exactly(requests, HEADER.size)
            if header is None:
                return
            body = _read_exactly(requests, HEADER.unpack(header)[0])
            if body is None:
                return
            answers.write(_answer(store, pickle.loads(body)))
            answers.flush()
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m gateway.registry.worker URL``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gateway.registry.worker DATABASE_URL", file=sys.stderr)
        return 2
    # The gateway decides when the worker ends (by closing its stdin, once the writes
    # under way are done). A SIGTERM or Ctrl-C sent to the whole process group (systemd,
    # a terminal) must not end it before the gateway has flushed its queue.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Keep the real stdout for answers; stray prints (libraries) go to stderr instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = os.fdopen(0, "rb", buffering=0)
    try:
        serve(args[0], requests, answers)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
