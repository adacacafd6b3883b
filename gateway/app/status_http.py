"""The optional HTTP status endpoint (twisted.web): ``/status`` (JSON) and ``/metrics``
(Prometheus text). Off by default; when on, it listens on loopback unless told
otherwise (``[status]``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gateway.app.metrics import Metrics, prometheus_text


class _Json(Resource):
    isLeaf = True

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.state = state

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 - twisted.web API
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.state(), indent=1).encode()


class _Prometheus(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics, state: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.metrics = metrics
        self.state = state

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 - twisted.web API
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return prometheus_text(self.metrics, self.state)


def status_site(metrics: Metrics, state: Callable[[], dict[str, Any]]) -> Site:
    """The web site serving ``/status`` and ``/metrics``."""
    root = Resource()
    root.putChild(b"status", _Json(state))
    root.putChild(b"metrics", _Prometheus(metrics, state))
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site
