"""The overlay keeps its own bootstrap records in DNS (RFC 2136 UPDATE, TSIG-signed), as
the P2PSIP paper proposes: no central bootstrap peer, and no admin listing the nodes.

The records are TXT records at ``_p2psip._udp.<name>``, one per node, ``"ip:port"``,
which :mod:`gateway.overlay.dns_bootstrap` reads. Every ``interval`` seconds (jittered)
a joined (or alone) gateway reads them from the primary server, pings every listed node
over the overlay, and then:

- removes entries whose node did not answer, at most ``MAX_CHANGES`` per round;
- adds itself while fewer than ``min_entries`` listed nodes answer (so the first
  gateway of an overlay publishes itself, and the name keeps several live entries).

Every UPDATE carries the prerequisite that the TXT RRset is still exactly what this
gateway read (RFC 2136 §2.4.2, "RRset exists, value dependent"): when two gateways act
at once, one update is refused (NXRRSET), that gateway reads again next round, and the
set never flaps or grows past the bound by races. A gateway behind a NAT nothing is
forwarded through never adds itself. On stop it removes its own entry.

The TSIG key is read from a file (``tsig-keygen`` or ``keymgr`` output, or
``name algorithm secret`` on one line), never from the command line.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from gateway.log import get_logger
from gateway.overlay.dns_bootstrap import SERVICE, parse_txt_peers
from gateway.overlay.dns_fingerprints import entry, owner_name

log = get_logger("gateway.overlay.dns_publish")
MAX_CHANGES = 2  # entries removed per round, at most
TTL = 60


class TsigKeyError(ValueError):
    """The key file cannot be used (the message names the file and why)."""


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: its name, algorithm (e.g. ``hmac-sha256``) and base64 secret."""

    name: str
    algorithm: str
    secret: str

    @classmethod
    def from_file(cls, path: str) -> TsigKey:
        """Read ``path``: BIND's ``key "name" { algorithm …; secret "…"; };``, Knot's
        ``id: … algorithm: … secret: …``, or ``name algorithm secret``."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise TsigKeyError(f"{path}: {exc.strerror}") from None
        name = re.search(r'key\s+"?([\w.-]+)"?\s*\{|id:\s*([\w.-]+)', text)
        algorithm = re.search(r"algorithm[:\s]+\"?([\w-]+)\"?", text)
        secret = re.search(r"secret[:\s]+\"?([A-Za-z0-9+/=]+)\"?", text)
        if name and algorithm and secret:
            return cls(name.group(1) or name.group(2), algorithm.group(1).lower(),
                       secret.group(1))
        words = text.split()
        if len(words) == 3:
            return cls(words[0], words[1].lower(), words[2])
        raise TsigKeyError(f"{path}: no TSIG key (name, algorithm and secret) found")

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """For dnspython."""
        try:
            return dns.tsigkeyring.from_text({self.name: (self.algorithm, self.secret)})
        except Exception as exc:  # dnspython raises several types on a bad key
            raise TsigKeyError(f"TSIG key {self.name}: {exc}") from None


@dataclass(frozen=True)
class PublishSettings:
    """``[overlay]`` dns_publish*: what to keep up to date, where, with which key."""

    name: str  # records at _p2psip._udp.<name>
    zone: str
    server: tuple[str, int]
    key: TsigKey
    min_entries: int = 3
    interval: float = 60.0
    timeout: float = 3.0
    #: This gateway's certificate fingerprint, kept at ``_p2psip-cert.<domain>`` for
    #: every domain of ``fingerprint_domains`` (:mod:`gateway.overlay.dns_fingerprints`);
    #: ``previous_fingerprint`` (a certificate rolled over from) is replaced by it.
    fingerprint: str = ""
    previous_fingerprint: str = ""
    fingerprint_domains: tuple[str, ...] = ()


class DnsPublisher:
    """Keeps ``_p2psip._udp.<name>`` listing live overlay nodes (this one among them
    while fewer than ``min_entries`` answer)."""

    def __init__(self, settings: PublishSettings,
                 ping: Callable[[tuple[str, int]], Awaitable[bool]],
                 own: Callable[[], tuple[str, int] | None]) -> None:
        """``ping`` asks a node over the overlay; ``own`` is this node's address as
        others reach it (None: it cannot be reached, so it never adds itself)."""
        self.settings = settings
        self.ping = ping
        self.own = own
        self.owner = f"{SERVICE}.{settings.name}".rstrip(".") + "."
        self._keyring = settings.key.keyring()
        self.state = "idle"
        self.last_error = ""
        self.last_change = 0.0
        self.entries: list[tuple[str, int]] = []
        self.updates = 0

    def status(self) -> dict[str, Any]:
        """For the overlay status."""
        host, port = self.settings.server
        return {"name": self.owner.rstrip("."), "server": f"{host}:{port}",
                "state": self.state, "entries": [f"{h}:{p}" for h, p in self.entries],
                "last_error": self.last_error, "last_change": self.last_change,
                "updates": self.updates,
                "fingerprint_names": [owner_name(d) for d in self.settings.fingerprint_domains]}

    def next_delay(self) -> float:
        """Seconds until the next round (jittered so gateways do not act together)."""
        return self.settings.interval * random.uniform(0.7, 1.3)

    async def read(self, owner: str = "") -> list[str]:
        """The TXT strings at ``owner`` (the bootstrap name by default), from the
        primary (no cache: it must be fresh)."""
        owner = owner or self.owner
        query = dns.message.make_query(owner, dns.rdatatype.TXT)
        host, port = self.settings.server
        # Over TCP when the answer does not fit a datagram (many entries).
        response, _ = await dns.asyncquery.udp_with_fallback(
            query, host, timeout=self.settings.timeout, port=port)
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise dns.exception.DNSException(f"reading {owner}: "
                                             f"{dns.rcode.to_text(response.rcode())}")
        texts = []
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                texts += [b"".join(r.strings).decode("utf-8", "replace") for r in rrset]
        return texts

    async def round(self, joined: bool = True) -> None:
        """One check: read, ping, remove the dead, add this node when too few live. A
        node that is not ``joined`` acts only when no listed node answers (then it is the
        first of a new overlay, or the others are all gone); otherwise it joins through
        them first."""
        try:
            await self._round(joined)
            for domain in self.settings.fingerprint_domains:
                await self._publish_fingerprint(domain)
        except dns.tsig.PeerError as exc:
            self._failed(f"the server refused the TSIG key ({exc.__class__.__name__}: a "
                         "wrong secret, or a key not allowed to update this name)")
        except (dns.exception.DNSException, OSError) as exc:
            self._failed(str(exc) or exc.__class__.__name__)

    async def _round(self, joined: bool) -> None:
        texts = await self.read()
        listed = {text: peers[0] for text in texts
                  if len(peers := parse_txt_peers([text])) == 1}
        answers = await asyncio.gather(*(self.ping(peer) for peer in listed.values()))
        live = [text for text, ok in zip(listed, answers, strict=True) if ok]
        dead = [text for text in texts if text not in live]
        own = self.own()
        own_text = f"{own[0]}:{own[1]}" if own else ""
        if not joined and any(text != own_text for text in live):
            self.entries = [p for t in texts for p in parse_txt_peers([t])]
            self.state, self.last_error = "ok", ""
            return  # others answer: join through them before changing anything
        if own_text and own_text in dead:
            dead.remove(own_text)  # our own entry: we are alive whatever the ping says
            live.append(own_text)
        wanted = [t for t in texts if t not in dead[:MAX_CHANGES]]
        if own_text and own_text not in wanted and len(live) < self.settings.min_entries:
            wanted.append(own_text)
        if sorted(wanted) != sorted(texts):
            await self._replace(texts, wanted)
            removed = [t for t in texts if t not in wanted]
            added = [t for t in wanted if t not in texts]
            log.info("overlay DNS {name}: {added}{removed}", name=self.owner,
                     added=f"added {', '.join(added)} " if added else "",
                     removed=f"removed {', '.join(removed)} (not answering)"
                     if removed else "")
            self.last_change = time.time()
            texts = wanted
        self.entries = [p for t in texts for p in parse_txt_peers([t])]
        self.state, self.last_error = "ok", ""

    async def _publish_fingerprint(self, domain: str) -> None:
        """Make ``_p2psip-cert.<domain>`` list this gateway's certificate (next to
        other gateways' entries; the one it rolled over from goes)."""
        owner = owner_name(domain) + "."
        texts = await self.read(owner)
        own, previous = entry(self.settings.fingerprint), self.settings.previous_fingerprint
        stale = entry(previous) if previous else ""
        wanted = [t for t in texts if t != stale]
        if own not in wanted:
            wanted.append(own)
        if wanted != texts:
            await self._replace(texts, wanted, owner)
            log.info("overlay DNS {name}: certificate {fingerprint} published{replaced}",
                     name=owner, fingerprint=self.settings.fingerprint[:16],
                     replaced=f" in place of {previous[:16]}" if stale in texts else "")
            self.last_change = time.time()

    async def withdraw(self) -> None:
        """Remove this node's own entry (on stop), if it is there."""
        own = self.own()
        if own is None:
            return
        try:
            texts = await self.read()
            own_text = f"{own[0]}:{own[1]}"
            if own_text in texts:
                await self._replace(texts, [t for t in texts if t != own_text])
        except (dns.exception.DNSException, OSError) as exc:
            log.warn("overlay DNS {name}: cannot remove this node's entry: {error}",
                     name=self.owner, error=str(exc))

    async def _replace(self, seen: list[str], wanted: list[str], owner: str = "") -> None:
        """Make the TXT RRset at ``owner`` (the bootstrap name by default) ``wanted``,
        only if it is still ``seen`` (else NXRRSET)."""
        owner = owner or self.owner
        update = dns.update.UpdateMessage(self.settings.zone, keyring=self._keyring,
                                          keyname=self.settings.key.name,
                                          keyalgorithm=self.settings.key.algorithm)
        if seen:
            update.present(owner, *_rdatas(seen))  # TTL 0, as RFC 2136 §2.4.2 wants
        else:
            update.absent(owner, dns.rdatatype.TXT)
        update.delete(owner, dns.rdatatype.TXT)
        for text in wanted:
            update.add(owner, TTL, dns.rdatatype.TXT, f'"{text}"')
        host, port = self.settings.server
        response = await dns.asyncquery.tcp(update, host, timeout=self.settings.timeout,
                                            port=port)
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET):
                raise dns.exception.DNSException(
                    "another gateway changed the records first; reading them again")
            raise dns.exception.DNSException(f"UPDATE refused: {dns.rcode.to_text(rcode)}")
        self.updates += 1

    def _failed(self, error: str) -> None:
        if error != self.last_error:
            log.warn("overlay DNS {name}: {error}", name=self.owner, error=error)
        self.state, self.last_error = "error", error


def _rdatas(texts: list[str]) -> list[dns.rdata.Rdata]:
    return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{t}"')
            for t in texts]
