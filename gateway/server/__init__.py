"""Server logic: the SIP core, proxy, registrar, routing and auth policy (sans-IO
decisions) and the driver that executes their actions."""
