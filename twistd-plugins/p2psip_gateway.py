"""twistd plugin: ``twistd -n p2psip-gateway --config conf/gateway.ini``."""

from __future__ import annotations

import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer

from gateway.app.settings import options as setting_options


class Options(usage.Options):
    """Command-line options of ``twistd p2psip-gateway``: ``--config``, one option per
    common setting (from :data:`gateway.app.settings.SETTINGS`) and ``--set`` for any."""

    optParameters = [  # noqa: RUF012 - Twisted API
        ["config", "c", None, "Configuration file (INI); without it the built-in defaults."],
        *([s.option, s.short, None, f"Overrides {s.name} ({s.kind})."]
          for s in setting_options()),
    ]

    def __init__(self) -> None:
        super().__init__()
        self["set"] = []

    def opt_set(self, assignment: str) -> None:
        """SECTION.KEY=VALUE: override any setting (repeatable)."""
        name, sep, value = assignment.partition("=")
        if not sep or "." not in name:
            raise usage.UsageError(f"--set {assignment!r}: expected SECTION.KEY=VALUE")
        self["set"].append((name.strip(), value))

    def opt_version(self) -> None:
        """Print the version and exit."""
        from gateway import __version__

        print(f"p2psip-gateway {__version__}")
        sys.exit(0)

    def overrides(self) -> dict[str, str]:
        """The options given, as config overrides (``--set`` last: it wins)."""
        result = {s.name: self[s.option] for s in setting_options()
                  if self[s.option] is not None}
        result.update(self["set"])
        return result


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
        from gateway.app.service import StartupError, make_gateway_service

        try:
            return make_gateway_service(options["config"], options.overrides(), reactor,
                                        tune_gc=True)
        except StartupError as exc:
            sys.exit(f"p2psip-gateway: {exc}")


service_maker = GatewayServiceMaker()
