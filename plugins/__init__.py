"""Extension plugins of the gateway (installed as ``gateway.plugins``), found with
``twisted.plugin.getPlugins``: the target resolvers ``local``, ``overlay`` and
``upstream`` (:class:`gateway.server.routing.IResolverFactory`), ordered by
``proxy.resolvers``. A resolver of your own is one more module here providing that
interface (docs/architecture.md, "Extension points")."""
