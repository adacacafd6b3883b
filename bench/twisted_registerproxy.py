"""Run Twisted's own ``twisted.protocols.sip.RegisterProxy`` as a benchmark baseline.

It serves one domain from an ``InMemoryRegistry`` on one UDP port, with no
authentication, no persistence and no transaction state: the plainest registrar
Twisted ships.  Usage::

    python bench/twisted_registerproxy.py --port 15070 [--host 127.0.0.1] [--domain 127.0.0.1]

Known quirks of this baseline (see /work/shared/SIPP-NOTES.md): it silently drops
REGISTERs for any domain but ``--domain``, ignores Expires (always 3600 s) and records
the packet source rather than the Contact.  The Via split patch the notes mention is only
needed when it relays calls; REGISTER is answered locally, so it is not applied here.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols.sip import InMemoryRegistry, RegisterProxy


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="UDP port to listen on")
    parser.add_argument(
        "--domain", default=None, help="registration domain (default: the --host address)"
    )
    return parser.parse_args(argv)


def start_logging() -> None:
    """Log warnings and errors to stderr; per-REGISTER info messages are dropped."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: list[str] | None = None) -> None:
    """Listen on ``--host:--port`` and serve REGISTERs until SIGTERM/SIGINT."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start_logging()
    domain = args.domain or args.host
    proxy = RegisterProxy(host=args.host, port=args.port)
    registry = InMemoryRegistry(domain)
    proxy.registry = registry
    proxy.locator = registry
    reactor.listenUDP(args.port, proxy, interface=args.host)  # type: ignore[attr-defined]
    print(f"twisted RegisterProxy for {domain} on udp {args.host}:{args.port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
