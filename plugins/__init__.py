"""Extension plugins of the gateway (installed as ``gateway.plugins``), found with
``twisted.plugin.getPlugins``: resolvers (local, overlay, upstream, dns) and
authentication back-ends, added by the proxy, overlay and auth work."""
