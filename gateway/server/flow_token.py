"""Flow tokens: a phone's NAT flow written into this gateway's Record-Route.

A phone behind NAT is reached where its requests come from (its NAT mapping, or its
open TCP/TLS connection), not at the private address its Contact names. For requests
to its registered Contact the registry knows that flow; for the dialogs it takes part
in, the Contact it puts in an INVITE or a 200 may be another one (other parameters,
port, or a GRUU), so the proxy writes the flow into its own Record-Route entry facing
the phone, as RFC 5626 §5.3 edge proxies do, and sends in-dialog requests arriving
from the far side over it. The token is authenticated with a key of this process (a
forged one is ignored; after a restart old tokens are, and the Contact is used).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from gateway.sip.address import Address

#: The URI parameter of this gateway's Record-Route entries that carries a flow.
FLOW_PARAM = "flow"
_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


class FlowTokens:
    """Writes and reads flow tokens under one key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(16)

    def token(self, flow: Address) -> str:
        """``flow`` (transport, host, port) as a URI-parameter-safe token."""
        payload = f"{flow.transport}~{flow.host}~{flow.port}".encode()
        encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{encoded}.{self._mac(encoded)}"

    def flow(self, token: str) -> Address | None:
        """The flow a token names, None when it is malformed or not ours."""
        encoded, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(encoded)):
            return None
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            transport, host, port = payload.split("~")
            number = int(port)
        except ValueError:
            return None
        if transport not in _TRANSPORTS or not 0 < number < 65536:
            return None
        return Address(transport, host, number)

    def _mac(self, encoded: str) -> str:
        return hmac.new(self._key, encoded.encode(), hashlib.sha256).hexdigest()[:16]
