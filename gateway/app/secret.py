"""The gateway's secret for nonces: random, kept in the data dir so nonces stay valid
across a restart, readable by the gateway's user only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "auth.secret"
SECRET_BYTES = 32


def load_secret(data_dir: str) -> bytes:
    """The secret in ``<data_dir>/auth.secret``, created on first use. Raises OSError
    with a message naming the file when it cannot be read or written."""
    path = Path(data_dir) / SECRET_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise OSError(f"gateway.data_dir: cannot read {path}: {exc}") from None
    if len(text) == SECRET_BYTES * 2:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    secret = secrets.token_bytes(SECRET_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secret.hex() + "\n")
    except OSError as exc:
        raise OSError(f"gateway.data_dir: cannot write {path}: {exc.strerror}") from None
    return secret
