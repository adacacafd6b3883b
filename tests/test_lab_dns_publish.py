"""The overlay's DNS name kept by the gateways themselves, across hosts (RFC 2136): a
Knot DNS primary on its own host of the lab, gateways A, B and C on three others, none
given a static bootstrap peer. A starts alone and lists itself; B joins through the name
and adds itself; A is killed (SIGKILL: nothing withdrawn) and B removes its entry; C
joins through the name afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
from dns_server import KEY_NAME, KnotServer, zone
from lab_gateway import OVERLAY_PORT, LabGateway
from netlab import Lab

A, B, C, D = "198.18.1.2", "198.18.2.2", "198.18.3.2", "198.18.9.2"


def listed(lab: Lab, dns_host: str, server: KnotServer) -> list[str]:
    """The TXT strings at _p2psip._udp.example.net, asked inside the DNS host."""
    with lab.inside(dns_host):
        response = dns.query.udp(dns.message.make_query("_p2psip._udp.example.net", "TXT"),
                                 server.host, port=server.port, timeout=2)
    return sorted(b"".join(r.strings).decode() for rrset in response.answer
                  if rrset.rdtype == dns.rdatatype.TXT for r in rrset)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 40.0) -> float:
    """Seconds until ``check()`` held (bounded)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what} not seen in {timeout} s"
        time.sleep(0.3)
    return time.monotonic() - started


def test_gateways_on_three_hosts_keep_the_overlays_dns_name(
        lab: Lab, tmp_path: Path, knot_zones) -> None:  # noqa: ANN001
    router = lab.router("r")
    hosts = {}
    for name, address in (("a", A), ("b", B), ("c", C), ("d", D)):
        host = lab.host(name)
        net = address.rsplit(".", 1)[0]
        lab.cable(host, "eth0", f"{address}/24", router, f"to-{name}", f"{net}.1/24")
        lab.default_route(host, f"{net}.1")
        hosts[name] = host
    with lab.inside(hosts["d"]):  # Knot runs on its own host of the lab
        server = knot_zones({"example.net": zone("example.net")}, host=D)
    key = tmp_path / "tsig.key"
    key.write_text(f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{server.secret}"; }};')
    settings = ("overlay.publish_dns=example.net",
                f"overlay.publish_dns_server={D}:{server.port}",
                f"overlay.publish_dns_key_file={key}", "overlay.publish_dns_interval=2",
                "overlay.health_interval=1", f"overlay.dns_servers={D}:{server.port}")

    def entries() -> list[str]:
        return listed(lab, hosts["d"], server)

    gateway_a = LabGateway(lab, hosts["a"], A, "a.example", tmp_path, *settings)
    gateway_a.start()
    wait_until(lambda: entries() == [f"{A}:{OVERLAY_PORT}"], "A listing itself")
    gateway_b = LabGateway(lab, hosts["b"], B, "b.example", tmp_path, *settings)
    gateway_b.start()
    wait_until(lambda: entries() == sorted([f"{A}:{OVERLAY_PORT}", f"{B}:{OVERLAY_PORT}"]),
               "B adding itself")
    assert gateway_b.overlay_status()["state"] == "joined"  # through DNS alone
    gateway_a.kill()
    removed = wait_until(lambda: entries() == [f"{B}:{OVERLAY_PORT}"],
                         "A's entry removed")
    gateway_c = LabGateway(lab, hosts["c"], C, "c.example", tmp_path, *settings)
    gateway_c.start()
    wait_until(lambda: f"{C}:{OVERLAY_PORT}" in entries(), "C adding itself")
    status = gateway_c.overlay_status()
    assert status["state"] == "joined" and status["dns_publish"]["state"] == "ok"
    print(f"a killed gateway's entry was removed {removed:.1f} s later")
