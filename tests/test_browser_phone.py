"""The browser phone in real browsers: two headless Chromiums (fake microphones) load
the page the gateway serves over HTTPS, register over WSS with passwords (JsSIP, MD5 on
the default [auth]), call each other through the gateway, audio flows both ways
(WebRTC statistics) and the hang-up ends the call on both sides.

The lab: a router, the gateway's host and a host for the browsers, so the browsers are
not in ``auth.trusted_networks`` and see only the lab's addresses."""

from __future__ import annotations

import time
from pathlib import Path

import browser as browser_module
import pytest
from browser import Browser
from conftest import unavailable
from gateway_proc import REPO
from lab_gateway import LabGateway
from netlab import Lab
from test_lab_sites import drain

DOMAIN = "example.test"
GATEWAY, BROWSERS = "198.18.60.2", "198.18.61.2"
WSS_PORT = 8443
JSSIP = REPO / "web" / "dist" / "jssip.js"


@pytest.fixture
def browsers_available() -> None:
    reason = browser_module.available()
    if reason is None and not JSSIP.exists():
        reason = f"{JSSIP} is not built (npm ci && npm run build in web/)"
    if reason is not None:
        unavailable(reason, "P2PSIP_REQUIRE_BROWSER")


def _site(lab: Lab, tmp_path: Path) -> tuple[LabGateway, str]:
    hosts = lab.star({"gw": GATEWAY, "br": BROWSERS})
    gateway = LabGateway(lab, hosts["gw"], GATEWAY, DOMAIN, tmp_path,
                         f"websocket.listen_secure={GATEWAY}:{WSS_PORT}",
                         "websocket.page=yes", f"websocket.jssip={JSSIP}",
                         trusted_networks=None)
    gateway.add_user("alice", "alice-secret")
    gateway.add_user("bob", "bob-secret")
    gateway.start()
    return gateway, hosts["br"]


def test_two_browsers_register_and_call_each_other_over_wss(
        lab: Lab, tmp_path: Path, browsers_available: None) -> None:
    gateway, browser_host = _site(lab, tmp_path)
    page = f"https://{GATEWAY}:{WSS_PORT}/"
    alice = Browser(lab, browser_host, tmp_path, "alice")
    bob = Browser(lab, browser_host, tmp_path, "bob")
    try:
        for phone, user in ((alice, "alice"), (bob, "bob")):
            phone.open(page)
            phone.run(f"window.phone.register('{user}', '{DOMAIN}', '{user}-secret');")
        for phone in (alice, bob):
            phone.wait_for("window.phone.state.registration", "registered")
        bob.run("document.getElementById('autoanswer').checked = true;")

        alice.run(f"window.phone.call('sip:bob@{DOMAIN}');")
        for phone in (alice, bob):
            phone.wait_for("window.phone.state.call", "established")
        heard = {}
        for name, phone in (("alice", alice), ("bob", bob)):
            heard[name] = phone.wait_for(
                "window.phone.audio()", lambda audio: audio["received"] > 2000
                and audio["sent"] > 2000, timeout=15)
        alice.run("window.phone.hangup();")
        for phone in (alice, bob):
            phone.wait_for("window.phone.state.call", lambda s: s.startswith("ended"))
    except AssertionError:
        print(gateway.tail(60))
        raise
    finally:
        alice.close()
        bob.close()
        gateway.stop()
    print(f"audio bytes (sent/received): {heard}")


#: An audio offer as WebRTC makes them (ICE, DTLS fingerprint, rtcp-mux, opus), from a
#: phone that has no WebRTC stack: enough for the browser to answer and the call to be
#: set up; no media flows (its ICE has no candidates).
WEBRTC_OFFER = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "a=group:BUNDLE 0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0", "a=ice-ufrag:p2ps", "a=ice-pwd:p2psipgatewaytestpassword1",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", "a=mid:0",
    "a=sendrecv", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", ""]).encode()


def test_a_browser_at_one_gateway_is_called_by_a_phone_at_another_through_the_dht(
        lab: Lab, tmp_path: Path, browsers_available: None) -> None:
    from sip_ua import in_dialog
    from test_lab_sites import A, B, phone, two_sites

    site_a, site_b, _ = two_sites(lab, tmp_path, 0)
    gateway_a = LabGateway(lab, site_a, A, "a.example", tmp_path,
                           f"websocket.listen_secure={A}:{WSS_PORT}", "websocket.page=yes",
                           f"websocket.jssip={JSSIP}")
    gateway_a.start()
    gateway_b = LabGateway(lab, site_b, B, "b.example", tmp_path,
                           bootstrap=gateway_a.overlay)
    gateway_b.start()
    carol = Browser(lab, site_a, tmp_path, "carol")
    bob = phone(lab, site_b, "bob", gateway_b)
    try:
        carol.open(f"https://{A}:{WSS_PORT}/")
        carol.run("document.getElementById('autoanswer').checked = true;"
                  "window.phone.register('carol', 'a.example', '');")
        carol.wait_for("window.phone.state.registration", "registered")
        deadline = time.monotonic() + 30
        while True:  # until B finds carol's record in the overlay
            invite = bob.request("INVITE", "sip:carol@a.example", body=WEBRTC_OFFER)
            bob.send(invite)
            answer = bob.expect(200, 404, 480, timeout=20)
            if answer.status == 200 or time.monotonic() > deadline:
                break
            drain(bob)
            time.sleep(1)
        assert answer.status == 200, answer
        bob.send(in_dialog(bob, "ACK", answer, invite, 1))
        carol.wait_for("window.phone.state.call", "established")
        bob.send(in_dialog(bob, "BYE", answer, invite, 2))
        bye_ok = bob.expect(200, method="BYE")
        carol.wait_for("window.phone.state.call", lambda s: s.startswith("ended"))
    finally:
        carol.close()
        bob.close()
    assert b"a=fingerprint" in answer.body  # a WebRTC answer from the browser
    assert bye_ok.status == 200


SIPP_SCENARIOS = Path(__file__).with_name("sipp")


def test_a_browser_calls_a_sipp_uas_and_a_sipp_uac_calls_the_browser(
        lab: Lab, tmp_path: Path, browsers_available: None, sipp: str) -> None:
    """Signalling between a browser and SIPp (which has no WebRTC: its SDP has the shape
    WebRTC needs and no candidates), in both directions, through the gateway."""
    gateway, browser_host = _site(lab, tmp_path)
    common = ["-i", BROWSERS, "-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin",
              "-trace_err"]
    alice = Browser(lab, browser_host, tmp_path, "alice")
    try:
        alice.open(f"https://{GATEWAY}:{WSS_PORT}/")
        alice.run(f"document.getElementById('autoanswer').checked = true;"
                  f"window.phone.register('alice', '{DOMAIN}', 'alice-secret');")
        alice.wait_for("window.phone.state.registration", "registered")

        uas = lab.popen(browser_host, [
            sipp, "-sf", str(SIPP_SCENARIOS / "uas_webrtc.xml"), "-p", "5080", *common,
            "-error_file", str(tmp_path / "uas.errors"), f"{GATEWAY}:5060"],
            tmp_path / "uas.log")
        time.sleep(0.5)
        alice.run(f"window.phone.call('sip:uas@{BROWSERS}:5080');")
        alice.wait_for("window.phone.state.call", "established")
        alice.run("window.phone.hangup();")
        alice.wait_for("window.phone.state.call", lambda s: s.startswith("ended"))
        assert uas.wait(timeout=15) == 0, (tmp_path / "uas.log").read_text()

        uac = lab.popen(browser_host, [
            sipp, "-sf", str(SIPP_SCENARIOS / "uac_webrtc.xml"), "-s", "alice",
            "-p", "5081", *common, "-error_file", str(tmp_path / "uac.errors"),
            f"{GATEWAY}:5060"], tmp_path / "uac.log")
        alice.wait_for("window.phone.state.call", "established")
        assert uac.wait(timeout=30) == 0, (tmp_path / "uac.log").read_text()
        alice.wait_for("window.phone.state.call", lambda s: s.startswith("ended"))
    except AssertionError:
        print(gateway.tail(60))
        raise
    finally:
        alice.close()
        gateway.stop()
