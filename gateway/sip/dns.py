"""DNS queries for the SIP stack: dnspython's asyncio resolver, behind a bounded cache
that keeps answers for their TTL and negative answers as RFC 2308 says.

dnspython is the project's one DNS library (chosen over twisted.names): it speaks
NAPTR, SRV, A and AAAA with an asyncio resolver that runs on the gateway's reactor (the
asyncio reactor) without threads, and it has RFC 2136 UPDATE with TSIG, which the
overlay's self-published bootstrap records need; twisted.names has no UPDATE or TSIG.

A query never raises: it returns a :class:`DnsAnswer`, empty with ``error`` set when
the name does not exist, has no records of the type, or the servers failed.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

#: How long a server failure or timeout is remembered (RFC 2308 §7.1 allows up to 5 min).
FAILURE_TTL = 5.0
#: Negative answers without an SOA to say how long (RFC 2308 §5).
DEFAULT_NEGATIVE_TTL = 30.0
#: Cache entries at most (answers come from the network: bounded).
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The records of one query (dnspython rdata objects) and how long they hold; an
    empty answer says why in ``error`` (``NXDOMAIN``, ``no records``, ``timeout``…)."""

    records: tuple[Any, ...]
    ttl: float
    error: str = ""


class DnsClient:
    """Cached, non-blocking DNS queries; ``servers`` (host, port) replace the system's
    (``/etc/resolv.conf``) when given."""

    def __init__(self, servers: Sequence[tuple[str, int]] | None = None, *,
                 timeout: float = 2.0, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._servers = list(servers or ())
        self._timeout = timeout
        self._resolver: dns.asyncresolver.Resolver | None = None  # made on first use
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[DnsAnswer]] = {}
        #: Queries sent to a server (cache misses), for metrics and tests.
        self.sent = 0

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """The ``rdtype`` records of ``name``, from the cache while they hold."""
        hit = self.cached(name, rdtype)
        if hit is not None:
            return hit
        key = _key(name, rdtype)
        pending = self._inflight.get(key)
        if pending is not None:  # the same question already on its way: wait for it
            return await asyncio.shield(pending)
        future: asyncio.Future[DnsAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._ask(key[0], key[1])
            future.set_result(answer)
        except BaseException as exc:  # cancelled: the waiters must not hang
            future.set_exception(exc)
            raise
        finally:
            del self._inflight[key]
        self._remember(key, answer)
        return answer

    def cached(self, name: str, rdtype: str) -> DnsAnswer | None:
        """The cached answer, if one still holds (no query); an expired one is dropped."""
        key = _key(name, rdtype)
        cached = self._cache.get(key)
        if cached is None:
            return None
        now = self._clock()
        if cached[0] <= now:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)  # least recently used goes first
        answer = cached[1]
        return DnsAnswer(answer.records, cached[0] - now, answer.error)

    def forget(self) -> None:
        """Drop every cached answer."""
        self._cache.clear()

    def _make_resolver(self) -> dns.asyncresolver.Resolver:
        if self._servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                    for host, port in self._servers]
        else:
            resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        resolver.lifetime = self._timeout
        resolver.timeout = min(self._timeout, 1.0)
        return resolver

    async def _ask(self, name: str, rdtype: str) -> DnsAnswer:
        self.sent += 1
        try:
            if self._resolver is None:
                self._resolver = self._make_resolver()
            result = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False,
                                                  search=False)
        except dns.resolver.NXDOMAIN as exc:
            return DnsAnswer((), _negative_ttl(_first_response(exc)), "NXDOMAIN")
        except dns.resolver.NoNameservers:
            return DnsAnswer((), FAILURE_TTL, "no server answered (SERVFAIL or refused)")
        except dns.exception.Timeout:
            return DnsAnswer((), FAILURE_TTL, "timeout")
        except dns.exception.DNSException as exc:
            return DnsAnswer((), FAILURE_TTL, f"DNS error: {exc}")
        if result.rrset is None:
            return DnsAnswer((), _negative_ttl(result.response), "no records")
        return DnsAnswer(tuple(result.rrset), float(result.rrset.ttl))

    def _remember(self, key: tuple[str, str], answer: DnsAnswer) -> None:
        if answer.ttl <= 0:
            return
        self._cache[key] = (self._clock() + answer.ttl, answer)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)


def _key(name: str, rdtype: str) -> tuple[str, str]:
    return name.lower().rstrip("."), rdtype.upper()


def _first_response(exc: dns.resolver.NXDOMAIN) -> dns.message.Message | None:
    responses = exc.responses()
    return next(iter(responses.values()), None) if responses else None


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 §5: the SOA's TTL, at most its MINIMUM field."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return float(min(rrset.ttl, rrset[0].minimum))
    return DEFAULT_NEGATIVE_TTL
