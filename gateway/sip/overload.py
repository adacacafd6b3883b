"""Overload control: past its capacity the gateway sheds *new* requests early and
cheaply, so that it keeps completing the work it admitted instead of collapsing under
its senders' retransmissions.

**The signal** is how long datagrams wait in the socket's receive queue before the
gateway reads them (the kernel's receive timestamp against the clock at reading). A
burst passes through a queue; a queue that never drains is overload. So, as CoDel does,
what counts is the *least* wait seen over an ``interval``: above ``target`` there is a
standing queue.

**Admission.** A fraction of new requests (requests outside a dialog other than ACK and
CANCEL: new calls, registrations, OPTIONS…) is admitted, spread evenly. At the end of
each interval the fraction falls (×``decrease``) while the least wait is above
``target``, and doubles once it is below half of it; after an idle interval it is 1
again. Requests inside dialogs, ACK, CANCEL, responses and retransmissions of admitted
requests are never shed: they finish work already paid for.

**Shedding.** A new request not admitted gets ``503 Service Unavailable`` with
``Retry-After`` (RFC 3261 §21.5.4), built straight from the datagram's bytes, with no
parse and no transaction. While the least wait is above ``drop_delay`` even that costs
too much: new requests are then dropped unread (their senders retransmit; by then the
queue is shorter).

This module is sans-IO: the transport feeds it times and bytes and sends what it says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Prefix of the To tag of every 503 sent by overload control: the ACK of such a 503
#: (to an INVITE) is recognised and dropped without a parse or a transaction.
SHED_TAG = b"shed-"
#: Methods never shed (they end or cancel work already admitted).
_NEVER_SHED = (b"ACK", b"CANCEL")
#: Header names (full and compact, lower case) a stateless response copies.
_VIA = (b"via", b"v")
_COPIED = {b"from": b"From", b"f": b"From", b"to": b"To", b"t": b"To",
           b"call-id": b"Call-ID", b"i": b"Call-ID", b"cseq": b"CSeq"}


@dataclass
class OverloadSettings:
    """How the guard behaves (``sip.overload_*`` settings)."""

    #: Least queueing delay (s) over an interval above which new requests are shed;
    #: 0 turns overload control off.
    target: float = 0.03
    #: Seconds over which the least delay is taken, and between admission changes.
    interval: float = 0.1
    #: Least delay (s) above which new requests are dropped unread instead of answered.
    drop_delay: float = 0.4
    #: Retry-After (s) of the 503 sent to shed requests.
    retry_after: int = 5
    #: Admission never falls below this fraction (some new work always gets through).
    floor: float = 0.02
    #: Factor the admitted fraction is multiplied by for each interval over target.
    decrease: float = 0.7


class OverloadGuard:
    """Decides, from queueing delays, which new requests are admitted."""

    def __init__(self, settings: OverloadSettings | None = None) -> None:
        self.settings = settings or OverloadSettings()
        #: Fraction of new requests admitted now.
        self.admitted_fraction = 1.0
        #: Least delay (s) seen over the last complete interval.
        self.standing = 0.0
        #: New requests answered 503 / dropped unread, since start.
        self.shed = 0
        self.dropped = 0
        self._window_end: float | None = None
        self._window_least = float("inf")
        self._credit = 0.0

    @property
    def enabled(self) -> bool:
        """Whether overload control is on."""
        return self.settings.target > 0

    def observe(self, waited: float, now: float) -> None:
        """A datagram read at ``now`` had waited ``waited`` seconds in the queue."""
        if self._window_end is None:
            self._window_end = now + self.settings.interval
        elif now >= self._window_end:
            self._close_window(now, now - waited)
        if waited < self._window_least:
            self._window_least = waited

    def _close_window(self, now: float, arrived: float) -> None:
        s = self.settings
        assert self._window_end is not None
        # Nothing arrived for a whole interval: whatever the queue was, it has drained.
        idle = arrived - self._window_end >= s.interval
        self.standing = 0.0 if idle or self._window_least == float("inf") \
            else self._window_least
        if idle:
            self.admitted_fraction = 1.0
        elif self.standing > s.target:
            self.admitted_fraction = max(s.floor, self.admitted_fraction * s.decrease)
        elif self.standing < s.target / 2:
            self.admitted_fraction = min(1.0, self.admitted_fraction * 2)
        self._window_end = now + s.interval
        self._window_least = float("inf")

    @property
    def shedding(self) -> bool:
        """Whether some new requests are being shed."""
        return self.admitted_fraction < 1.0 or self.dropping

    @property
    def dropping(self) -> bool:
        """Whether shed requests are dropped unread (the queue is that long)."""
        return self.standing > self.settings.drop_delay

    def admit(self) -> bool:
        """Whether the next new request is admitted (evenly: with a fraction of 0.25
        every fourth is)."""
        if self.admitted_fraction >= 1.0 and not self.dropping:
            return True
        if self.dropping:
            return False
        self._credit += self.admitted_fraction
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    def status(self) -> dict[str, float | int]:
        """For ``/status``: admission, the standing delay and the counts."""
        return {"admitted_fraction": round(self.admitted_fraction, 3),
                "standing_delay_ms": round(1000 * self.standing, 1),
                "shed_503": self.shed, "dropped": self.dropped}


def new_request_headers(data: bytes) -> list[bytes] | None:
    """The header lines of ``data`` when it is a new request that overload control may
    shed (a request, not ACK or CANCEL, whose To has no tag); None for everything else
    (responses, requests inside a dialog, what does not look like SIP: those take the
    normal path)."""
    method = data[:data.find(b" ", 0, 32)]  # responses and ACKs go by without a split
    if not method or method == b"SIP/2.0" or method in _NEVER_SHED or not method.isalpha():
        return None
    end = data.find(b"\r\n\r\n")
    lines = (data[:end] if end >= 0 else data).split(b"\r\n")
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"to", b"t"):
            return None if b";tag=" in value.lower().replace(b" ", b"") else lines
    return None  # no To: the parser answers that


def unavailable_response(lines: list[bytes], retry_after: int) -> bytes | None:
    """A stateless ``503`` with ``Retry-After`` for the request whose header lines are
    ``lines`` (from :func:`new_request_headers`); None when the request cannot be
    answered without parsing it (a folded header line, a missing header)."""
    vias: list[bytes] = []
    copied: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return None  # folded: leave it to the parser (it is dropped under overload)
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        key = name.strip().lower()
        if key in _VIA:
            vias.append(b"Via: " + value.strip())
        elif key in _COPIED and _COPIED[key] not in copied:
            copied[_COPIED[key]] = value.strip()
    if not vias or len(copied) != 4:
        return None
    to_tag = b";tag=" + SHED_TAG + os.urandom(6).hex().encode()
    return b"\r\n".join([
        b"SIP/2.0 503 Service Unavailable (overloaded)", *vias,
        b"From: " + copied[b"From"], b"To: " + copied[b"To"] + to_tag,
        b"Call-ID: " + copied[b"Call-ID"], b"CSeq: " + copied[b"CSeq"],
        b"Retry-After: " + str(retry_after).encode(), b"Content-Length: 0", b"", b""])


def acknowledges_shed(data: bytes) -> bool:
    """Whether ``data`` is the ACK of a 503 sent by overload control (nothing to do)."""
    return data.startswith(b"ACK ") and b"tag=" + SHED_TAG in data
