"""The browser phone the WebSocket listeners serve (``[websocket] page``): our page and
script (``gateway/web/``) and JsSIP's browser bundle, built from the npm registry
(``web/``), read once at start."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from gateway.sip.websocket import Pages

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def phone_pages(jssip: str) -> Pages:
    """``index.html``, ``phone.js`` and ``jssip.js`` (from the file ``jssip``)."""
    web = resources.files("gateway") / "web"
    pages: Pages = {}
    for name in ("index.html", "phone.js"):
        pages[name] = ((web / name).read_bytes(), _TYPES[Path(name).suffix])
    pages["jssip.js"] = (Path(jssip).read_bytes(), _TYPES[".js"])
    return pages
