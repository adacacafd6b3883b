"""Client transactions (RFC 3261 §17.1, with RFC 6026's Accepted state), sans-IO.

The layer takes requests to send, responses received and the current time; it returns
what to put on the wire as ``(bytes, Address)`` pairs and keeps, per transaction, the
responses and timeouts the transaction user (the proxy) must see, which the caller
collects with :meth:`ClientTransactionLayer.take_events`.

Timers: A (INVITE retransmit, UDP), B (INVITE timeout), D (absorb retransmitted non-2xx
finals, 32 s on UDP), E (non-INVITE retransmit, UDP), F (non-INVITE timeout), K (absorb
retransmitted finals, T4 on UDP) and M (RFC 6026: forward 2xx retransmissions for 64*T1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

from gateway.sip.address import Address
from gateway.sip.message import Request, Response
from gateway.sip.transaction import MAGIC_COOKIE, Send, TimerHeap


class ClientState(Enum):
    """Client transaction states (RFC 3261 figures 5 and 6, RFC 6026 figure 5)."""

    CALLING = "calling"  # INVITE sent, nothing heard yet
    TRYING = "trying"  # non-INVITE sent, nothing heard yet
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # INVITE got a 2xx (RFC 6026)
    COMPLETED = "completed"
    TERMINATED = "terminated"


class ClientEvent(Enum):
    """What the transaction user learns about a client transaction."""

    RESPONSE = "response"  # a response to pass on (not a retransmission it absorbed)
    TIMEOUT = "timeout"  # Timer B or F: no final response (RFC 3261 treats it as 408)
    TRANSPORT_ERROR = "transport-error"  # the request could not be sent (treated as 503)


@dataclass(slots=True, eq=False)
class ClientTransaction:
    """One client transaction. ``owner`` is the transaction user's handle (e.g. a proxy
    branch) and ``user`` who hears of its events (None: the proxy); the layer never
    looks into either."""

    key: tuple[str, str]  # (branch, method)
    method: str
    request: Request | None  # dropped with ``data`` once a final response is in
    data: bytes
    destination: Address
    state: ClientState
    owner: object = None
    user: object = None
    interval: float = 0.0
    serial: int = 0
    ack: bytes | None = None  # the ACK sent for a non-2xx final response
    status: int = 0  # highest status received so far
    error: str = ""  # why the transport could not deliver the request

    @property
    def is_invite(self) -> bool:
        """INVITE transactions follow the other state machine."""
        return self.method == "INVITE"


def response_key(response: Response) -> tuple[str, str] | None:
    """The client transaction a response belongs to (RFC 3261 §17.1.3), or None when
    the top Via has no RFC 3261 branch."""
    branch = response.top_via.branch or ""
    if not branch.startswith(MAGIC_COOKIE):
        return None
    method = response.cseq.method
    return (branch, "INVITE" if method == "ACK" else method)


def _hop_request(request: Request, method: str, to: str | None) -> Request:
    """An ACK or CANCEL for ``request`` at this hop: same Request-URI, top Via, From,
    Call-ID, Route and Max-Forwards, CSeq number with ``method``; To as in the request,
    or ``to`` when given."""
    headers = []
    for key, name, value in request.headers:
        if key == "via":
            headers.append((key, name, str(request.top_via)))
        elif key in ("from", "call-id", "route", "max-forwards") or (key == "to"
                                                                     and to is None):
            headers.append((key, name, value))
    if to is not None:
        headers.append(("to", "To", to))
    headers.append(("cseq", "CSeq", f"{request.cseq.number} {method}"))
    headers.append(("content-length", "Content-Length", "0"))
    return Request(method, request.uri, headers)


def build_ack(request: Request, response: Response) -> Request:
    """The ACK of a non-2xx final response to ``request`` (RFC 3261 §17.1.1.3), with the
    response's To (its tag)."""
    return _hop_request(request, "ACK", response.header("to") or request.header("to") or "")


def build_cancel(request: Request) -> Request:
    """The CANCEL of ``request`` (RFC 3261 §9.1)."""
    return _hop_request(request, "CANCEL", None)


class ClientTransactionLayer:
    """All client transactions of one gateway and their timers."""

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0) -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        self._table: dict[tuple[str, str], ClientTransaction] = {}
        self._timers = TimerHeap()
        self._sequence = itertools.count(1)
        self._events: list[tuple[ClientEvent, ClientTransaction, Response | None]] = []

    def __len__(self) -> int:
        return len(self._table)

    def find(self, key: tuple[str, str]) -> ClientTransaction | None:
        """The live transaction with ``key``, if any."""
        return self._table.get(key)

    def take_events(self) -> list[tuple[ClientEvent, ClientTransaction, Response | None]]:
        """Responses, timeouts and transport errors for the TU since the last call."""
        events, self._events = self._events, []
        return events

    # --- sending --------------------------------------------------------------------------

    def send(self, request: Request, destination: Address, owner: object,
             now: float, branch: str | None = None,
             user: object = None) -> tuple[ClientTransaction, list[Send]]:
        """Start a transaction for ``request``, whose top Via carries a fresh branch
        (``branch``, when the caller knows it, saves parsing the Via again)."""
        if branch is None:
            branch = request.top_via.branch or ""
        method = request.method
        data = request.serialize()
        invite = method == "INVITE"
        txn = ClientTransaction((branch, method), method, request, data, destination,
                                ClientState.CALLING if invite else ClientState.TRYING,
                                owner, user, self.t1, next(self._sequence))
        self._table[txn.key] = txn
        if not destination.reliable:
            self._schedule(now + self.t1, "A" if invite else "E", txn)
        self._schedule(now + 64 * self.t1, "B" if invite else "F", txn)
        return txn, [(data, destination)]

    def transport_error(self, txn: ClientTransaction, reason: str = "") -> None:
        """The transport could not deliver ``txn``'s request (RFC 3261 §17.1.4)."""
        if txn.state in (ClientState.CALLING, ClientState.TRYING, ClientState.PROCEEDING):
            txn.error = reason
            self._forget(txn)
            self._events.append((ClientEvent.TRANSPORT_ERROR, txn, None))

    # --- receiving ------------------------------------------------------------------------

    def receive_response(self, response: Response, now: float) -> tuple[bool, list[Send]]:
        """Match ``response``; returns whether a transaction took it (a response event
        may then be waiting in :meth:`take_events`) and what to send (an ACK)."""
        key = response_key(response)
        txn = self._table.get(key) if key is not None else None
        if txn is None:
            return False, []
        status = response.status
        if txn.is_invite:
            return True, self._invite_response(txn, response, status, now)
        self._non_invite_response(txn, response, status, now)
        return True, []

    def _deliver(self, txn: ClientTransaction, response: Response) -> None:
        txn.status = max(txn.status, response.status)
        self._events.append((ClientEvent.RESPONSE, txn, response))

    def _invite_response(self, txn: ClientTransaction, response: Response, status: int,
                         now: float) -> list[Send]:
        state = txn.state
        if status < 200:
            if state in (ClientState.CALLING, ClientState.PROCEEDING):
                txn.state = ClientState.PROCEEDING
                self._deliver(txn, response)
            return []
        if status < 300:
            if state in (ClientState.CALLING, ClientState.PROCEEDING):
                _release(txn)
                txn.state = ClientState.ACCEPTED
                self._schedule(now + 64 * self.t1, "M", txn)
                self._deliver(txn, response)
            elif state is ClientState.ACCEPTED:
                self._deliver(txn, response)  # retransmitted or forked 2xx: pass it on
            return []
        if state in (ClientState.CALLING, ClientState.PROCEEDING):
            assert txn.request is not None
            txn.ack = build_ack(txn.request, response).serialize()
            _release(txn)
            txn.state = ClientState.COMPLETED
            self._schedule(now + (0 if txn.destination.reliable else 32.0), "D", txn)
            self._deliver(txn, response)
            return [(txn.ack, txn.destination)]
        if state is ClientState.COMPLETED and txn.ack is not None:
            return [(txn.ack, txn.destination)]  # the final was retransmitted: ACK again
        return []

    def _non_invite_response(self, txn: ClientTransaction, response: Response, status: int,
                             now: float) -> None:
        if txn.state not in (ClientState.TRYING, ClientState.PROCEEDING):
            return  # retransmitted final: absorbed
        if status < 200:
            txn.state = ClientState.PROCEEDING
            self._deliver(txn, response)
            return
        _release(txn)
        txn.state = ClientState.COMPLETED
        self._schedule(now + (0 if txn.destination.reliable else self.t4), "K", txn)
        self._deliver(txn, response)

    # --- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` next has work, or None."""
        return self._timers.next_deadline()

    def on_timer(self, now: float) -> list[Send]:
        """Fire every timer due at ``now``; timeouts become events."""
        sends: list[Send] = []
        for name, key, serial in self._timers.pop_due(now):
            txn = self._table.get(key)  # type: ignore[arg-type]
            if txn is None or txn.serial != serial:
                continue
            state = txn.state
            if name == "A":
                if state is ClientState.CALLING:
                    sends.append((txn.data, txn.destination))
                    txn.interval *= 2
                    self._schedule(now + txn.interval, "A", txn)
            elif name == "E":
                if state in (ClientState.TRYING, ClientState.PROCEEDING):
                    sends.append((txn.data, txn.destination))
                    txn.interval = (min(2 * txn.interval, self.t2)
                                    if state is ClientState.TRYING else self.t2)
                    self._schedule(now + txn.interval, "E", txn)
            elif name in ("B", "F"):
                # Timer B only runs in Calling: a ringing INVITE waits for the proxy's
                # Timer C instead (RFC 3261 §17.1.1.2, §16.8).
                if state in (ClientState.CALLING, ClientState.TRYING) or (
                        name == "F" and state is ClientState.PROCEEDING):
                    self._forget(txn)
                    self._events.append((ClientEvent.TIMEOUT, txn, None))
            else:  # D, K, M: the transaction's lingering time is over
                self._forget(txn)
        return sends

    def _schedule(self, when: float, name: str, txn: ClientTransaction) -> None:
        self._timers.schedule(when, name, txn.key, txn.serial)

    def _forget(self, txn: ClientTransaction) -> None:
        txn.state = ClientState.TERMINATED
        if self._table.get(txn.key) is txn:
            del self._table[txn.key]


def _release(txn: ClientTransaction) -> None:
    """Drop what only a transaction still waiting for its final response needs: it
    lingers for up to 32 s after it, and a busy proxy holds tens of thousands."""
    txn.request = None
    txn.data = b""
