"""Server transactions (RFC 3261 §17.2), sans-IO.

The layer takes requests, responses and the current time, and returns what to send as
``(bytes, Address)`` pairs; timers live in one heap that a driver fires through
:meth:`TransactionLayer.on_timer` at :meth:`TransactionLayer.next_deadline`.
The legal state changes are the tables ``_NON_INVITE`` and ``_INVITE`` below.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from gateway.sip.address import Address
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


# (current state, response class) -> next state; 1 = provisional, 2 = 2xx, 3 = 3xx-6xx
_NON_INVITE = {
    (State.TRYING, 1): State.PROCEEDING, (State.TRYING, 2): State.COMPLETED,
    (State.TRYING, 3): State.COMPLETED, (State.PROCEEDING, 1): State.PROCEEDING,
    (State.PROCEEDING, 2): State.COMPLETED, (State.PROCEEDING, 3): State.COMPLETED,
}
# A 2xx moves an INVITE server transaction to Accepted (RFC 6026): it absorbs INVITE
# retransmissions and lets further 2xx (forwarded retransmissions, other forks) through
# until Timer L; the TU owns 2xx retransmission.
_INVITE = {
    (State.PROCEEDING, 1): State.PROCEEDING, (State.PROCEEDING, 2): State.ACCEPTED,
    (State.PROCEEDING, 3): State.COMPLETED, (State.ACCEPTED, 2): State.ACCEPTED,
}


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
            if txn.last_response is not None and txn.state in (
                    State.PROCEEDING, State.COMPLETED):
                return None, [(txn.last_response, txn.reply_to)]
            return None, []
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
        if txn is None or not txn.is_invite:
            return False
        if txn.state is State.COMPLETED:
            txn.state = State.CONFIRMED
            self._schedule(now + (0 if source.reliable else self.t4), "I", txn)
        return txn.state in (State.COMPLETED, State.CONFIRMED)

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
        if txn.last_response is not None and txn.state in (State.PROCEEDING,
                                                           State.COMPLETED):
            return True, [(txn.last_response, txn.reply_to)]
        return True, []

    def _forget(self, txn: ServerTransaction) -> None:
        txn.state = State.TERMINATED
        if self._table.get(txn.key) is txn:
            del self._table[txn.key]
        if txn.raw_key is not None and self._by_datagram.get(txn.raw_key) is txn:
            del self._by_datagram[txn.raw_key]

    def respond(self, txn: ServerTransaction, response: Response, now: float) -> list[Send]:
        """Send ``response`` in ``txn``; returns what to put on the wire (maybe nothing if
        the transaction already ended)."""
        table = _INVITE if txn.is_invite else _NON_INVITE
        klass = 1 if response.status < 200 else 2 if response.status < 300 else 3
        next_state = table.get((txn.state, klass))
        if next_state is None:
            return []
        data = response.serialize()
        entering = next_state is not txn.state
        txn.state = next_state
        txn.last_response = data
        txn.status = response.status
        if next_state is State.ACCEPTED:
            txn.request = None
            if entering:
                self._schedule(now + 64 * self.t1, "L", txn)
        elif klass > 1:
            txn.request = None
            reliable = txn.reply_to.reliable
            if next_state is State.TERMINATED:
                self._forget(txn)
            elif txn.is_invite:
                if not reliable:
                    txn.retransmit_interval = self.t1
                    self._schedule(now + self.t1, "G", txn)
                self._schedule(now + 64 * self.t1, "H", txn)
            else:
                self._schedule(now + (0 if reliable else 64 * self.t1), "J", txn)
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
            if name == "G":
                if txn.state is State.COMPLETED and txn.last_response is not None:
                    sends.append((txn.last_response, txn.reply_to))
                    txn.retransmit_interval = min(2 * txn.retransmit_interval, self.t2)
                    self._schedule(now + txn.retransmit_interval, "G", txn)
            elif name == "H" and txn.state is not State.COMPLETED:
                continue  # ACK arrived; Timer I ends it
            elif name == "stale" and txn.state is not State.PROCEEDING:
                continue
            else:
                self._forget(txn)
        return sends

    def _schedule(self, when: float, name: str, txn: ServerTransaction) -> None:
        self._timers.schedule(when, name, txn.key, txn.serial)
