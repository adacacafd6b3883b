"""p2psip-gateway: a SIP registrar and proxy bridging conventional SIP and a P2PSIP overlay."""

__version__ = "0.1.0"
