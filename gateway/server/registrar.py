"""REGISTER processing (RFC 3261 §10.3), sans-IO.

:meth:`Registrar.decide` turns a REGISTER and the AoR's current bindings into either an
error response or the new binding set to commit; :meth:`Registrar.ok_response` builds
the 200 OK once the caller has made that set durable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache

from gateway.registry.binding import Binding
from gateway.sip.address import Address
from gateway.sip.errors import SipSyntaxError
from gateway.sip.headers import NameAddr, parse_delta_seconds, parse_name_addr
from gateway.sip.message import Request, Response
from gateway.sip.responses import build_response
from gateway.sip.uri import SipUri, bracketed, parse_uri

SUPPORTED_EXTENSIONS = ("path",)
# The registry indexes (aor, contact); PostgreSQL caps an index entry near 2.7 KB.
MAX_AOR_LENGTH = 512
MAX_CONTACT_LENGTH = 1024
_QVALUE = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """Limits from ``[registrar]``."""

    min_expires: int
    max_expires: int
    default_expires: int
    max_contacts: int
    #: The shortest registration of a phone behind NAT (it refreshes often to keep its
    #: NAT binding open; RFC 5626 phones send keep-alives instead).
    nat_min_expires: int
    #: Flow-Timer for RFC 5626 outbound registrations (0: none sent).
    flow_timer: int = 0


@dataclass(frozen=True, slots=True)
class RegisterDecision:
    """What to do with a REGISTER: answer ``response`` now, or commit ``bindings`` (the
    complete new set for ``aor``) and then answer with :meth:`Registrar.ok_response`."""

    response: Response | None = None
    aor: str | None = None
    bindings: tuple[Binding, ...] | None = None


class Registrar:
    """The registrar's decisions; owns no state (bindings come from the location service)."""

    def __init__(self, policy: RegistrarPolicy, is_local: Callable[[str], bool],
                 owner: str = "") -> None:
        """``owner``: this gateway's id in the site, written into every binding it
        registers (the gateway that holds the phone's flow)."""
        self.policy = policy
        self.is_local = is_local
        self.owner = owner

    def aor_of(self, request: Request) -> str | None:
        """The AoR a REGISTER is about, or None if it cannot be one of ours."""
        uri = request.to.uri
        if not isinstance(uri, SipUri) or not self.is_local(uri.host):
            return None
        return uri.aor()

    def decide(self, request: Request, source: Address, current: list[Binding],
               now: float) -> RegisterDecision:
        """Apply RFC 3261 §10.3 steps 1–7 to ``request``.

        Raises :class:`SipSyntaxError` for malformed headers (the caller answers 400).
        """
        uri = request.uri
        if not isinstance(uri, SipUri):
            return self._error(request, 416)
        if not self.is_local(uri.host):
            return self._error(request, 403, "Domain Not Served Here")
        unsupported = [tag for tag in request.option_tags("require")
                       if tag not in SUPPORTED_EXTENSIONS]
        if unsupported:
            return self._error(request, 420, headers=[("Unsupported", ", ".join(unsupported))])
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri) or not to_uri.user:
            return self._error(request, 404, "Not Found (To is not an address-of-record)")
        if not self.is_local(to_uri.host):
            return self._error(request, 404, "Not Found (AoR not in a domain served here)")
        aor = to_uri.aor()
        if len(aor) > MAX_AOR_LENGTH:
            return self._error(request, 400, "Bad Request (address-of-record too long)")
        contacts = request.contacts
        paths = tuple(request.header_values("path"))
        if paths and "path" not in request.option_tags("supported"):
            return self._error(request, 420, "Bad Extension (Path without Supported: path)",
                               headers=[("Unsupported", "path")])
        live = {_key(b.contact): b for b in current if b.is_live(now)}
        if not contacts:
            return RegisterDecision(aor=aor, bindings=tuple(live.values()))

        call_id = request.call_id
        cseq = request.cseq.number
        if any(c.is_wildcard for c in contacts):
            if len(contacts) != 1 or request.expires != 0:
                return self._error(request, 400,
                                   "Bad Request (Contact * needs Expires: 0 and no other Contact)")
            if any(b.call_id == call_id and cseq <= b.cseq for b in live.values()):
                return self._error(request, 400, "Bad Request (out-of-order CSeq)")
            return RegisterDecision(aor=aor, bindings=())

        header_expires = request.expires
        min_expires = (min(self.policy.nat_min_expires, self.policy.min_expires)
                       if behind_nat(request, source) else self.policy.min_expires)
        user_agent = (request.header("user-agent") or "")[:200]
        received = f"{bracketed(source.host)}:{source.port}"
        too_brief = False
        listed: dict[str, Binding | None] = {}  # contacts of this REGISTER (None: removed)
        for contact in contacts:
            address = contact.address
            assert address is not None
            expires_param = address.param("expires")
            if expires_param is not None:
                expires = parse_delta_seconds(expires_param, "Contact expires")
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = self.policy.default_expires
            if 0 < expires < min_expires:
                too_brief = True
                continue
            expires = min(expires, self.policy.max_expires)
            contact_uri = str(address.uri)
            if len(contact_uri) > MAX_CONTACT_LENGTH:
                return self._error(request, 400, "Bad Request (Contact URI too long)")
            key = (address.uri.matching_key() if isinstance(address.uri, SipUri)
                   else contact_uri)
            old = live.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return self._error(request, 400, "Bad Request (out-of-order CSeq)")
            if expires == 0:
                live.pop(key, None)
                listed[key] = None
                continue
            live[key] = listed[key] = Binding(
                aor=aor, contact=contact_uri, expires=now + expires, q=_qvalue(address),
                call_id=call_id, cseq=cseq, path=paths, received=received,
                transport=source.transport, instance_id=address.param("+sip.instance") or "",
                reg_id=_reg_id(address.param("reg-id")), user_agent=user_agent,
                registered_at=old.registered_at if old is not None else now,
                owner=self.owner)
        if too_brief:
            return self._error(request, 423,
                               headers=[("Min-Expires", str(min_expires))])
        for key in [k for k, b in live.items() if k not in listed and any(
                _supersedes(new, b) for new in listed.values() if new is not None)]:
            del live[key]
        if len(live) > self.policy.max_contacts:
            return self._error(request, 403,
                               f"Forbidden (too many contacts, at most "
                               f"{self.policy.max_contacts})")
        return RegisterDecision(aor=aor, bindings=tuple(live.values()))

    def ok_response(self, request: Request, bindings: tuple[Binding, ...] | list[Binding],
                    now: float) -> Response:
        """200 OK listing every live binding with its remaining time (RFC 3261 §10.3 step 8)."""
        headers: list[tuple[str, str]] = []
        for binding in sorted(bindings, key=lambda b: -b.q):
            if not binding.is_live(now):
                continue
            value = f"<{binding.contact}>;expires={binding.remaining(now)}"
            if binding.q != 1.0:
                value += f";q={binding.q:.3g}"
            headers.append(("Contact", value))
        paths = request.header_values("path")
        if paths and "path" in request.option_tags("supported"):
            headers.extend(("Path", path) for path in paths)
            headers.append(("Supported", "path"))
        if _outbound(request, paths):
            # RFC 5626 §6: the flow is kept (the proxy reaches the phone over it) and
            # the phone keeps it alive at this pace.
            headers.append(("Require", "outbound"))
            if self.policy.flow_timer:
                headers.append(("Flow-Timer", str(self.policy.flow_timer)))
        headers.append(("Date", _http_date(int(now))))
        return build_response(request, 200, headers=headers)

    def _error(self, request: Request, status: int, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> RegisterDecision:
        return RegisterDecision(response=build_response(request, status, reason, headers or ()))


@lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    """The Date header value for a whole second (the same for every response in it)."""
    return formatdate(second, usegmt=True)


@lru_cache(maxsize=65536)
def _key(contact_uri: str) -> str:
    uri = parse_uri(contact_uri)
    return uri.matching_key() if isinstance(uri, SipUri) else str(uri)


def _qvalue(address: NameAddr) -> float:
    raw = address.param("q")
    if raw is None:
        return 1.0
    if not _QVALUE.match(raw):
        raise SipSyntaxError(f"bad q value {raw!r}")
    return float(raw)


def _supersedes(new: Binding, old: Binding) -> bool:
    """Whether ``new`` replaces ``old``, a binding with another Contact: the same
    device and flow number (RFC 5626 §6: same +sip.instance and reg-id), or the same
    phone in the same boot cycle (same Call-ID, RFC 3261 §10.2.4) coming back from
    another port of the same host, as after a restart of its SIP stack or a new TCP
    connection, whose old Contact would otherwise ring on until it expired."""
    if new.instance_id and new.reg_id:
        return new.instance_id == old.instance_id and new.reg_id == old.reg_id
    if new.call_id != old.call_id or new.received == old.received:
        return False
    return new.received.rpartition(":")[0] == old.received.rpartition(":")[0]


def _reg_id(raw: str | None) -> int:
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 2**31:
        raise SipSyntaxError("bad reg-id")
    return int(raw)


def _outbound(request: Request, paths: list[str]) -> bool:
    """Whether a REGISTER asks for RFC 5626 outbound and this gateway is its first hop:
    ``Supported: outbound``, a Contact with ``reg-id`` and ``+sip.instance``, and no
    Path (an edge proxy before us would need to say ``ob`` in its Path)."""
    if "outbound" not in request.option_tags("supported"):
        return False
    if paths:
        try:
            first_hop = parse_name_addr(paths[-1]).uri
        except SipSyntaxError:
            return False
        if not isinstance(first_hop, SipUri) or first_hop.param("ob") is None:
            return False
    return any(c.address is not None and c.address.param("reg-id") is not None
               and c.address.param("+sip.instance") is not None for c in request.contacts)


def behind_nat(request: Request, source: Address) -> bool:
    """Whether a request came through NAT: its source is not what its top Via or its
    first Contact says (the phone wrote its private address), as RFC 3581 detects it."""
    top = request.vias[0]
    if top.host.strip("[]") != source.host:
        return True
    # Over TCP/TLS the source port is the connection's, not the one the phone listens on.
    if not source.reliable and (top.port or 5060) != source.port:
        return True
    contacts = request.contacts
    if contacts and contacts[0].address is not None:
        uri = contacts[0].address.uri
        if isinstance(uri, SipUri) and uri.host.strip("[]") != source.host:
            return True
    return False
