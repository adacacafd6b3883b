"""Who must authenticate, and the digest check itself (RFC 3261 §22, RFC 8760).

:meth:`Authenticator.check` looks at a request before the registrar or the proxy sees
it and either lets it through or gives the response to send instead: a challenge
(``401`` with ``WWW-Authenticate`` for REGISTER, ``407`` with ``Proxy-Authenticate``
for the rest), or ``403``. The policy, in order:

1. ACK and CANCEL are never challenged (they cannot be, RFC 3261 §22.1).
2. Sources in ``trusted_networks`` and peers that proved who they are with a client
   certificate (mutual TLS) are not challenged.
3. In-dialog requests that follow this gateway's Record-Route, and requests to the
   gateway itself (OPTIONS pings), are not challenged.
4. A request from a user of another domain is let through when it is for a user here
   (a call coming in) and refused with ``403`` when it is not (no open relay).
5. REGISTER, and requests of local users whose method is in ``auth.methods``, must
   carry valid credentials for the AoR they register or send as.

An unknown user and a known user with a wrong password get the same answer, after the
same work (a decoy HA1 stands in for the missing one). Failures are counted per source
address and username; past ``max_failures`` the pair gets ``403`` for ``lockout``
seconds, whatever it sends.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.log import get_logger
from gateway.registry.users import UserRecord
from gateway.server.auth_guard import FailureLimiter, NonceCounts
from gateway.sip.address import Address
from gateway.sip.digest import (
    Credentials,
    NonceFactory,
    NonceState,
    canonical_algorithm,
    challenge,
    expected_response,
    parse_credentials,
)
from gateway.sip.errors import SipSyntaxError
from gateway.sip.forwarding import route_target, routes
from gateway.sip.message import Request, Response
from gateway.sip.responses import build_response
from gateway.sip.uri import SipUri

log = get_logger("gateway.auth")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NEVER_CHALLENGED = frozenset({"ACK", "CANCEL"})


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """``[auth]``: who is trusted and how credentials are asked for."""

    trusted_networks: tuple[Network, ...]
    realm: str  # "" → the domain of the AoR being authenticated
    algorithms: tuple[str, ...]
    methods: frozenset[str] | None  # None: every method
    nonce_lifetime: float
    max_failures: int
    lockout: float
    #: Lower-case User-Agent substrings of clients offered every algorithm ("*": all).
    multi_challenge_clients: tuple[str, ...] = ("*",)

    def algorithms_for(self, user_agent: str | None) -> tuple[str, ...]:
        """The algorithms to challenge a client with: every accepted one, in order,
        for clients known to choose among several challenges; one for the rest (MD5,
        which every digest client has, when accepted)."""
        if len(self.algorithms) == 1 or "*" in self.multi_challenge_clients:
            return self.algorithms
        agent = (user_agent or "").lower()
        if agent and any(part in agent for part in self.multi_challenge_clients):
            return self.algorithms
        return ("MD5",) if "MD5" in self.algorithms else self.algorithms[:1]


class UserLookup(Protocol):
    """Where credentials come from (:class:`gateway.registry.users.UserDirectory`)."""

    def get(self, username: str, realm: str) -> UserRecord | None:
        """The credentials of ``username`` in ``realm``."""


class MyselfLike(Protocol):
    """What the policy needs of :class:`gateway.server.myself.Myself`."""

    def is_local(self, host: str) -> bool:
        """Whether ``host`` is a domain served here."""

    def is_me(self, host: str, port: int | None) -> bool:
        """Whether ``host``/``port`` name this gateway."""

    def is_for_me(self, request: Request) -> bool:
        """Whether ``request`` is addressed to the gateway itself."""


class Authenticator:
    """The authentication step of the SIP core."""

    def __init__(self, policy: AuthPolicy, users: UserLookup, secret: bytes,
                 myself: MyselfLike, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.users = users
        self.myself = myself
        self.clock = clock
        self.nonces = NonceFactory(secret, policy.nonce_lifetime)
        self.counts = NonceCounts(policy.nonce_lifetime)
        self.limiter = FailureLimiter(policy.max_failures, policy.lockout)
        self._trusted_hosts: dict[str, bool] = {}
        #: Failed checks so far (wrong password or unknown user), for metrics.
        self.failures = 0

    # --- policy ---------------------------------------------------------------------------

    def is_trusted(self, host: str) -> bool:
        """Whether requests from ``host`` (an IP address) skip authentication."""
        known = self._trusted_hosts.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                known = False
            else:
                known = any(address in network for network in self.policy.trusted_networks)
            if len(self._trusted_hosts) < 65536:  # bounded: hosts come from the network
                self._trusted_hosts[host] = known
        return known

    def check(self, request: Request, source: Address, trusted_peer: bool = False,
              ) -> Response | None:
        """``None`` to go on with ``request``, else the response that answers it.

        Raises :class:`SipSyntaxError` for malformed headers (the caller answers 400).
        """
        method = request.method
        if method in _NEVER_CHALLENGED or trusted_peer or self.is_trusted(source.host):
            return None
        methods = self.policy.methods
        if method == "REGISTER":
            if methods is not None and method not in methods:
                return None
            return self._authenticate(request, source, request.to.uri, "authorization")
        if self._follows_our_record_route(request) or (
                self.myself.is_for_me(request) and not request.has_header("route")):
            return None
        identity = request.from_.uri
        from_local = isinstance(identity, SipUri) and self.myself.is_local(identity.host)
        if not from_local:
            if self._for_local_user(request):
                return None
            return build_response(request, 403, "Forbidden (relaying denied)")
        if methods is not None and method not in methods:
            return None
        return self._authenticate(request, source, identity, "proxy-authorization")

    def _follows_our_record_route(self, request: Request) -> bool:
        if not request.to.tag:
            return False
        values = routes(request)
        if not values:
            return False
        uri = route_target(values[0]).uri
        return isinstance(uri, SipUri) and self.myself.is_me(uri.host, uri.port)

    def _for_local_user(self, request: Request) -> bool:
        uri = request.uri
        if not isinstance(uri, SipUri) or not self.myself.is_local(uri.host):
            return False
        for value in routes(request):
            route = route_target(value).uri
            if not (isinstance(route, SipUri) and self.myself.is_me(route.host, route.port)):
                return False  # routed on elsewhere: not (only) for us
        return True

    # --- the digest check -----------------------------------------------------------------

    def _authenticate(self, request: Request, source: Address, identity: object,
                      header: str) -> Response | None:
        if not isinstance(identity, SipUri) or not identity.user:
            return build_response(request, 403, "Forbidden (no address-of-record to "
                                  "authenticate)")
        aor = identity.aor()
        realm = self.policy.realm or identity.host.lower()
        status = 401 if header == "authorization" else 407
        now = self.clock()
        credentials = _ours(request.header_values(header), realm)
        if credentials is None:
            return self._challenge(request, status, realm, now, stale=False)
        username = credentials.username
        if self.limiter.locked(source.host, username, now):
            return self._locked_out(request)
        algorithm = canonical_algorithm(credentials.algorithm)
        if (algorithm not in self.policy.algorithms or credentials.qop != "auth"
                or credentials.nc is None or credentials.cnonce is None):
            return self._challenge(request, status, realm, now, stale=False)
        nc = _nonce_count(credentials.nc)
        if (credentials.opaque is not None
                and credentials.opaque != self.nonces.opaque(realm)):
            return self._challenge(request, status, realm, now, stale=False)
        state, issued = self.nonces.check(credentials.nonce, realm, now)
        if state is NonceState.INVALID:
            return self._challenge(request, status, realm, now, stale=False)
        user = self.users.get(username, realm)
        stored = user.ha1(algorithm) if user is not None else ""
        ha1_value = stored or self.nonces.decoy_ha1(algorithm, username, realm)
        expected = expected_response(algorithm, ha1_value, credentials.nonce,
                                     credentials.nc, credentials.cnonce, credentials.qop,
                                     request.method, credentials.uri)
        if not (hmac.compare_digest(expected, credentials.response) and stored):
            log.info("authentication failed for {username} in {realm} from {source}",
                     username=username, realm=realm, source=source.host)
            self.failures += 1
            if self.limiter.failed(source.host, username, now):
                log.warn("{username} from {source} locked out for {seconds:g} s after "
                         "{n} failed attempts", username=username, source=source.host,
                         seconds=self.policy.lockout, n=self.policy.max_failures)
                return self._locked_out(request)
            return self._challenge(request, status, realm, now, stale=False)
        if (state is NonceState.STALE or self.counts.forgotten(issued)
                or not self.counts.use(credentials.nonce, issued, nc)):
            # Right password, but an expired nonce or a nonce count used before (a
            # replay, or requests racing on one nonce): a fresh nonce, no new prompt.
            return self._challenge(request, status, realm, now, stale=True)
        assert user is not None
        self.limiter.succeeded(source.host, username)
        if user.aor != aor:
            return build_response(request, 403, "Forbidden (these credentials are not "
                                  f"for {aor})")
        return None

    def remove_own_credentials(self, request: Request) -> None:
        """Drop the Proxy-Authorization lines meant for this gateway (its realm, or a
        domain it serves) from a request about to be forwarded: credentials never
        travel past the proxy that asked for them (RFC 3261 §22.3), whether they were
        checked (an INVITE) or not (an ACK, an in-dialog BYE following our Record-Route,
        a request from a trusted network). Other realms' lines go on, as does
        Authorization: outside REGISTER (which ends here), it answers the far end's 401
        and is end-to-end."""
        if not request.has_header("proxy-authorization"):
            return

        def ours(value: str) -> bool:
            try:
                realm = parse_credentials(value).realm
            except SipSyntaxError:
                return False
            return realm == self.policy.realm or self.myself.is_local(realm)

        request.remove_values("proxy-authorization", ours)

    def _challenge(self, request: Request, status: int, realm: str, now: float,
                   stale: bool) -> Response:
        nonce = self.nonces.issue(realm, now)
        opaque = self.nonces.opaque(realm)
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        offered = self.policy.algorithms_for(request.header("user-agent"))
        return build_response(request, status, headers=[
            (name, challenge(realm, nonce, opaque, algorithm, stale))
            for algorithm in offered])

    def _locked_out(self, request: Request) -> Response:
        return build_response(request, 403, "Forbidden (too many failed attempts, try "
                              "again later)")


def _ours(values: list[str], realm: str) -> Credentials | None:
    """The first Digest credentials for ``realm`` (others belong to other proxies)."""
    for value in values:
        try:
            credentials = parse_credentials(value)
        except SipSyntaxError:
            continue
        if credentials.realm == realm:
            return credentials
    return None


def _nonce_count(text: str) -> int:
    if len(text) != 8:
        raise SipSyntaxError("nc must be 8 hex digits")
    try:
        return int(text, 16)
    except ValueError:
        raise SipSyntaxError("nc must be 8 hex digits") from None
