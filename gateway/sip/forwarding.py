"""Header work a proxy does when it forwards (RFC 3261 §16.4–16.7), as pure functions.

Nothing here decides where a request goes; it rewrites messages and computes values:
branches with a loop-detection hash, Via and Route handling, Record-Route values, and
the transport address a URI names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from collections.abc import Callable

from gateway.sip.address import Address
from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import NameAddr, parse_name_addr, split_list
from gateway.sip.message import Request, Response
from gateway.sip.transaction import MAGIC_COOKIE
from gateway.sip.uri import SipUri, bracketed

#: Branches this gateway creates: magic cookie, this prefix, loop hash, '.', a counter.
BRANCH_PREFIX = MAGIC_COOKIE + "gw"
_counter = itertools.count(1)
_instance = hashlib.blake2b(str(id(_counter)).encode(), digest_size=4).hexdigest()

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


def loop_hash(request: Request) -> str:
    """A hash of what identifies a request at one proxy hop (RFC 3261 §16.6 step 8,
    without the top Via, which RFC 5393 shows cannot detect loops): Request-URI, From
    and To tags, Call-ID and CSeq number. The same request coming back unchanged is a
    loop; a spiral comes back with another Request-URI."""
    text = "\x00".join((str(request.uri), request.from_.tag or "", request.to.tag or "",
                        request.call_id, str(request.cseq.number)))
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()


def new_branch(request_loop_hash: str) -> str:
    """A unique branch for forwarding a request whose :func:`loop_hash` (as received)
    is ``request_loop_hash``."""
    return f"{BRANCH_PREFIX}{request_loop_hash}.{_instance}{next(_counter):x}"


def stateless_branch(request: Request) -> str:
    """The branch for a request forwarded without a transaction (an ACK for a 2xx):
    derived from the incoming top Via branch, so a retransmission gets the same one."""
    incoming = request.top_via.branch or str(request.top_via)
    digest = hashlib.blake2b(incoming.encode("utf-8", "surrogateescape"),
                             digest_size=8).hexdigest()
    return f"{BRANCH_PREFIX}{loop_hash(request)}.s{digest}"


def is_loop(request: Request, is_me: Callable[[str, int | None], bool]) -> bool:
    """Whether ``request`` carries a Via of ours with the loop hash it has now
    (RFC 3261 §16.3 step 4): it went through this gateway unchanged before."""
    current: str | None = None
    for via in request.vias:
        branch = via.branch or ""
        if not branch.startswith(BRANCH_PREFIX) or not is_me(via.host, via.port):
            continue
        if current is None:
            current = loop_hash(request)
        if branch[len(BRANCH_PREFIX):].split(".", 1)[0] == current:
            return True
    return False


def via_value(transport: str, host: str, port: int, branch: str) -> str:
    """A Via value for this gateway (``rport`` asks for RFC 3581 symmetric responses)."""
    return f"SIP/2.0/{transport.upper()} {bracketed(host)}:{port};branch={branch};rport"


def record_route_value(host: str, port: int, transport: str, secure: bool = False) -> str:
    """A Record-Route value naming this gateway on one transport (loose routing); a
    SIPS URI for a TLS side of a ``sips:`` request (RFC 3261 §16.6 step 4)."""
    if secure and transport in ("tls", "wss"):
        suffix = ";transport=wss" if transport == "wss" else ""
        return f"<sips:{bracketed(host)}:{port}{suffix};lr>"
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:{bracketed(host)}:{port}{suffix};lr>"


def decrement_max_forwards(request: Request, received: int | None) -> None:
    """Set Max-Forwards one below what was received (70 when absent, RFC 3261 §16.6)."""
    request.set_header("Max-Forwards", str(69 if received is None else received - 1))


def routes(request: Request) -> list[str]:
    """The Route values of ``request``, in order (raw text)."""
    return request.header_values("route")


def set_routes(request: Request, values: list[str]) -> None:
    """Replace every Route line by one line per value (or none)."""
    request.remove_header("route")
    for value in values:
        request.add_header("Route", value)


def pop_own_routes(request: Request, is_me: Callable[[str, int | None], bool]) -> bool:
    """Remove the Route values at the top that name this gateway (one, or two after a
    double Record-Route); return whether any was removed (RFC 3261 §16.4)."""
    values = routes(request)
    removed = 0
    while removed < len(values) and _names_me(values[removed], is_me):
        removed += 1
    if removed:
        set_routes(request, values[removed:])
    return bool(removed)


def own_route_param(request: Request, is_me: Callable[[str, int | None], bool],
                    name: str) -> str | None:
    """The URI parameter ``name`` of the Route values at the top of ``request`` that
    name this gateway (look before :func:`pop_own_routes`), None when none has it."""
    for value in routes(request):
        try:
            uri = parse_name_addr(value).uri
        except SipSyntaxError:
            return None
        if not isinstance(uri, SipUri) or not is_me(uri.host, uri.port):
            return None
        found = uri.param(name)
        if found:
            return found
    return None


def apply_strict_route(request: Request, is_me: Callable[[str, int | None], bool]) -> bool:
    """Strict-router compatibility (RFC 3261 §16.4): when the Request-URI is a value
    this gateway put into a Record-Route (its own address, no user part) and Route
    values follow, the last Route becomes the Request-URI. Returns whether it did."""
    uri = request.uri
    if not isinstance(uri, SipUri) or uri.user or not is_me(uri.host, uri.port):
        return False
    values = routes(request)
    if not values:
        return False
    request.uri = parse_name_addr(values[-1]).uri
    set_routes(request, values[:-1])
    return True


def _names_me(value: str, is_me: Callable[[str, int | None], bool]) -> bool:
    try:
        uri = parse_name_addr(value).uri
    except SipSyntaxError:
        return False
    return isinstance(uri, SipUri) and is_me(uri.host, uri.port)


def without_top_via(response: Response) -> Response:
    """A copy of ``response`` with the topmost Via value removed (RFC 3261 §16.7 step 3)."""
    headers = []
    removed = False
    for key, name, value in response.headers:
        if key == "via" and not removed:
            removed = True
            rest = split_list(value)[1:]
            headers.extend((key, name, v) for v in rest)
            continue
        headers.append((key, name, value))
    return Response(response.status, response.reason, headers, response.body)


def uri_address(uri: SipUri) -> Address | None:
    """Where a SIP URI says to send (``maddr``, host, port, ``transport``); None when the
    host is a name, which the proxy locates in DNS (RFC 3263)."""
    transport = uri.transport or "udp"
    if uri.secure and transport != "wss":
        transport = "tls"
    host = uri.param("maddr") or uri.host
    host = host.strip("[]")
    name = ""
    if host.lower() == "localhost":
        host, name = "127.0.0.1", "localhost"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    port = uri.port or DEFAULT_PORTS.get(transport, 5060)
    return Address(transport, host, port, 0, name)


def received_address(received: str, transport: str) -> Address | None:
    """The flow a binding's REGISTER came from (``host:port`` as stored), if valid."""
    host, sep, port = received.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return Address(transport, host.strip("[]"), int(port))


def route_target(value: str) -> NameAddr:
    """Parse one Route value."""
    return parse_name_addr(value)
