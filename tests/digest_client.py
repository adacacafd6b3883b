"""Client side of SIP digest authentication for tests, written from RFC 7616/8760 on
its own (not with the gateway's code, so a shared mistake cannot hide)."""

from __future__ import annotations

import hashlib
import re
import uuid

_HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_PARAM = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of one ``Digest ...`` challenge (quotes removed)."""
    assert value.startswith("Digest "), value
    return {name.lower(): raw.strip('"') for name, raw in _PARAM.findall(value[7:])}


def h(algorithm: str, text: str) -> str:
    """``H(text)`` in hex."""
    return _HASHES[algorithm](text.encode()).hexdigest()


def authorization(challenge: dict[str, str], *, method: str, uri: str, username: str,
                  password: str, nc: int = 1, cnonce: str | None = None,
                  algorithm: str | None = None) -> str:
    """An ``Authorization`` value answering ``challenge`` (qop=auth)."""
    algorithm = algorithm or challenge.get("algorithm", "MD5")
    cnonce = cnonce or uuid.uuid4().hex[:16]
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = h(algorithm, f"{username}:{realm}:{password}")
    ha2 = h(algorithm, f"{method}:{uri}")
    count = f"{nc:08x}"
    response = h(algorithm, f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{challenge["opaque"]}"' if "opaque" in challenge else ""
    return (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", '
            f'uri="{uri}", response="{response}", algorithm={algorithm}, '
            f'cnonce="{cnonce}", qop=auth, nc={count}{opaque}')
