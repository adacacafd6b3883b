"""The wire format between the gateway and its registry worker, and the call wrapper
both runners share.

A frame is a 4-byte big-endian length and a pickle. Only the gateway and the worker it
started write to that pipe, so unpickling is safe there.
"""

from __future__ import annotations

import pickle
import struct
import time
from typing import Any

from gateway.registry.store import LocationStore

HEADER = struct.Struct(">I")
PICKLE_PROTOCOL = 5


def frame(payload: Any) -> bytes:
    """One frame: length prefix and pickle of ``payload``."""
    data = pickle.dumps(payload, PICKLE_PROTOCOL)
    return HEADER.pack(len(data)) + data


def invoke(store: LocationStore, method: str, args: tuple[Any, ...],
           stamp: str | None) -> tuple[int, Any]:
    """``store.<method>(*args)`` with a ``time.monotonic_ns()`` stamp taken before the call
    (``stamp == "before"``) or after it; CLOCK_MONOTONIC is one clock for every process
    of the machine, so the gateway can order a load against a commit."""
    before = time.monotonic_ns()
    result = getattr(store, method)(*args)
    return (before if stamp == "before" else time.monotonic_ns()), result
