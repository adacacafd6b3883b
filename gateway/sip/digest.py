"""HTTP Digest for SIP (RFC 3261 §22, RFC 8760, RFC 7616), as pure functions.

Challenges are built, credentials parsed and responses computed here; which requests
are challenged, where the HA1 values come from and what a failure costs is
:mod:`gateway.auth`'s business. Only ``qop=auth`` is offered (RFC 8760 makes ``qop``
mandatory); the ``-sess`` algorithms and ``auth-int`` are not.

Nonces are stateless: 4 bytes of issue time, 8 random bytes and an HMAC-SHA-256 of both
(and the realm) under the gateway's secret, so any nonce can be checked and dated
without remembering it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from enum import Enum

from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import _quoted_end, is_token, unquote_string

#: Algorithms by their RFC 8760 names, strongest first.
ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
HA1_LENGTH = {"SHA-256": 64, "MD5": 32}
_NONCE = struct.Struct(">I8s")
_MAC_SIZE = 16


def canonical_algorithm(name: str) -> str | None:
    """The RFC 8760 spelling of an algorithm name, None for one not supported."""
    upper = name.strip().upper()
    return upper if upper in ALGORITHMS else None


def digest(algorithm: str, text: str) -> str:
    """``H(text)`` in lower-case hex (text encoded as UTF-8)."""
    return ALGORITHMS[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username ":" realm ":" password)``: what the registry stores per algorithm."""
    return digest(algorithm, f"{username}:{realm}:{password}")


def expected_response(algorithm: str, ha1_value: str, nonce: str, nc: str, cnonce: str,
                      qop: str, method: str, digest_uri: str) -> str:
    """The ``response`` parameter a client with ``ha1_value`` computes (qop=auth)."""
    ha2 = digest(algorithm, f"{method}:{digest_uri}")
    return digest(algorithm, f"{ha1_value}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True)
class Credentials:
    """One parsed ``Authorization``/``Proxy-Authorization`` value (Digest scheme)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str  # as sent ("MD5" when absent)
    qop: str | None
    nc: str | None
    cnonce: str | None
    opaque: str | None


def parse_credentials(value: str) -> Credentials:
    """Parse a Digest credentials value; raises :class:`SipSyntaxError` when it is not
    one (other schemes included)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipSyntaxError(f"not Digest credentials ({scheme[:20]!r})")
    params = _auth_params(rest)
    missing = [name for name in ("username", "realm", "nonce", "uri", "response")
               if name not in params]
    if missing:
        raise SipSyntaxError(f"Digest credentials without {', '.join(missing)}")
    return Credentials(params["username"], params["realm"], params["nonce"], params["uri"],
                       params["response"].lower(), params.get("algorithm", "MD5"),
                       params.get("qop"), params.get("nc"), params.get("cnonce"),
                       params.get("opaque"))


def _auth_params(text: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas, values tokens or quoted strings; the
    first occurrence of a name counts."""
    params: dict[str, str] = {}
    index, length = 0, len(text)
    while index < length:
        while index < length and text[index] in " \t,":
            index += 1
        if index >= length:
            break
        equals = text.find("=", index)
        if equals < 0:
            raise SipSyntaxError("bad Digest parameter")
        name = text[index:equals].strip().lower()
        if not is_token(name):
            raise SipSyntaxError(f"bad Digest parameter name {name[:20]!r}")
        index = equals + 1
        while index < length and text[index] in " \t":
            index += 1
        if index < length and text[index] == '"':
            end = _quoted_end(text, index)
            raw = unquote_string(text[index:end])
        else:
            end = text.find(",", index)
            end = length if end < 0 else end
            raw = text[index:end].strip()
            if not raw:
                raise SipSyntaxError(f"empty Digest parameter {name[:20]!r}")
        params.setdefault(name, raw)
        index = end
    return params


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate``/``Proxy-Authenticate`` Digest value
    (names lower-cased); raises :class:`SipSyntaxError` for other schemes."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipSyntaxError(f"not a Digest challenge ({scheme[:20]!r})")
    return _auth_params(rest)


def client_credentials(challenge: dict[str, str], *, method: str, uri: str, username: str,
                       password: str, nc: int, cnonce: str) -> str | None:
    """Our answer to ``challenge`` as a UAC (qop=auth when offered, else RFC 2069 style);
    None when its algorithm is not one we support."""
    algorithm = canonical_algorithm(challenge.get("algorithm", "MD5"))
    if algorithm is None:
        return None
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    secret = ha1(algorithm, username, realm, password)
    ha2 = digest(algorithm, f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    parts = [f"username={_quote(username)}", f"realm={_quote(realm)}",
             f"nonce={_quote(nonce)}", f"uri={_quote(uri)}", f"algorithm={algorithm}"]
    if "auth" in qops:
        count = f"{nc:08x}"
        response = digest(algorithm, f"{secret}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        parts += [f"response={_quote(response)}", f"cnonce={_quote(cnonce)}", "qop=auth",
                  f"nc={count}"]
    else:
        parts.append(f"response={_quote(digest(algorithm, f'{secret}:{nonce}:{ha2}'))}")
    if "opaque" in challenge:
        parts.append(f"opaque={_quote(challenge['opaque'])}")
    return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, nonce: str, opaque: str, algorithm: str, stale: bool) -> str:
    """One ``WWW-Authenticate``/``Proxy-Authenticate`` value."""
    value = (f"Digest realm={_quote(realm)}, nonce={_quote(nonce)}, "
             f"opaque={_quote(opaque)}, algorithm={algorithm}, qop=\"auth\"")
    return value + ", stale=true" if stale else value


class NonceState(Enum):
    """What :meth:`NonceFactory.check` found."""

    VALID = "valid"
    STALE = "stale"  # genuine, but older than the lifetime
    INVALID = "invalid"  # not one of ours (forged, other realm, other secret)


class NonceFactory:
    """Issues and checks stateless nonces under one secret."""

    def __init__(self, secret: bytes, lifetime: float) -> None:
        self.secret = secret
        self.lifetime = lifetime

    def _mac(self, payload: bytes, realm: str) -> bytes:
        return hmac.new(self.secret, payload + realm.encode("utf-8", "surrogateescape"),
                        hashlib.sha256).digest()[:_MAC_SIZE]

    def issue(self, realm: str, now: float) -> str:
        """A fresh nonce for ``realm``."""
        payload = _NONCE.pack(int(now) & 0xFFFFFFFF, os.urandom(8))
        raw = payload + self._mac(payload, realm)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def check(self, nonce: str, realm: str, now: float) -> tuple[NonceState, float]:
        """Whether ``nonce`` is ours for ``realm`` and still fresh; with its issue time."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return NonceState.INVALID, 0.0
        if len(raw) != _NONCE.size + _MAC_SIZE:
            return NonceState.INVALID, 0.0
        payload, mac = raw[:_NONCE.size], raw[_NONCE.size:]
        if not hmac.compare_digest(mac, self._mac(payload, realm)):
            return NonceState.INVALID, 0.0
        issued = float(_NONCE.unpack(payload)[0])
        if not issued - 5 <= now <= issued + self.lifetime:
            return NonceState.STALE, issued
        return NonceState.VALID, issued

    def opaque(self, realm: str) -> str:
        """The ``opaque`` value of ``realm`` (constant under one secret)."""
        return hmac.new(self.secret, b"opaque:" + realm.encode("utf-8", "surrogateescape"),
                        hashlib.sha256).hexdigest()[:16]

    def decoy_ha1(self, algorithm: str, username: str, realm: str) -> str:
        """An HA1 no password produces, computed like a real one: checked in place of a
        user that does not exist, so an unknown user costs the same work."""
        mac = hmac.new(self.secret, f"decoy:{username}:{realm}".encode(
            "utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
        return mac[:HA1_LENGTH[algorithm]]
