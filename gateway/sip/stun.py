"""STUN keep-alives on the SIP port (RFC 5626 §4.4.1, RFC 8489): a phone behind NAT
sends Binding requests to the port it registered through, to keep its NAT binding open
and to learn whether its public address changed. The answer is a Binding success
response naming the address the request came from (XOR-MAPPED-ADDRESS), with a
FINGERPRINT so it is told apart from SIP on the same port.

Only what a keep-alive needs: no authentication, no other methods. A datagram that is a
STUN message of another kind is ignored, never parsed as SIP.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
HEADER = struct.Struct("!HHI12s")


def is_stun(data: bytes) -> bool:
    """Whether ``data`` is a STUN message (the two top bits of the first byte are zero
    and the magic cookie is in place; no SIP message starts like that)."""
    return (len(data) >= HEADER.size and data[0] < 0x40
            and int.from_bytes(data[4:8], "big") == MAGIC_COOKIE
            and int.from_bytes(data[2:4], "big") % 4 == 0
            and HEADER.size + int.from_bytes(data[2:4], "big") == len(data))


def binding_response(request: bytes, host: str, port: int) -> bytes | None:
    """The Binding success response to ``request`` received from ``host``:``port``, or
    None when ``request`` is not a Binding request (nothing is sent then)."""
    if not is_stun(request):
        return None
    kind, _, _, transaction = HEADER.unpack_from(request)
    if kind != BINDING_REQUEST:
        return None
    address = ipaddress.ip_address(host)
    x_port = port ^ (MAGIC_COOKIE >> 16)
    if address.version == 4:
        x_address = int(address) ^ MAGIC_COOKIE
        value = struct.pack("!BBH", 0, 0x01, x_port) + x_address.to_bytes(4, "big")
    else:
        mask = int.from_bytes(MAGIC_COOKIE.to_bytes(4, "big") + transaction, "big")
        value = struct.pack("!BBH", 0, 0x02, x_port) + (int(address) ^ mask).to_bytes(16, "big")
    attributes = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value
    # FINGERPRINT covers the message up to it, with the length already counting it.
    length = len(attributes) + 8
    head = HEADER.pack(BINDING_SUCCESS, length, MAGIC_COOKIE, transaction)
    crc = (zlib.crc32(head + attributes) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    return head + attributes + struct.pack("!HHI", FINGERPRINT, 4, crc)
