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


class Input(Enum):
    """What can happen to a client transaction."""

    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FINAL = "3xx-6xx"
    TIMER_A = "A"  # retransmit the INVITE (UDP)
    TIMER_B = "B"  # no answer to the INVITE
    TIMER_D = "D"  # retransmitted finals absorbed long enough (INVITE)
    TIMER_E = "E"  # retransmit the request (non-INVITE, UDP)
    TIMER_F = "F"  # no final response (non-INVITE)
    TIMER_K = "K"  # retransmitted finals absorbed long enough (non-INVITE)
    TIMER_M = "M"  # 2xx retransmissions passed on long enough (INVITE, RFC 6026)
    TRANSPORT_ERROR = "transport-error"


class Step(Enum):
    """What a transition does besides changing the state."""

    DELIVER = "deliver"  # pass the response to the TU
    ACCEPT = "accept"  # 2xx: release the request, start M, deliver
    COMPLETE_ACK = "complete-ack"  # non-2xx final: ACK it, start D, deliver
    RESEND_ACK = "resend-ack"  # the final came again: ACK again
    COMPLETE = "complete"  # non-INVITE final: start K, deliver
    RETRANSMIT = "retransmit"  # A/E: send the request again, back off
    TIMEOUT = "timeout"  # B/F: tell the TU (408)
    FAIL = "fail"  # the transport could not send: tell the TU (503)
    END = "end"  # D, K, M: the lingering time is over


C, I_, P = ClientState, Input, Step
#: The legal transitions of RFC 3261 figures 5 and 6 with RFC 6026's Accepted state, by
#: INVITE (True) or not: (state, input) -> (next state, step). A response missing here
#: is absorbed (a retransmission, or one that comes too late); a timer missing here
#: belongs to a state the transaction has left and does nothing; so does a transport
#: error once a final response is in.
TRANSITIONS: dict[bool, dict[tuple[ClientState, Input], tuple[ClientState, Step]]] = {
    True: {
        (C.CALLING, I_.PROVISIONAL): (C.PROCEEDING, P.DELIVER),
        (C.PROCEEDING, I_.PROVISIONAL): (C.PROCEEDING, P.DELIVER),
        (C.CALLING, I_.SUCCESS): (C.ACCEPTED, P.ACCEPT),
        (C.PROCEEDING, I_.SUCCESS): (C.ACCEPTED, P.ACCEPT),
        (C.ACCEPTED, I_.SUCCESS): (C.ACCEPTED, P.DELIVER),  # retransmitted or forked 2xx
        (C.CALLING, I_.FINAL): (C.COMPLETED, P.COMPLETE_ACK),
        (C.PROCEEDING, I_.FINAL): (C.COMPLETED, P.COMPLETE_ACK),
        (C.COMPLETED, I_.FINAL): (C.COMPLETED, P.RESEND_ACK),
        (C.CALLING, I_.TIMER_A): (C.CALLING, P.RETRANSMIT),
        # Timer B only ends a silent INVITE: a ringing one waits for the proxy's Timer C
        # instead (RFC 3261 §17.1.1.2, §16.8).
        (C.CALLING, I_.TIMER_B): (C.TERMINATED, P.TIMEOUT),
        (C.COMPLETED, I_.TIMER_D): (C.TERMINATED, P.END),
        (C.ACCEPTED, I_.TIMER_M): (C.TERMINATED, P.END),
        (C.CALLING, I_.TRANSPORT_ERROR): (C.TERMINATED, P.FAIL),
        (C.PROCEEDING, I_.TRANSPORT_ERROR): (C.TERMINATED, P.FAIL),
    },
    False: {
        (C.TRYING, I_.PROVISIONAL): (C.PROCEEDING, P.DELIVER),
        (C.PROCEEDING, I_.PROVISIONAL): (C.PROCEEDING, P.DELIVER),
        (C.TRYING, I_.SUCCESS): (C.COMPLETED, P.COMPLETE),
        (C.TRYING, I_.FINAL): (C.COMPLETED, P.COMPLETE),
        (C.PROCEEDING, I_.SUCCESS): (C.COMPLETED, P.COMPLETE),
        (C.PROCEEDING, I_.FINAL): (C.COMPLETED, P.COMPLETE),
        (C.TRYING, I_.TIMER_E): (C.TRYING, P.RETRANSMIT),
        (C.PROCEEDING, I_.TIMER_E): (C.PROCEEDING, P.RETRANSMIT),
        (C.TRYING, I_.TIMER_F): (C.TERMINATED, P.TIMEOUT),
        (C.PROCEEDING, I_.TIMER_F): (C.TERMINATED, P.TIMEOUT),
        (C.COMPLETED, I_.TIMER_K): (C.TERMINATED, P.END),
        (C.TRYING, I_.TRANSPORT_ERROR): (C.TERMINATED, P.FAIL),
        (C.PROCEEDING, I_.TRANSPORT_ERROR): (C.TERMINATED, P.FAIL),
    },
}
_TIMERS = {"A": I_.TIMER_A, "B": I_.TIMER_B, "D": I_.TIMER_D, "E": I_.TIMER_E,
           "F": I_.TIMER_F, "K": I_.TIMER_K, "M": I_.TIMER_M}


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
    via_done = False
    for key, name, value in request.headers:
        if key == "via":
            # Only the request's top Via value, once (RFC 3261 §9.1, §17.1.1.3), even
            # when the request carries several Via lines.
            if not via_done:
                headers.append((key, name, str(request.top_via)))
                via_done = True
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

    def sent_to(self, destination: Address) -> list[ClientTransaction]:
        """The live transactions whose requests went to ``destination`` (transport,
        host and port; any socket)."""
        return [txn for txn in self._table.values()
                if txn.destination.transport == destination.transport
                and txn.destination.host == destination.host
                and txn.destination.port == destination.port]

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
        if (txn.state, Input.TRANSPORT_ERROR) in TRANSITIONS[txn.is_invite]:
            txn.error = reason
        self._apply(txn, Input.TRANSPORT_ERROR, None, 0.0)

    # --- receiving ------------------------------------------------------------------------

    def receive_response(self, response: Response, now: float) -> tuple[bool, list[Send]]:
        """Match ``response``; returns whether a transaction took it (a response event
        may then be waiting in :meth:`take_events`) and what to send (an ACK)."""
        key = response_key(response)
        txn = self._table.get(key) if key is not None else None
        if txn is None:
            return False, []
        status = response.status
        event = (Input.PROVISIONAL if status < 200 else Input.SUCCESS if status < 300
                 else Input.FINAL)
        return True, self._apply(txn, event, response, now)

    def _apply(self, txn: ClientTransaction, event: Input, response: Response | None,
               now: float) -> list[Send]:
        """Take ``txn`` through the transition of ``event`` (see :data:`TRANSITIONS`)."""
        transition = TRANSITIONS[txn.is_invite].get((txn.state, event))
        if transition is None:
            return []  # absorbed: see TRANSITIONS
        next_state, step = transition
        txn.state = next_state
        if step is Step.DELIVER:
            assert response is not None
            self._deliver(txn, response)
        elif step is Step.ACCEPT:
            assert response is not None
            _release(txn)
            self._schedule(now + 64 * self.t1, "M", txn)
            self._deliver(txn, response)
        elif step is Step.COMPLETE_ACK:
            assert response is not None and txn.request is not None
            txn.ack = build_ack(txn.request, response).serialize()
            _release(txn)
            self._schedule(now + (0 if txn.destination.reliable else 32.0), "D", txn)
            self._deliver(txn, response)
            return [(txn.ack, txn.destination)]
        elif step is Step.RESEND_ACK:
            return [] if txn.ack is None else [(txn.ack, txn.destination)]
        elif step is Step.COMPLETE:
            assert response is not None
            _release(txn)
            self._schedule(now + (0 if txn.destination.reliable else self.t4), "K", txn)
            self._deliver(txn, response)
        elif step is Step.RETRANSMIT:
            if txn.is_invite:
                txn.interval *= 2
            else:  # Timer E: doubling up to T2, T2 at once once a provisional came
                txn.interval = (min(2 * txn.interval, self.t2)
                                if txn.state is ClientState.TRYING else self.t2)
            self._schedule(now + txn.interval, "A" if txn.is_invite else "E", txn)
            return [(txn.data, txn.destination)]
        elif step is Step.TIMEOUT:
            self._forget(txn)
            self._events.append((ClientEvent.TIMEOUT, txn, None))
        elif step is Step.FAIL:
            self._forget(txn)
            self._events.append((ClientEvent.TRANSPORT_ERROR, txn, None))
        else:  # END
            self._forget(txn)
        return []

    def _deliver(self, txn: ClientTransaction, response: Response) -> None:
        txn.status = max(txn.status, response.status)
        self._events.append((ClientEvent.RESPONSE, txn, response))

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
            sends += self._apply(txn, _TIMERS[name], None, now)
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
