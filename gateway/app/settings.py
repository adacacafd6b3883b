"""Every setting of the gateway, defined once: section, key, default (as written in the
INI file), parser (its type), documentation and, for the common ones, a twistd option.

The loader (:mod:`gateway.app.config`), the twistd options, ``conf/gateway.ini`` and
``docs/configuration.md`` all come from :data:`SETTINGS`; the last two are generated
(``python -m gateway.app.settings ini`` / ``markdown``) and a test keeps them equal to
the generator's output.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.app import values as v

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key."""

    section: str
    key: str
    default: str  # the raw text, as in the INI file
    parse: Callable[[str], Any]
    doc: str
    option: str | None = None  # ``twistd p2psip-gateway --<option>``
    short: str | None = None

    @property
    def name(self) -> str:
        """``section.key``."""
        return f"{self.section}.{self.key}"

    @property
    def kind(self) -> str:
        """What values the setting takes."""
        return v.kind_of(self.parse)


SETTINGS: tuple[Setting, ...] = (
    Setting("gateway", "domains", "", v.domains,
            "Domains this gateway is the registrar for (comma separated). Besides these "
            "it always serves its own host name, the DNS names of a configured "
            "tls.certificate, \"localhost\" and every IP address of this machine, so "
            "sip:alice@127.0.0.1 registers on a fresh install and a Route naming the "
            "gateway by its certificate's name is recognised. "
            "REGISTERs for other domains get 403.",
            option="domain"),
    Setting("gateway", "data_dir", "data", v.plain,
            "Where the gateway keeps its state (SQLite registry, TLS certificate, "
            "overlay node id, status files). A relative path is taken from the "
            "directory twistd runs in.",
            option="data-dir", short="d"),
    Setting("gateway", "log_level", "info", v.choice(*LOG_LEVELS),
            "debug, info, warn, error or critical.",
            option="log-level"),
    Setting("sip", "listen_udp", "0.0.0.0:5060, [::]:5060", v.listen,
            "UDP listen addresses, comma separated host:port; IPv6 as [addr]:port; port "
            "5060 when omitted. Empty: no UDP (at least one listener of any transport "
            "is required). IPv6 sockets are v6-only, so 0.0.0.0 and [::] can share a "
            "port.",
            option="listen-udp"),
    Setting("sip", "listen_tcp", "0.0.0.0:5060, [::]:5060", v.listen,
            "TCP listen addresses, as listen_udp (port 5060 when omitted). Empty: no "
            "TCP.",
            option="listen-tcp"),
    Setting("sip", "max_message_size", "65535", v.int_range(1024, 1048576),
            "Largest SIP message accepted (bytes); larger datagrams are dropped, larger "
            "TCP messages close the connection."),
    Setting("sip", "max_tcp_connections", "4096", v.int_range(1, 1000000),
            "Most simultaneous TCP connections; further ones are refused."),
    Setting("sip", "tcp_idle_timeout", "600", v.seconds(1, 86400),
            "Seconds of silence after which a TCP connection is closed (CRLF keep- "
            "alives count)."),
    Setting("sip", "force_rport", "yes", v.yes_no,
            "Send UDP responses to the packet's source port even when the request's Via "
            "has no rport (what phones behind NAT need). \"no\" follows RFC 3261 §18.2.2 "
            "to the letter: the source address with the Via port. Responses never go to "
            "a Via host."),
    Setting("sip", "t1", "0.5", v.seconds(0.01, 60),
            "RFC 3261 T1 in seconds: the round-trip estimate that retransmission and "
            "transaction timeouts scale with (Timers A, B, E, F, G, H, J, L, M are "
            "multiples of it)."),
    Setting("sip", "t2", "4", v.seconds(0.01, 600),
            "RFC 3261 T2 in seconds: the longest interval between retransmissions of "
            "non-INVITE requests and of INVITE responses."),
    Setting("sip", "t4", "5", v.seconds(0.01, 600),
            "RFC 3261 T4 in seconds: how long a message may stay in the network (Timers "
            "I and K)."),
    Setting("sip", "advertised_address", "", v.advertised,
            "The IP address this gateway puts in Via and Record-Route (what phones and "
            "other servers send back to). Empty: the listen address of each transport, "
            "or, when that is 0.0.0.0 or ::, the IPv4 address of the interface of the "
            "default route (else of the host name, when an interface has it; else of "
            "any interface). A route that others cannot reach (loopback; private while "
            "an overlay peer is public) is warned about at start and in the overlay "
            "status."),
    Setting("sip", "external_address", "", v.external_address,
            "The public IP address (and port, when the NAT forwards another one) that "
            "hosts beyond this gateway's NAT reach it at, with port forwarding of its "
            "SIP ports (Asterisk's externaddr, Kamailio's advertise). It goes into "
            "overlay records and into Via and Record-Route towards hosts outside "
            "sip.local_networks, and requests naming it are for this gateway. Empty: "
            "no NAT, or none the gateway can be reached through (see "
            "overlay.mode and docs/deployment.md)."),
    Setting("sip", "local_networks", "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
            "fc00::/7", v.networks,
            "With sip.external_address: the networks on this side of the NAT, which "
            "get the LAN address (loopback, link-local and the subnets of this host's "
            "interfaces always count)."),
    Setting("sip", "shutdown_grace", "5", v.seconds(0, 600),
            "On SIGTERM: seconds to let requests being proxied (and registry writes) "
            "finish while new calls and registrations get 503 with Retry-After; then "
            "the gateway closes."),
    Setting("proxy", "resolvers", "local, overlay, upstream, dns", v.resolvers,
            "Where requests are routed, tried in this order (comma separated). \"local\" "
            "is the registry of this gateway, authoritative for its domains (404 for "
            "unknown users, 480 for users whose bindings all expired). \"overlay\" looks "
            "other AoRs up in the P2PSIP DHT (it passes when [overlay] is off; while "
            "the overlay is unreachable it answers 480 unless a later resolver knows "
            "better). \"upstream\" hands everything else to the [upstream] server (it "
            "passes when none is set). \"dns\" locates the servers of other domains by "
            "DNS (RFC 3263: NAPTR, SRV, A/AAAA) and tries them in turn; it is also what "
            "lets next hops, Route headers and [upstream] name hosts rather than IP "
            "addresses (without it those get 503). Requests nobody knows get 404."),
    Setting("proxy", "timer_c", "180", v.seconds(1, 86400),
            "Timer C (RFC 3261 §16.8), seconds: an INVITE branch that has no final "
            "response this long after its last provisional is cancelled; one with no "
            "response at all ends as 408."),
    Setting("tls", "listen", "0.0.0.0:5061, [::]:5061", v.listen_tls,
            "TLS listen addresses (SIP over TLS and sips:, RFC 3261 §26), comma "
            "separated host:port; port 5061 when omitted. Empty: no TLS (sips: requests "
            "then get 416).",
            option="listen-tls"),
    Setting("tls", "certificate", "", v.path,
            "PEM certificate of this gateway (its leaf first; more certificates after "
            "it are sent as the chain). Empty: a self-signed certificate for the "
            "domains, host names and loopback addresses is generated in <data_dir>/tls/ "
            "on first start (renewed when a name is added or it expires) and its "
            "SHA-256 fingerprint is logged at every start."),
    Setting("tls", "private_key", "", v.path,
            "PEM private key (unencrypted). Empty: taken from the certificate file."),
    Setting("tls", "chain", "", v.path,
            "Extra PEM intermediate certificates sent with the certificate."),
    Setting("tls", "ca_file", "", v.path,
            "PEM trust store used to verify peers: servers this gateway connects to "
            "over TLS, and clients when require_client_cert is on. Empty: the system's "
            "trust store."),
    Setting("tls", "require_client_cert", "no", v.yes_no,
            "Require every TLS client to present a certificate that ca_file verifies "
            "(mutual TLS between gateways). Requests over such connections are not "
            "challenged for digest credentials: the certificate proved who sent them."),
    Setting("tls", "min_version", "1.2", v.choice("1.2", "1.3"),
            "Oldest TLS version accepted: 1.2 or 1.3."),
    Setting("tls", "ciphers", "", v.plain,
            "OpenSSL cipher string to restrict TLS 1.2 suites further. Empty: forward- "
            "secret AEAD suites only (Twisted's default)."),
    Setting("websocket", "listen", "", v.listen_ws,
            "SIP over WebSocket (RFC 7118) listen addresses, plain WS, comma separated "
            "host:port (port 80 when omitted): browsers (JsSIP, SIP.js) register and "
            "call through these. Empty: none. Browsers allow plain WS only to pages "
            "that are not HTTPS; use listen_secure for real deployments.",
            option="listen-ws"),
    Setting("websocket", "listen_secure", "", v.listen_wss,
            "Secure WebSocket (WSS) listen addresses (port 443 when omitted), with the "
            "[tls] certificate. Empty: none.",
            option="listen-wss"),
    Setting("websocket", "allowed_origins", "*", v.origins,
            "Origins (https://host[:port], comma separated) whose pages may open a SIP "
            "WebSocket; others are refused in the handshake (403). *: any page (the "
            "SIP digest still decides who may register and call)."),
    Setting("websocket", "keepalive", "30", v.seconds(0, 3600),
            "Seconds between WebSocket pings on an idle connection; one without a pong "
            "within as long again is closed. 0: no pings (sip.tcp_idle_timeout still "
            "applies)."),
    Setting("websocket", "page", "no", v.yes_no,
            "Serve the browser phone (docs/clients.md) at / on the WebSocket listeners: "
            "https://host:port/ on listen_secure. Needs websocket.jssip."),
    Setting("websocket", "jssip", "", v.path,
            "JsSIP bundled for browsers, which the phone page loads as /jssip.js: "
            "web/dist/jssip.js after `npm ci && npm run build` in web/ "
            "(docs/clients.md)."),
    Setting("auth", "trusted_networks", "127.0.0.0/8, ::1", v.networks,
            "Digest authentication (RFC 3261 §22, RFC 8760). Requests from these "
            "networks are not challenged (comma separated addresses or networks). "
            "Empty: every request authenticates. To switch authentication off: "
            "0.0.0.0/0, ::/0."),
    Setting("auth", "realm", "", v.realm,
            "Realm of the challenges. Empty: the domain of the address-of-record being "
            "authenticated (the To of a REGISTER, the From of other requests). Users "
            "are stored per realm (p2psip-admin users add takes the same default)."),
    Setting("auth", "algorithms", "SHA-256, MD5", v.algorithms,
            "Digest algorithms accepted (SHA-256, MD5), in the order offered to the "
            "clients of auth.multi_challenge_clients."),
    Setting("auth", "multi_challenge_clients", "linphone, belle-sip", v.user_agents,
            "Clients (substrings of their User-Agent, any case; * for all) that are "
            "offered one challenge per algorithm of auth.algorithms and pick the "
            "strongest (RFC 8760), as linphone and other belle-sip clients do. Every "
            "other client gets a single MD5 challenge (the first algorithm when MD5 is "
            "not accepted), as from Asterisk or Kamailio: baresip 1.0 and SIPp give up "
            "when they see a SHA-256 challenge, and JsSIP and SIP.js do MD5 only "
            "(docs/clients.md)."),
    Setting("auth", "methods", "*", v.methods,
            "Methods that users of the domains served here must authenticate (REGISTER "
            "gets 401, the others 407); * for every method. Requests from other domains "
            "are let through only to users of this gateway (incoming calls), never "
            "relayed on."),
    Setting("auth", "nonce_lifetime", "300", v.seconds(10, 86400),
            "Seconds a nonce stays valid; older ones get a new challenge with "
            "stale=true."),
    Setting("auth", "max_failures", "10", v.int_range(1, 100000),
            "Failed attempts from one source address for one username before it is "
            "locked out."),
    Setting("auth", "lockout", "300", v.seconds(0, 86400),
            "Seconds a locked-out source address and username get 403, whatever they "
            "send."),
    Setting("overlay", "enabled", "yes", v.yes_no,
            "The P2PSIP overlay (docs/overlay.md): a Kademlia node inside the gateway. "
            "Every registration is published in the DHT as a record signed with the "
            "gateway's certificate ([tls]), and requests for AoRs not registered here "
            "are looked up there."),
    Setting("overlay", "listen", "0.0.0.0:6084", v.one_listen,
            "UDP address of the node (one host:port; port 6084 when omitted).",
            option="listen-overlay"),
    Setting("overlay", "bootstrap", "", v.peers,
            "Nodes to join through, comma separated IP:port. Empty: nodes remembered "
            "from the last run (registry table overlay_nodes); with none either, this "
            "node starts an overlay.",
            option="bootstrap"),
    Setting("overlay", "mode", "auto", v.choice("auto", "peer", "client"),
            "How this node takes part: \"peer\" is a full DHT node (it stores records "
            "and others route through it); \"client\" uses the overlay (publishes, "
            "looks up) without entering others' routing tables; \"auto\" asks the "
            "bootstrap peers what address they see and becomes a client when that is "
            "behind a NAT and no sip.external_address is set; such a gateway is then "
            "reached through a relay (overlay.relay) or, with none, holds its records "
            "(their route could not be reached) and the status says why."),
    Setting("overlay", "relay", "100", v.int_range(0, 100000),
            "How many gateways behind NATs (clients of the overlay) this gateway relays "
            "calls for, over TCP/TLS connections they keep open to it (0: none). Only a "
            "gateway that others reach (a peer with a TCP listener) offers to relay."),
    Setting("overlay", "k", "20", v.int_range(2, 100),
            "Kademlia k: replicas per key and bucket size."),
    Setting("overlay", "alpha", "3", v.int_range(1, 20),
            "Kademlia alpha: queries a lookup sends in parallel."),
    Setting("overlay", "paths", "4", v.int_range(1, 16),
            "Disjoint paths every lookup runs over (S/Kademlia): a hostile node that "
            "answers with hostile contacts captures only the path that asked it."),
    Setting("overlay", "id_difficulty", "20", v.int_range(0, 32),
            "Leading zero bits of the puzzle every overlay node id must solve (its id is "
            "the hash of a key it proves it holds; each key costs about 2^bits hashes, "
            "0.7 s at 20). Contacts with fewer bits are refused: one value for the "
            "whole overlay. Lower it only for test networks."),
    Setting("overlay", "ids_per_address", "2", v.int_range(1, 1000),
            "Most overlay node ids taken from one IP address into the routing table and "
            "into each lookup path (loopback addresses are exempt)."),
    Setting("overlay", "rpc_timeout", "1", v.seconds(0.05, 30),
            "Seconds an overlay RPC may take before the node is taken as unreachable, "
            "at least: on a slower path the wait grows to twice the contact's measured "
            "retransmission timeout (RFC 6298), and a contact never measured gets twice "
            "that of all contacts (twice this value before any answer)."),
    Setting("overlay", "trust", "tofu", v.choice("tofu", "ca", "pinned"),
            "Who may sign records for a domain: \"tofu\" (the certificate must name the "
            "domain and be one the domain publishes in DNS, see dns_fingerprints, or the "
            "one pinned for it in the registry, table overlay_pins; how a domain gets "
            "its first pin: first_pin), \"ca\" (it must chain to ca_file and name the "
            "domain) or \"pinned\" (its fingerprint must be in pins)."),
    Setting("overlay", "dns_fingerprints", "yes", v.yes_no,
            "With trust = tofu: before judging a domain's records, read the certificate "
            "fingerprints it publishes (TXT \"sha256=<hex>\" at _p2psip-cert.<domain>, "
            "through dns_servers); when there are any, only those certificates may sign "
            "for the domain, whatever was pinned. no: pins only (and first_pin = "
            "replicas)."),
    Setting("overlay", "first_pin", "dns", v.choice("dns", "replicas"),
            "With trust = tofu, how a domain not pinned yet gets its pin: \"dns\" only "
            "from the fingerprints it publishes in DNS (or p2psip-admin overlay pins "
            "pin); its records are refused until then, so hostile overlay nodes cannot "
            "win a first pin. \"replicas\": also, when DNS publishes none, the "
            "certificate a strict majority of the closest replicas list first, on two "
            "paths or more (works without DNS; an attacker holding most of the replicas "
            "a first lookup reaches wins the pin, docs/overlay.md)."),
    Setting("overlay", "ca_file", "", v.path,
            "PEM CA bundle for trust = ca."),
    Setting("overlay", "pins", "", v.pins,
            "For trust = pinned: domain=SHA-256 fingerprint, comma separated."),
    Setting("overlay", "certificate", "", v.path,
            "PEM certificate this gateway signs its overlay records with (naming the "
            "domains it serves). Several gateways of one site (docs/deployment.md) give "
            "all the same one, the site's, so the overlay sees one signer per domain "
            "whichever gateway publishes. Empty: the [tls] certificate."),
    Setting("overlay", "private_key", "", v.path,
            "PEM private key (unencrypted) of overlay.certificate. Empty: taken from "
            "the certificate file."),
    Setting("overlay", "record_lifetime", "3600", v.seconds(60, 86400),
            "Seconds a published record lives; it is re-published at half that."),
    Setting("overlay", "cache", "5", v.seconds(0, 3600),
            "Seconds a lookup result is cached (an empty result at most 2 s)."),
    Setting("overlay", "route", "", v.sip_uri,
            "SIP URI other gateways and peers send requests for our users to. Empty: "
            "this gateway's UDP (else TCP) listen address, e.g. sip:192.0.2.10:5060;lr."),
    Setting("overlay", "publish_rate", "1000", v.seconds(1, 1000000),
            "Most records signed and published per second. A binding change is "
            "published within 0.1 s while changes come slower than this; a burst (a "
            "mass re-registration) queues the AoRs and publishes each once, with its "
            "latest bindings, so SIP keeps the CPU."),
    Setting("overlay", "health_interval", "10", v.seconds(0.1, 3600),
            "Seconds between checks that a few neighbours still answer; a node whose "
            "neighbours are all gone joins again (back-off from 1 s, doubling up to 60 "
            "s, with jitter)."),
    Setting("overlay", "bootstrap_dns", "", v.domains,
            "Domains whose DNS lists bootstrap peers (comma separated): SRV records "
            "_p2psip._udp.<domain> and TXT records there with \"address:port\" entries. "
            "Tried after the static bootstrap peers and before the node cache; all are "
            "combined."),
    Setting("overlay", "dns_servers", "", v.dns_servers,
            "DNS servers for bootstrap_dns (address:port, comma separated). Empty: "
            "dns.servers, and with that empty the system's (/etc/resolv.conf)."),
    Setting("overlay", "publish_dns", "", v.one_domain,
            "Keep this domain's bootstrap records (TXT at _p2psip._udp.<domain>, one "
            "\"ip:port\" per node) up to date by RFC 2136 UPDATE: the first gateway adds "
            "itself, joined gateways remove entries whose node does not answer and add "
            "themselves while fewer than publish_dns_min_entries answer "
            "(docs/dns.md). Also read as a bootstrap_dns domain. Empty: off."),
    Setting("overlay", "publish_dns_server", "", v.dns_server,
            "The primary DNS server that takes the UPDATEs (host:port). Needed with "
            "publish_dns."),
    Setting("overlay", "publish_dns_zone", "", v.one_domain,
            "The zone the records are in. Empty: publish_dns itself."),
    Setting("overlay", "publish_dns_key_file", "", v.path,
            "File holding the TSIG key that signs the UPDATEs (tsig-keygen or keymgr "
            "output, or \"name algorithm secret\"; hmac-sha256 or stronger). Needed "
            "with publish_dns. Never on the command line."),
    Setting("overlay", "publish_dns_fingerprint", "yes", v.yes_no,
            "With publish_dns: also keep this gateway's certificate fingerprint in TXT "
            "records at _p2psip-cert.<domain> for every sip.domains entry inside "
            "publish_dns_zone (added next to other gateways' entries; a certificate it "
            "rolled over from is replaced)."),
    Setting("overlay", "publish_dns_min_entries", "3", v.int_range(1, 20),
            "Joined gateways add themselves while fewer listed nodes answer."),
    Setting("overlay", "publish_dns_interval", "60", v.seconds(0.2, 86400),
            "Seconds between checks of the records (jittered by ±30 %)."),
    Setting("upstream", "uri", "", v.upstream_uri,
            "A conventional SIP registrar/proxy that runs next to the overlay during a "
            "migration (docs/migration.md), e.g. sip:192.0.2.20:5060, or by name "
            "(sip:provider.example, located in DNS by RFC 3263 with failover over its "
            "SRV targets; needs dns in proxy.resolvers). Empty: none. Requests from its "
            "address(es) are trusted (no digest challenge)."),
    Setting("upstream", "domain", "", v.plain,
            "The domain of our users' AoRs at the upstream server. Empty: the host of "
            "uri."),
    Setting("upstream", "register", "yes", v.yes_no,
            "Register every local AoR there, with this gateway as Contact (third-party "
            "registration), so the old infrastructure can reach our users."),
    Setting("upstream", "username", "", v.plain,
            "Digest user name for those registrations, when the upstream asks for "
            "credentials."),
    Setting("upstream", "password", "", v.plain,
            "Digest password for those registrations."),
    Setting("upstream", "expires", "600", v.int_range(60, 86400),
            "Seconds asked for in those registrations; they are refreshed at half of "
            "it."),
    Setting("status", "enabled", "no", v.yes_no,
            "An HTTP endpoint with /status (JSON) and /metrics (Prometheus text). Off "
            "by default."),
    Setting("status", "listen", "127.0.0.1:9060", v.status_listen,
            "Where it listens (host:port); keep it on loopback or a management network."),
    Setting("limits", "source_rate", "200", v.seconds(0, 1000000),
            "Requests per second one source address may send (token bucket); beyond it "
            "requests get 503 with Retry-After. 0: no limit. (Message size and "
            "connection limits are in [sip].)"),
    Setting("limits", "source_burst", "400", v.seconds(1, 1000000),
            "Requests a source may send at once above the rate."),
    Setting("limits", "exempt_trusted", "yes", v.yes_no,
            "Sources in auth.trusted_networks (this machine by default) are not "
            "limited."),
    Setting("limits", "overload_delay", "0", v.seconds(0, 10),
            "Overload control (UDP): when datagrams have waited longer than this "
            "(seconds) in the socket's queue throughout an interval of 0.1 s, the gateway "
            "is past its capacity and admits only a share of new requests (out of "
            "dialogs; never ACK, CANCEL, requests in dialogs, responses), lowered while "
            "the queue stands and raised as soon as it drains; the others get 503 with "
            "Retry-After, built without parsing them. 0 (the default for now): off; "
            "0.1 is the value to try. See docs/performance.md (its measurements so far "
            "are why it is not on by default yet)."),
    Setting("limits", "overload_drop_delay", "0.4", v.seconds(0, 60),
            "When the queue stands even longer than this (seconds), new requests that "
            "are not admitted are dropped unread instead of answered 503 (a 503 costs "
            "too much then; their senders retransmit later)."),
    Setting("limits", "overload_retry_after", "5", v.int_range(1, 3600),
            "Retry-After (seconds) of the 503 sent to requests shed under overload."),
    Setting("dns", "servers", "", v.dns_servers,
            "DNS servers (host[:port], port 53 when omitted) for RFC 3263 server "
            "location (the \"dns\" resolver). Empty: the system's (/etc/resolv.conf)."),
    Setting("dns", "timeout", "2", v.seconds(0.1, 30),
            "Seconds a DNS question may take, retries included; then it counts as a "
            "server failure (remembered 5 s)."),
    Setting("registrar", "min_expires", "60", v.int_range(0, 2**31 - 1),
            "Shortest registration accepted; shorter ones get 423 Interval Too Brief."),
    Setting("registrar", "nat_min_expires", "20", v.int_range(0, 2**31 - 1),
            "Shortest registration accepted from a phone behind NAT (its source address "
            "is not what its Via or Contact says): NATed phones register every 20-30 s "
            "to keep their NAT binding open. Never above min_expires."),
    Setting("registrar", "max_expires", "3600", v.int_range(1, 2**31 - 1),
            "Longer registrations are cut to this."),
    Setting("registrar", "default_expires", "3600", v.int_range(1, 2**31 - 1),
            "Used when a REGISTER gives neither an Expires header nor a contact expires "
            "parameter."),
    Setting("registrar", "max_contacts", "10", v.int_range(1, 1000),
            "Most contacts one address-of-record may have; more get 403."),
    Setting("registrar", "flow_timer", "25", v.int_range(0, 3600),
            "Seconds between keep-alives asked of phones that register with RFC 5626 "
            "outbound (Supported: outbound, a Contact with reg-id and +sip.instance): "
            "sent as Flow-Timer with Require: outbound in the 200 OK. Under the usual "
            "30 s UDP NAT timeout. 0: no Flow-Timer (the phone's defaults apply)."),
    Setting("database", "url", "", v.plain,
            "SQLAlchemy URL of the registry. Empty: the SQLite file "
            "<data_dir>/registry.sqlite3 (WAL, durable commits). For several gateways "
            "sharing one registry use PostgreSQL, e.g. "
            "postgresql+psycopg://gateway@db.example.net/p2psip",
            option="database"),
    Setting("database", "auto_upgrade", "yes", v.yes_no,
            "Bring the schema up to date on start. With \"no\" the gateway refuses to "
            "start on an old schema; run `p2psip-admin db upgrade` by hand."),
    Setting("database", "sweep_interval", "30", v.seconds(0.1, 86400),
            "Seconds between sweeps that delete expired bindings."),
    Setting("database", "sync_interval", "2", v.seconds(0.1, 86400),
            "Seconds between checks for registry changes made elsewhere (p2psip-admin, "
            "other gateways sharing a PostgreSQL registry). On PostgreSQL the other "
            "gateways' changes arrive at once (LISTEN/NOTIFY); this poll is the "
            "fallback."),
    Setting("database", "heartbeat_interval", "5", v.seconds(0.2, 3600),
            "Seconds between this gateway's heartbeats in the registry (table "
            "site_gateways): the gateways sharing a registry see which of them are up "
            "(p2psip-admin status); one silent for three intervals is down."),
    Setting("database", "worker", "process", v.choice("process", "thread"),
            "Where database calls run: \"process\" (a worker process; SQLAlchemy's work "
            "then does not compete with SIP handling for Python's GIL, worth ~2x "
            "REGISTER throughput) or \"thread\" (a worker thread of the gateway process). "
            "An in-memory SQLite URL always uses a thread."),
    Setting("database", "commit_interval", "0.005", v.seconds(0, 1),
            "Least seconds between the starts of two registry transactions (group "
            "commit). Under load each transaction then carries more registrations, "
            "which saves most of the writer's work; an idle gateway still commits (and "
            "answers) at once. 0 commits as soon as the previous transaction is done."),
    Setting("site", "uri", "", v.site_uri,
            "Several gateways sharing one PostgreSQL registry (docs/deployment.md): the "
            "URI the site's other gateways reach this one at, over TLS, e.g. "
            "sips:gw-a.example.net:5061. Requests for phones registered here that "
            "reach another gateway of the site come here, where the phone's flow (NAT "
            "binding, TCP/TLS/WebSocket connection) is. Empty: this gateway takes no "
            "part in routing between gateways."),
    Setting("site", "peers", "", v.domains,
            "Names of the site's gateways as their TLS certificates carry them "
            "(verified by tls.ca_file, or the system's trust store), comma separated. "
            "Requests arriving over a TLS connection whose client certificate names one "
            "of them are trusted (no digest challenge, no relaying check): another "
            "gateway of the site authenticated the caller. Empty: none is."),
)

#: section -> key -> setting, in definition order.
BY_SECTION: dict[str, dict[str, Setting]] = {}
for _setting in SETTINGS:
    BY_SECTION.setdefault(_setting.section, {})[_setting.key] = _setting

SECTION_DOCS = {
    "gateway": "Identity, storage and logging.",
    "sip": "Listeners, transport limits and transaction timers.",
    "proxy": "Where requests are routed, and Timer C.",
    "tls": "The TLS transport (SIPS) and its certificate.",
    "websocket": "SIP over WebSocket (RFC 7118) for browsers.",
    "auth": "Digest authentication.",
    "overlay": "The P2PSIP overlay node.",
    "upstream": "A conventional SIP server next to the overlay.",
    "status": "The HTTP status endpoint.",
    "limits": "Per-source request rate and overload control.",
    "dns": "DNS for locating SIP servers (RFC 3263).",
    "registrar": "REGISTER limits (RFC 3261 §10.3).",
    "database": "The SQL registry.",
    "site": "Several gateways sharing one registry.",
}

INI_HEADER = """\
p2psip-gateway configuration (generated from gateway/app/settings.py: edit there, then
run `python -m gateway.app.settings ini > conf/gateway.ini`).

Every key below is shown with its built-in default; a file only needs the keys it
changes. Unknown sections or keys, or bad values, stop the gateway with a one-line
error naming the key. Start with:
    twistd -n p2psip-gateway --config conf/gateway.ini
{options}"""


def options() -> Iterator[Setting]:
    """The settings that have a twistd option, in definition order."""
    return (s for s in SETTINGS if s.option)


def render_ini() -> str:
    """``conf/gateway.ini``: every key with its default and its documentation."""
    names = ", ".join(f"--{s.option}" for s in options())
    overrides = "\n".join(textwrap.wrap(
        f"Command-line options override the file: {names}; --set SECTION.KEY=VALUE "
        "overrides any key (repeatable).", 86, break_on_hyphens=False))
    lines = [f"; {line}".rstrip()
             for line in INI_HEADER.format(options=overrides).splitlines()]
    for section, keys in BY_SECTION.items():
        lines += ["", f"[{section}]"]
        for setting in keys.values():
            lines += [f"; {line}" for line in textwrap.wrap(setting.doc, 86)]
            lines.append(f"{setting.key} = {setting.default}".rstrip())
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """``docs/configuration.md``: the reference of every key and option."""
    out = ["# Configuration reference", "",
           "Generated from `gateway/app/settings.py` (`python -m gateway.app.settings "
           "markdown > docs/configuration.md`); a test keeps it equal to the code. The",
           "same keys, with their defaults, are in [`conf/gateway.ini`](../conf/gateway.ini).",
           "", "A file only needs the keys it changes. Any unknown section or key, or a "
           "bad value, stops the gateway with a one-line error naming the key.", "",
           "## Command-line options of `twistd p2psip-gateway`", "",
           "| option | overrides |", "|---|---|",
           "| `--config`, `-c` | the configuration file (INI); without it the built-in "
           "defaults |"]
    for setting in options():
        short = f", `-{setting.short}`" if setting.short else ""
        out.append(f"| `--{setting.option}`{short} | `{setting.name}` |")
    out += ["| `--set SECTION.KEY=VALUE` | any key (repeatable), e.g. "
            "`--set overlay.enabled=no` |", "",
            "An option's value is parsed exactly as the key's value in the file; an empty "
            "value (`''`) of a list key means none.", ""]
    for section, keys in BY_SECTION.items():
        out += [f"## [{section}]", "", SECTION_DOCS[section], "",
                "| key | default | takes | meaning |", "|---|---|---|---|"]
        for setting in keys.values():
            default = f"`{setting.default}`" if setting.default else "(empty)"
            doc = setting.doc.replace("|", "\\|")
            out.append(f"| `{setting.key}` | {default} | {setting.kind} | {doc} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.app.settings ini|markdown``: print a generated file."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["ini"]:
        sys.stdout.write(render_ini())
    elif args == ["markdown"]:
        sys.stdout.write(render_markdown())
    else:
        print("usage: python -m gateway.app.settings ini|markdown", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
