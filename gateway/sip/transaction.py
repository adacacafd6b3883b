"""Server transactions (RFC 3261 §17.2), sans-IO.

The layer takes requests, responses and the current time, and returns what to send as
``(bytes, Address)`` pairs; timers live in one heap that a driver fires through
:meth:`TransactionLayer.on_timer` at :meth:`TransactionLayer.next_deadline`.
The legal state changes are one table, :data:`TRANSITIONS`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from gateway.sip.address import Address
from gateway.sip.errors import IllegalTransition
from gateway.sip.message import Request, Response

MAGIC_COOKIE = "z9hG4bK"


Send = tuple[bytes, Address]


class State(Enum):
    """Server transaction states (RFC 3261 figures 7 and 8)."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"  # INVITE answered 2xx (RFC 6026)
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Event(Enum):
    """What can happen to a server transaction."""

    PROVISIONAL = "1xx"  # the TU sends a 1xx
    SUCCESS = "2xx"  # the TU sends a 2xx
    FINAL = "3xx-6xx"  # the TU sends a non-2xx final response
    REQUEST = "request"  # the request is retransmitted
    ACK = "ack"  # an ACK matches (INVITE only)
    TIMER_G = "G"  # retransmit the final response (INVITE, UDP)
    TIMER_H = "H"  # no ACK came (INVITE)
    TIMER_I = "I"  # ACK retransmissions are over (INVITE)
    TIMER_J = "J"  # request retransmissions are over (non-INVITE)
    TIMER_L = "L"  # 2xx retransmissions are over (INVITE, RFC 6026)
    STALE = "stale"  # an INVITE nobody answered in time (a safety net)


class Effect(Enum):
    """What a transition does besides changing the state."""

    NONE = "none"  # absorb
    SEND = "send"  # send the response
    SEND_ACCEPTED = "send-accepted"  # send the 2xx, start Timer L
    SEND_COMPLETED = "send-completed"  # send the final, start G (UDP) and H, or J
    RESEND = "resend"  # send the last response again (if there is one)
    RETRANSMIT = "retransmit"  # Timer G: resend, double the interval up to T2
    START_I = "start-I"
    TERMINATE = "terminate"


S, E, X = State, Event, Effect
#: The legal transitions of RFC 3261 figures 7 and 8 with RFC 6026's Accepted state,
#: by INVITE (True) or not: (state, event) -> (next state, effect). A response event
#: missing here is illegal (:class:`IllegalTransition`); a retransmitted request or an
#: ACK missing here is absorbed; a timer missing here belongs to a state the transaction
#: has left (timers are not cancelled, they find the state changed) and does nothing.
TRANSITIONS: dict[bool, dict[tuple[State, Event], tuple[State, Effect]]] = {
    True: {
        (S.PROCEEDING, E.PROVISIONAL): (S.PROCEEDING, X.SEND),
        (S.PROCEEDING, E.SUCCESS): (S.ACCEPTED, X.SEND_ACCEPTED),
        (S.PROCEEDING, E.FINAL): (S.COMPLETED, X.SEND_COMPLETED),
        # RFC 6026: further 2xx (forwarded retransmissions, other forks) pass until L.
        (S.ACCEPTED, E.SUCCESS): (S.ACCEPTED, X.SEND),
        (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, X.RESEND),
        (S.ACCEPTED, E.REQUEST): (S.ACCEPTED, X.NONE),
        (S.COMPLETED, E.REQUEST): (S.COMPLETED, X.RESEND),
        (S.CONFIRMED, E.REQUEST): (S.CONFIRMED, X.NONE),
        (S.COMPLETED, E.ACK): (S.CONFIRMED, X.START_I),
        (S.CONFIRMED, E.ACK): (S.CONFIRMED, X.NONE),
        (S.COMPLETED, E.TIMER_G): (S.COMPLETED, X.RETRANSMIT),
        (S.COMPLETED, E.TIMER_H): (S.TERMINATED, X.TERMINATE),
        (S.CONFIRMED, E.TIMER_I): (S.TERMINATED, X.TERMINATE),
        (S.ACCEPTED, E.TIMER_L): (S.TERMINATED, X.TERMINATE),
        (S.PROCEEDING, E.STALE): (S.TERMINATED, X.TERMINATE),
    },
    False: {
        (S.TRYING, E.PROVISIONAL): (S.PROCEEDING, X.SEND),
        (S.PROCEEDING, E.PROVISIONAL): (S.PROCEEDING, X.SEND),
        (S.TRYING, E.SUCCESS): (S.COMPLETED, X.SEND_COMPLETED),
        (S.TRYING, E.FINAL): (S.COMPLETED, X.SEND_COMPLETED),
        (S.PROCEEDING, E.SUCCESS): (S.COMPLETED, X.SEND_COMPLETED),
        (S.PROCEEDING, E.FINAL): (S.COMPLETED, X.SEND_COMPLETED),
        (S.TRYING, E.REQUEST): (S.TRYING, X.NONE),
        (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, X.RESEND),
        (S.COMPLETED, E.REQUEST): (S.COMPLETED, X.RESEND),
        (S.COMPLETED, E.TIMER_J): (S.TERMINATED, X.TERMINATE),
    },
}
_TIMER_EVENTS = {"G": E.TIMER_G, "H": E.TIMER_H, "I": E.TIMER_I, "J": E.TIMER_J,
                 "L": E.TIMER_L, "stale": E.STALE}


def response_event(status: int) -> Event:
    """The event of sending a response with ``status``."""
    return E.PROVISIONAL if status < 200 else E.SUCCESS if status < 300 else E.FINAL


@dataclass(slots=True, eq=False)
class ServerTransaction:
    """One server transaction. ``request`` is dropped once a final response is sent."""

    key: tuple[str, ...]
    method: str
    reply_to: Address
    request: Request | None
    state: State
    last_response: bytes | None = None
    status: int = 0
    retransmit_interval: float = 0.0
    raw_key: tuple[int, str, int] | None = None
    serial: int = 0

    @property
    def is_invite(self) -> bool:
        """INVITE transactions follow the other state table."""
        return self.method == "INVITE"


def transaction_key(request: Request, *, for_method: str | None = None) -> tuple[str, ...]:
    """The matching key of RFC 3261 §17.2.3 (branch, sent-by, method; ACK and CANCEL map
    to INVITE via ``for_method``), or the RFC 2543 fallback key when the branch lacks
    the magic cookie."""
    top = request.vias[0]
    method = for_method or ("INVITE" if request.method == "ACK" else request.method)
    branch = top.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, top.sent_by.lower(), method)
    from_tag = request.from_.tag or ""
    return ("2543", str(request.uri), from_tag, request.call_id, str(request.cseq.number),
            method, str(top))


class TimerHeap:
    """The timers of a transaction layer: ``(when, sequence, timer name, transaction key,
    transaction serial)`` entries in a heap. Plain values only, so the collector does not
    track them (a busy gateway holds several per live transaction; gc_policy.py); the
    serial tells a timer of an ended transaction from one of a newer transaction with the
    same key."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, str, tuple[str, ...], int]] = []
        self._sequence = itertools.count(1)

    def schedule(self, when: float, name: str, key: tuple[str, ...], serial: int) -> None:
        """Run timer ``name`` of the transaction (``key``, ``serial``) at ``when``."""
        heapq.heappush(self.entries, (when, next(self._sequence), name, key, serial))

    def next_deadline(self) -> float | None:
        """When the next timer is due, or None."""
        return self.entries[0][0] if self.entries else None

    def pop_due(self, now: float) -> Iterator[tuple[str, tuple[str, ...], int]]:
        """Remove and yield ``(name, key, serial)`` of every timer due at ``now``."""
        entries = self.entries
        while entries and entries[0][0] <= now:
            _, _, name, key, serial = heapq.heappop(entries)
            yield name, key, serial


class TransactionLayer:
    """All server transactions of one gateway and their timers."""

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0,
                 invite_lifetime: float = 300.0) -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        #: Longest an INVITE server transaction may stay unanswered before it is reaped
        #: (a safety net: the proxy's Timer C answers long before).
        self.invite_lifetime = invite_lifetime
        self._table: dict[tuple[str, ...], ServerTransaction] = {}
        self._timers = TimerHeap()
        # Datagram fingerprint -> transaction, so a byte-identical UDP retransmission is
        # answered without being parsed again (what keeps an overloaded gateway from
        # spending its time re-parsing the retransmissions its own delay caused).
        self._by_datagram: dict[tuple[int, str, int], ServerTransaction] = {}
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._table)

    def find(self, key: tuple[str, ...]) -> ServerTransaction | None:
        """The live transaction with ``key``, if any."""
        return self._table.get(key)

    def receive_request(self, request: Request, source: Address, reply_to: Address,
                        now: float) -> tuple[ServerTransaction | None, list[Send]]:
        """Match ``request`` against the table.

        Returns ``(new transaction, [])`` for a request the TU must handle, or
        ``(None, sends)`` for a retransmission or an ACK that a transaction absorbed
        (``sends`` re-sends the last response where RFC 3261 says so). An ACK never
        creates a transaction: it is absorbed by a matching INVITE transaction or, for
        a 2xx, left to the TU (``(None, [])`` in both cases here; the proxy issue
        routes 2xx ACKs).
        """
        key = transaction_key(request)
        txn = self._table.get(key)
        if request.method == "ACK":
            self.absorb_ack(request, source, now)
            return None, []
        if txn is not None:
            return None, self._apply(txn, Event.REQUEST, now)
        txn = ServerTransaction(key, request.method, reply_to, request,
                                State.PROCEEDING if request.method == "INVITE" else
                                State.TRYING, serial=next(self._sequence))
        self._table[key] = txn
        if request.method == "INVITE":
            self._schedule(now + self.invite_lifetime, "stale", txn)
        return txn, []

    def absorb_ack(self, request: Request, source: Address, now: float) -> bool:
        """Whether an ACK belongs to an INVITE server transaction that answered with a
        non-2xx final response (it is then absorbed, RFC 3261 §17.2.1); any other ACK
        (the ACK of a 2xx) is the TU's to forward."""
        txn = self._table.get(transaction_key(request))
        if txn is None or not txn.is_invite or txn.state not in (State.COMPLETED,
                                                                   State.CONFIRMED):
            return False
        self._apply(txn, Event.ACK, now, source)
        return True

    def remember_datagram(self, txn: ServerTransaction, data: bytes, source: Address) -> None:
        """Let :meth:`absorb_datagram` recognise retransmissions of ``data``."""
        txn.raw_key = (hash(data), source.host, source.port)
        self._by_datagram[txn.raw_key] = txn

    def absorb_datagram(self, data: bytes, source: Address) -> tuple[bool, list[Send]]:
        """Whether ``data`` from ``source`` repeats the request of a live transaction;
        if so, also what to re-send (as for a parsed retransmission)."""
        txn = self._by_datagram.get((hash(data), source.host, source.port))
        if txn is None or txn.state is State.TERMINATED:
            return False, []
        return True, self._apply(txn, Event.REQUEST, 0.0)

    def _forget(self, txn: ServerTransaction) -> None:
        txn.state = State.TERMINATED
        if self._table.get(txn.key) is txn:
            del self._table[txn.key]
        if txn.raw_key is not None and self._by_datagram.get(txn.raw_key) is txn:
            del self._by_datagram[txn.raw_key]

    def respond(self, txn: ServerTransaction, response: Response, now: float) -> list[Send]:
        """Send ``response`` in ``txn``; returns what to put on the wire. Raises
        :class:`IllegalTransition` when the state machine does not allow it (e.g. a
        1xx after the final response, or anything after the transaction ended)."""
        return self._apply(txn, response_event(response.status), now, response=response)

    def _apply(self, txn: ServerTransaction, event: Event, now: float,
               source: Address | None = None, response: Response | None = None,
               ) -> list[Send]:
        """Take ``txn`` through the transition of ``event`` (see :data:`TRANSITIONS`)."""
        transition = TRANSITIONS[txn.is_invite].get((txn.state, event))
        if transition is None:
            if response is not None:
                raise IllegalTransition(
                    f"{txn.method} server transaction {txn.key[0]} in state "
                    f"{txn.state.value} cannot send a {response.status} response")
            return []  # an absorbed retransmission or ACK, or a timer of a left state
        next_state, effect = transition
        txn.state = next_state
        if effect is Effect.NONE:
            return []
        if effect is Effect.TERMINATE:
            self._forget(txn)
            return []
        if effect is Effect.START_I:
            reliable = source is not None and source.reliable
            self._schedule(now + (0 if reliable else self.t4), "I", txn)
            return []
        if effect is Effect.RESEND:
            return [] if txn.last_response is None else [(txn.last_response, txn.reply_to)]
        if effect is Effect.RETRANSMIT:
            assert txn.last_response is not None
            txn.retransmit_interval = min(2 * txn.retransmit_interval, self.t2)
            self._schedule(now + txn.retransmit_interval, "G", txn)
            return [(txn.last_response, txn.reply_to)]
        assert response is not None  # the SEND effects
        data = response.serialize()
        txn.last_response = data
        txn.status = response.status
        if effect is Effect.SEND_ACCEPTED:
            txn.request = None
            self._schedule(now + 64 * self.t1, "L", txn)
        elif effect is Effect.SEND_COMPLETED:
            txn.request = None
            if txn.is_invite:
                if not txn.reply_to.reliable:
                    txn.retransmit_interval = self.t1
                    self._schedule(now + self.t1, "G", txn)
                self._schedule(now + 64 * self.t1, "H", txn)
            else:
                self._schedule(now + (0 if txn.reply_to.reliable else 64 * self.t1), "J", txn)
        return [(data, txn.reply_to)]

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` next has work, or None."""
        return self._timers.next_deadline()

    def on_timer(self, now: float) -> list[Send]:
        """Fire every timer due at ``now``."""
        sends: list[Send] = []
        for name, key, serial in self._timers.pop_due(now):
            txn = self._table.get(key)
            if txn is None or txn.serial != serial:
                continue  # that transaction has ended already
            sends += self._apply(txn, _TIMER_EVENTS[name], now)
        return sends

    def _schedule(self, when: float, name: str, txn: ServerTransaction) -> None:
        self._timers.schedule(when, name, txn.key, txn.serial)
