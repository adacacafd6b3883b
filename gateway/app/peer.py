"""``p2psip-peer``: an overlay peer (a P2PSIP user agent) for people and tests.

::

    p2psip-peer join --bootstrap 127.0.0.1:6084 --aor sip:carol@overlay.example
    p2psip-peer lookup --bootstrap 127.0.0.1:6084 sip:bob@b.example
    p2psip-peer call --bootstrap 127.0.0.1:6084 --from sip:carol@overlay.example \
        sip:bob@b.example

``join`` becomes a full DHT node, publishes a signed record for its AoR whose route is
its own SIP URI, and answers calls (200 with a minimal SDP, or ``--reject 486``) until
interrupted. ``lookup`` prints the merged, signature-checked records as JSON. ``call``
looks the target up and places INVITE → 200 → ACK → BYE → 200 (``--hold`` seconds in
between). ``lookup`` and ``call`` use the overlay as a client: no node adds them to its
routing table, so a one-off command leaves no dead contact behind. The peer signs with
a key and a self-signed certificate for its AoR's domain kept in ``--state-dir``
(readers accept it once they trust that certificate for the domain: its
fingerprint in DNS, a pin, or ``first_pin = replicas``); ``--aor self@DOMAIN`` makes a
self-certifying AoR instead (its user part derived from the key).

It is a user agent, not a proxy: one UDP socket, the gateway's SIP parser and response
builder, requests retransmitted on RFC 3261 timer A/E schedules (bounded).
Exit status: 0 success, 1 the call or lookup failed, 2 usage or start-up error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway import __version__
from gateway.app.config import defaults
from gateway.app.values import pins as pins_setting
from gateway.app.wiring import tls_settings
from gateway.overlay.acceptance import RecordAcceptance
from gateway.overlay.dns_fingerprints import DomainFingerprints
from gateway.overlay.node import OverlayNode
from gateway.overlay.record import Contact, Record, Signer, decode_bundle, self_certifying_user
from gateway.overlay.service import parse_peers
from gateway.overlay.trust import FIRST_PIN_RULES, MemoryPins, RecordTrust
from gateway.sip.dns import DnsClient
from gateway.sip.errors import SipSyntaxError
from gateway.sip.message import Request, Response
from gateway.sip.parser import ParseError, parse_message
from gateway.sip.responses import build_response
from gateway.sip.tls import load_material
from gateway.sip.uri import SipUri, parse_uri

PROG = "p2psip-peer"
#: Seconds a lookup may take (the gateway's resolver waits as long).
LOOKUP_TIMEOUT = 4.0
SDP = (b"v=0\r\no=p2psip-peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
T1 = 0.5


class PeerError(Exception):
    """A failure to report in one line (exit status 1)."""


def _sdp(ip: str) -> bytes:
    return SDP.replace(b"{ip}", ip.encode())


class SipEndpoint(asyncio.DatagramProtocol):
    """One UDP socket: answers requests through ``on_request``, hands responses to the
    waiting client transaction (by branch)."""

    def __init__(self, on_request: Any) -> None:
        self.on_request = on_request
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[str, asyncio.Queue[Response]] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = parse_message(data)
        except ParseError:
            return
        try:
            if isinstance(message, Response):
                queue = self.waiting.get(message.top_via.branch or "")
                if queue is not None:
                    queue.put_nowait(message)
                return
            response = self.on_request(message)
        except SipSyntaxError:
            return
        if response is not None and self.transport is not None:
            self.transport.sendto(response.serialize(), (addr[0], addr[1]))

    async def request(self, request: Request, destination: tuple[str, int],
                      final_timeout: float = 32.0) -> Response:
        """Send ``request`` and return its final response (retransmitting while no
        response came; 100 Trying and other provisionals are skipped)."""
        assert self.transport is not None
        branch = request.top_via.branch or ""
        queue: asyncio.Queue[Response] = asyncio.Queue()
        self.waiting[branch] = queue
        data = request.serialize()
        deadline = time.monotonic() + final_timeout
        interval, answered = T1, False
        try:
            self.transport.sendto(data, destination)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerError(f"no final response to {request.method} from "
                                    f"{destination[0]}:{destination[1]}")
                try:
                    response = await asyncio.wait_for(queue.get(),
                                                      min(interval, remaining))
                except TimeoutError:
                    if not answered:
                        self.transport.sendto(data, destination)
                        interval = min(interval * 2, 4.0)
                    continue
                answered = True
                if response.status >= 200:
                    return response
        finally:
            self.waiting.pop(branch, None)


class Peer:
    """An overlay node with a SIP user agent on one host."""

    def __init__(self, aor: str, signer: Signer, host: str, sip_port: int,
                 overlay_port: int, k: int, reject: int = 0, client: bool = False,
                 fingerprints: DomainFingerprints | None = None,
                 pins: dict[str, str] | None = None, first_pin: str = "dns") -> None:
        """``client``: use the overlay as a client (a one-off lookup or call), not as
        a node others keep in their routing tables; ``pins``: domain -> certificate
        fingerprint trusted from the start; ``first_pin``: how other domains get theirs
        (:class:`gateway.overlay.trust.RecordTrust`)."""
        self.aor = aor
        self.signer = signer
        self.host = host
        settings = defaults().overlay
        self.node = OverlayNode(ksize=k, rpc_timeout=settings.rpc_timeout, client=client,
                                difficulty=settings.id_difficulty,
                                ids_per_address=settings.ids_per_address,
                                paths=settings.paths)
        self.sip_port = sip_port
        self.overlay_port = overlay_port
        self.reject = reject
        self.endpoint = SipEndpoint(self._answer)
        self.calls_answered = 0
        self.fingerprints = fingerprints
        store = MemoryPins()  # pins for this run
        store.pins.update(pins or {})
        self.trust = RecordTrust("tofu", pin_store=store, first_pin=first_pin,
                                 published=fingerprints.get if fingerprints else None)
        self.acceptance = RecordAcceptance(self.trust)

    @property
    def contact(self) -> str:
        """The peer's own SIP URI (its record's route)."""
        return f"sip:{_user(self.aor)}@{self.host}:{self.sip_port}"

    async def start(self, bootstrap: Sequence[tuple[str, int]]) -> None:
        """Listen (SIP and DHT) and join through ``bootstrap``."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.endpoint,
                                            local_addr=(self.host, self.sip_port))
        assert self.endpoint.transport is not None
        self.sip_port = self.endpoint.transport.get_extra_info("sockname")[1]
        await self.node.listen(self.overlay_port, self.host)
        if bootstrap and not await self.node.join(bootstrap):
            raise PeerError("no bootstrap peer answered: "
                            + ", ".join(f"{h}:{p}" for h, p in bootstrap))

    async def publish(self, lifetime: float = 3600.0) -> int:
        """Publish this peer's signed record."""
        contact = Contact(self.contact, 1.0, time.time() + lifetime)
        records = decode_bundle(self.signer.sign(self.aor, [contact], self.contact, lifetime))
        return await self.node.publish(self.aor, records)

    def stop(self) -> None:
        """Close the sockets."""
        self.node.stop()
        if self.endpoint.transport is not None:
            self.endpoint.transport.close()

    # --- the UAS side -----------------------------------------------------------------

    def _answer(self, request: Request) -> Response | None:
        if request.method == "ACK":
            return None
        if request.method == "INVITE":
            if self.reject:
                return build_response(request, self.reject)
            self.calls_answered += 1
            headers = [("Contact", f"<{self.contact}>"), ("Content-Type", "application/sdp")]
            headers += [("Record-Route", v) for v in request.header_values("record-route")]
            return build_response(request, 200, headers=headers, body=_sdp(self.host),
                                  to_tag=_tag(request))
        if request.method in ("BYE", "CANCEL", "OPTIONS"):
            return build_response(request, 200)
        return build_response(request, 405, headers=[("Allow", "INVITE, ACK, BYE, CANCEL, "
                                                                "OPTIONS")])

    # --- the UAC side -----------------------------------------------------------------

    async def lookup(self, aor: str) -> list[Record]:
        """The live records of ``aor`` whose signature verifies and whose signer the
        certificate entitles to the AoR's domain (trust on first use, for this run)."""
        lookup = self.node.lookup_detail(aor, self.acceptance.acceptable, LOOKUP_TIMEOUT)
        records, result = await (self.fingerprints.during(aor, lookup)
                                 if self.fingerprints is not None else lookup)
        verdict = self.acceptance.judge(aor, records,
                                        served=result.served if result else [])
        for _, reason in verdict.rejected:
            print(f"{PROG}: rejected a record for {aor}: {reason}", file=sys.stderr)
        return verdict.accepted

    async def call(self, target: str, hold: float = 0.5) -> int:
        """INVITE ``target`` through its record's route; returns the final status of the
        INVITE (the BYE is sent and answered for a 2xx)."""
        records = await self.lookup(target)
        if not records:
            raise PeerError(f"{target} not found in the overlay")
        route = parse_uri(records[0].route)
        assert isinstance(route, SipUri)
        destination = (route.host.strip("[]"), route.port or 5060)
        call_id = f"{uuid.uuid4().hex}@{self.host}"
        from_tag = uuid.uuid4().hex[:10]
        request_uri, routes = (records[0].route, []) if route.user else (
            target, [f"<{records[0].route}>"])
        invite = self._request("INVITE", request_uri, target, call_id, from_tag, None, 1,
                               routes, _sdp(self.host))
        response = await self.endpoint.request(invite, destination)
        if response.status >= 300:
            ack = self._request("ACK", request_uri, target, call_id, from_tag,
                                response.to.tag, 1, routes, branch=invite.top_via.branch)
            assert self.endpoint.transport is not None
            self.endpoint.transport.sendto(ack.serialize(), destination)
            return response.status
        dialog_routes = list(reversed(response.header_values("record-route")))
        remote = response.contacts[0].address.uri if response.contacts else invite.uri
        next_hop = destination
        if dialog_routes:
            first = parse_uri(dialog_routes[0].strip("<>").split(">")[0])
            if isinstance(first, SipUri):
                next_hop = (first.host.strip("[]"), first.port or 5060)
        ack = self._request("ACK", str(remote), target, call_id, from_tag, response.to.tag,
                            1, dialog_routes)
        assert self.endpoint.transport is not None
        self.endpoint.transport.sendto(ack.serialize(), next_hop)
        await asyncio.sleep(hold)
        bye = self._request("BYE", str(remote), target, call_id, from_tag, response.to.tag,
                            2, dialog_routes)
        bye_response = await self.endpoint.request(bye, next_hop)
        if bye_response.status >= 300:
            raise PeerError(f"BYE got {bye_response.status}")
        return response.status

    def _request(self, method: str, uri: str, to: str, call_id: str, from_tag: str,
                 to_tag: str | None, cseq: int, routes: list[str], body: bytes = b"",
                 branch: str | None = None) -> Request:
        branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
        headers = [("Via", f"SIP/2.0/UDP {self.host}:{self.sip_port};branch={branch};rport"),
                   ("Max-Forwards", "70"), ("From", f"<{self.aor}>;tag={from_tag}"),
                   ("To", f"<{to}>" + (f";tag={to_tag}" if to_tag else "")),
                   ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
                   ("Contact", f"<{self.contact}>")]
        headers += [("Route", value) for value in routes]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        headers.append(("Content-Length", str(len(body))))
        request = Request(method, parse_uri(uri), [], body)
        for name, value in headers:
            request.add_header(name, value)
        return request


def _user(aor: str) -> str:
    return aor.split(":", 1)[-1].rsplit("@", 1)[0]


def _tag(request: Request) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, request.call_id + (request.from_.tag or "")).hex[:10]


def load_signer(state_dir: Path, aor: str) -> tuple[Signer, str]:
    """The peer's signer (key and self-signed certificate for the AoR's domain, kept in
    ``state_dir``) and its AoR (``self@DOMAIN`` becomes the self-certifying AoR)."""
    domain = aor.rsplit("@", 1)[-1]
    load_material(tls_settings(defaults()), str(state_dir), [domain], ["127.0.0.1"])  # made once
    key = serialization.load_pem_private_key(
        (state_dir / "tls" / "gateway.key").read_bytes(), password=None)
    certificate = x509.load_pem_x509_certificate(
        (state_dir / "tls" / "gateway.crt").read_bytes())
    if _user(aor) == "self":
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return Signer(key, None), f"sip:{self_certifying_user(spki)}@{domain}"
    return Signer(key, certificate), aor


def _shown(record: Record) -> dict[str, Any]:
    """An opened record as ``lookup`` prints it."""
    return {"aor": record.aor, "route": record.route, "seq": record.seq,
            "issued": record.issued, "expires": record.expires, "signer": record.signer,
            "contacts": [{"uri": c.uri, "q": c.q, "expires": c.expires}
                         for c in record.contacts]}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``p2psip-peer``."""
    parser = argparse.ArgumentParser(prog=PROG, description="A P2PSIP overlay peer.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--bootstrap", default="", metavar="HOST:PORT[,...]",
                        help="overlay nodes to join through (IP addresses)")
    parser.add_argument("--host", default="127.0.0.1", help="address to use (default "
                                                            "127.0.0.1)")
    parser.add_argument("--overlay-port", type=int, default=0, help="DHT UDP port (0: any)")
    parser.add_argument("--sip-port", type=int, default=0, help="SIP UDP port (0: any)")
    k = defaults().overlay.k
    parser.add_argument("-k", type=int, default=k, help=f"Kademlia k (default {k})")
    parser.add_argument("--dns", default="", metavar="HOST:PORT[,...]|system",
                        help="DNS servers to read the certificate fingerprints domains "
                             "publish (_p2psip-cert.<domain>) from; \"system\": "
                             "/etc/resolv.conf (default: none, pins of this run only)")
    parser.add_argument("--pin", action="append", default=[], metavar="DOMAIN=SHA256",
                        type=_pins,
                        help="trust this certificate for DOMAIN's records (repeatable; "
                             "p2psip-admin overlay status shows a gateway's)")
    parser.add_argument("--first-pin", choices=FIRST_PIN_RULES, default="dns",
                        help="how a domain neither --pin nor DNS vouches for is trusted: "
                             "dns (never; default) or replicas (the certificate most of "
                             "the closest replicas agree on)")
    parser.add_argument("--state-dir", default="peer-state", type=Path,
                        help="where the peer keeps its key and certificate")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    join = commands.add_parser("join", help="join, publish our record, answer calls")
    join.add_argument("--aor", required=True, help="our AoR (self@DOMAIN: self-certifying)")
    join.add_argument("--reject", type=int, default=0, metavar="STATUS",
                      help="answer INVITEs with this status instead of 200")
    join.add_argument("--for", dest="duration", type=float, default=0.0, metavar="SECONDS",
                      help="leave after this long (default: until interrupted)")
    lookup = commands.add_parser("lookup", help="print the records of an AoR as JSON")
    lookup.add_argument("target", metavar="AOR")
    call = commands.add_parser("call", help="look an AoR up and call it")
    call.add_argument("target", metavar="AOR")
    call.add_argument("--from", dest="aor", default="sip:self@overlay.invalid",
                      help="our AoR (default: a self-certifying one)")
    call.add_argument("--hold", type=float, default=0.5, help="seconds between ACK and BYE")
    return parser


async def _main(args: argparse.Namespace) -> int:
    bootstrap = parse_peers(item for item in args.bootstrap.split(",") if item.strip())
    aor = getattr(args, "aor", None) or "sip:self@overlay.invalid"
    signer, aor = load_signer(args.state_dir, aor)
    # Only "join" stays in the overlay: a lookup or a call must not leave a dead
    # routing-table entry behind on every node it talked to.
    fingerprints = None
    if args.dns:
        servers = (None if args.dns == "system"
                   else list(parse_peers(s for s in args.dns.split(",") if s.strip())))
        fingerprints = DomainFingerprints(DnsClient(servers))
    peer = Peer(aor, signer, args.host, args.sip_port, args.overlay_port, args.k,
                getattr(args, "reject", 0), client=args.command != "join",
                fingerprints=fingerprints, pins=dict(p for given in args.pin for p in given),
                first_pin=args.first_pin)
    await peer.start(bootstrap)
    try:
        if args.command == "lookup":
            started = time.monotonic()
            records = await peer.lookup(args.target)
            took = (time.monotonic() - started) * 1000
            print(json.dumps([_shown(r) for r in records], indent=2))
            print(f"{len(records)} record(s) of {args.target} in {took:.0f} ms",
                  file=sys.stderr)
            return 0 if records else 1
        if args.command == "call":
            status = await peer.call(args.target, args.hold)
            print(f"{args.target}: {status}")
            return 0 if status < 300 else 1
        stored = await peer.publish()
        print(f"{peer.aor} joined as node {peer.node.node.id.hex()[:16]} on udp "
              f"{args.host}:{peer.node.address[1] if peer.node.address else '?'}, "
              f"SIP {peer.contact}, record on {stored} node(s), certificate "
              f"sha256={peer.signer.signer_id}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        republish = 0.0
        started = time.monotonic()
        while not stop.is_set():
            if args.duration and time.monotonic() - started > args.duration:
                break
            if time.monotonic() - republish > 60:  # keep the record fresh
                republish = time.monotonic()
                with contextlib.suppress(Exception):
                    await peer.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return 0
    finally:
        peer.stop()


def _pins(item: str) -> tuple[tuple[str, str], ...]:
    """One ``--pin DOMAIN=SHA256[,…]`` argument, parsed as ``overlay.pins`` is."""
    try:
        given = pins_setting(item)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not given:
        raise argparse.ArgumentTypeError("expected DOMAIN=SHA256")
    return given


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``p2psip-peer``."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except PeerError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
