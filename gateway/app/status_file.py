"""Status files in the data dir (``status.json``, ``overlay-status.json``): written by
the running gateway, read by ``p2psip-admin``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gateway.log import get_logger

log = get_logger("gateway.app.status_file")

#: The gateway's status (rewritten every 5 s) and its overlay node's, in the data dir.
STATUS_FILE = "status.json"
OVERLAY_STATUS_FILE = "overlay-status.json"


def write_status_file(path: Path, status: dict[str, Any]) -> None:
    """Replace ``path`` with ``status`` as JSON, atomically (a reader never sees half a
    file); a failure is logged, not raised."""
    try:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status, indent=1))
        os.replace(temporary, path)
    except OSError as exc:
        log.warn("cannot write {path}: {error}", path=str(path), error=exc.strerror)
