"""A browser (a WebSocket UA) registered at gateway A is reachable through the overlay:
a phone registered at gateway B on another host calls it and is called back, and
``p2psip-peer`` finds its record, whose route is gateway A (which holds the
connection)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from lab_gateway import LabGateway, lab_env
from netlab import Lab
from test_lab_sites import A, B, call_until_it_works, phone, two_sites
from ws_ua import WsUA

WS_PORT = 8080


def test_a_browser_at_one_gateway_and_a_phone_at_another_call_each_other(
        lab: Lab, tmp_path: Path) -> None:
    site_a, site_b, _ = two_sites(lab, tmp_path, 0)
    gateway_a = LabGateway(lab, site_a, A, "a.example", tmp_path,
                           f"websocket.listen={A}:{WS_PORT}")
    gateway_a.start()
    gateway_b = LabGateway(lab, site_b, B, "b.example", tmp_path,
                           bootstrap=gateway_a.overlay)
    gateway_b.start()
    with lab.inside(site_a):
        sock = socket.create_connection((A, WS_PORT), timeout=10)
    browser = WsUA("carol", f"ws://{A}:{WS_PORT}/", domain="a.example", timeout=10,
                   sock=sock)
    bob = phone(lab, site_b, "bob", gateway_b)
    try:
        assert browser.register(expires=600).status == 200
        deadline = time.monotonic() + 30
        to_browser = call_until_it_works(bob, browser, deadline)
        to_phone = call_until_it_works(browser, bob, deadline, hang_up="callee")
        found = subprocess.run(
            ["ip", "netns", "exec", site_b, sys.executable, "-m", "gateway.app.peer",
             "--host", B, "--state-dir", str(tmp_path / "peer"), "--bootstrap",
             gateway_a.overlay, "--first-pin", "replicas", "lookup", "sip:carol@a.example"],
            capture_output=True, text=True, env=lab_env(), timeout=60, cwd=tmp_path)
    finally:
        browser.close()
        bob.close()
    assert to_browser["bye_ok"] is not None and to_phone["bye_ok"] is not None
    incoming = to_browser["incoming"]
    assert incoming.vias[0].transport.lower() == "ws"
    assert "transport=ws" in incoming.header_values("record-route")[0]
    assert found.returncode == 0, found.stderr
    assert f"{A}:5060" in found.stdout, found.stdout
