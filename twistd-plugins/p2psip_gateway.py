"""twistd plugin: ``twistd -n p2psip-gateway --config conf/gateway.ini``."""

from __future__ import annotations

import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    """Command-line options of ``twistd p2psip-gateway``."""

    optParameters = [  # noqa: RUF012 - Twisted API
        ["config", "c", None, "Configuration file (INI); without it the built-in defaults."],
        ["data-dir", "d", None, "Data directory (overrides gateway.data_dir)."],
        ["listen-udp", None, None, "UDP listen addresses, comma separated host:port "
                                   "(overrides sip.listen_udp; '' for none)."],
        ["listen-tcp", None, None, "TCP listen addresses, comma separated host:port "
                                   "(overrides sip.listen_tcp; '' for none)."],
        ["listen-tls", None, None, "TLS listen addresses, comma separated host:port "
                                   "(overrides tls.listen; '' for none)."],
        ["listen-overlay", None, None, "Overlay (Kademlia) UDP address host:port "
                                       "(overrides overlay.listen)."],
        ["bootstrap", None, None, "Overlay bootstrap peers, comma separated host:port "
                                  "(overrides overlay.bootstrap)."],
        ["domain", None, None, "Domains served, comma separated (overrides gateway.domains)."],
        ["database", None, None, "SQLAlchemy database URL (overrides database.url)."],
        ["log-level", None, None, "debug, info, warn, error or critical."],
    ]

    def overrides(self) -> dict[str, str]:
        """The options given, as config overrides."""
        mapping = {"data-dir": "gateway.data_dir", "listen-udp": "sip.listen_udp",
                   "listen-tcp": "sip.listen_tcp", "listen-tls": "tls.listen",
                   "listen-overlay": "overlay.listen", "bootstrap": "overlay.bootstrap",
                   "domain": "gateway.domains",
                   "database": "database.url", "log-level": "gateway.log_level"}
        return {key: self[opt] for opt, key in mapping.items() if self[opt] is not None}


def _asyncio_reactor():
    """Install Twisted's asyncio reactor, or exit with one line if another one is in."""
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import asyncioreactor, reactor

        if not isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
            sys.exit("p2psip-gateway: needs the asyncio reactor, but "
                     f"{type(reactor).__name__} is installed: run "
                     "`twistd --reactor=asyncio p2psip-gateway ...` (or drop --reactor)")
        return reactor
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor

    return reactor


@implementer(IServiceMaker, IPlugin)
class GatewayServiceMaker:
    """Makes the p2psip-gateway service."""

    tapname = "p2psip-gateway"
    description = "SIP registrar/proxy bridging conventional SIP and a P2PSIP overlay."
    options = Options

    def makeService(self, options: Options):  # noqa: N802 - Twisted API
        """Validate everything that can fail, then hand back the service."""
        reactor = _asyncio_reactor()
        from gateway.service import StartupError, make_gateway_service

        try:
            return make_gateway_service(options["config"], options.overrides(), reactor,
                                        tune_gc=True)
        except StartupError as exc:
            sys.exit(f"p2psip-gateway: {exc}")


service_maker = GatewayServiceMaker()
