"""The overlay node id: random on first start, kept in ``<data_dir>/overlay.node_id`` so
the node keeps its place in the DHT across restarts."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

NODE_ID_FILE = "overlay.node_id"


def load_node_id(data_dir: str) -> bytes:
    """The 20-byte node id of this gateway (created on first use)."""
    path = Path(data_dir) / NODE_ID_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) == 40:
            return bytes.fromhex(text)
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    node_id = os.urandom(20)
    # A node id that changes on restart still works; the DHT re-learns it.
    with contextlib.suppress(OSError):
        path.write_text(node_id.hex() + "\n", encoding="ascii")
    return node_id
