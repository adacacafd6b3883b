"""SIP over WebSocket (RFC 7118): a WebSocket UA (as a browser's JsSIP would behave:
``.invalid`` host, transport ws) registers, calls and is called by a UDP phone through
the gateway; requests reach it only over its connection; bad input is refused and
counted and the gateway keeps serving."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
import websocket
from conftest import ports, start_gateway
from sip_ua import UA, call
from twisted.internet.threads import deferToThread
from ws_ua import WsUA

from gateway.app.service import GatewayService


@pytest_twisted.async_yield_fixture
async def ws_gateway(tmp_path: Path) -> AsyncIterator[GatewayService]:
    """A gateway with WS and WSS listeners (the generated certificate) on loopback."""
    service = await start_gateway(tmp_path / "data", **{
        "websocket.listen": "127.0.0.1:0", "websocket.listen_secure": "127.0.0.1:0",
        "websocket.allowed_origins": "https://phone.example.test"})
    yield service
    await service.stopService()


def _url(service: GatewayService, kind: str = "ws") -> str:
    return f"{kind}://127.0.0.1:{ports(service)[kind]}/"


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the generated certificate is self-signed
    return context


@pytest.mark.parametrize("kind", ["ws", "wss"])
@pytest_twisted.ensureDeferred
async def test_a_websocket_ua_is_called_over_its_connection_and_calls_back(
        ws_gateway: GatewayService, kind: str) -> None:
    udp_port = ports(ws_gateway)["udp"]

    def run() -> tuple[dict, dict]:
        browser = WsUA("bob", _url(ws_gateway, kind), origin="https://phone.example.test",
                       tls=_insecure() if kind == "wss" else None)
        phone = UA("alice", udp_port)
        try:
            assert browser.register().status == 200
            assert phone.register().status == 200
            to_browser = call(phone, browser)
            to_phone = call(browser, phone, hang_up="callee")
            return to_browser, to_phone
        finally:
            browser.close()
            phone.close()

    to_browser, to_phone = await deferToThread(run)
    incoming = to_browser["incoming"]
    # Double Record-Route where the request changes transport (RFC 7118 §5.2, RFC 5658):
    # the WebSocket side (carrying the browser's flow) and the UDP side.
    record_routes = incoming.header_values("record-route")
    assert len(record_routes) == 2, record_routes
    assert f"transport={kind}" in record_routes[0] and "flow=" in record_routes[0]
    assert "transport=" not in record_routes[1]
    assert incoming.vias[0].transport.lower() == kind
    assert to_browser["bye_ok"] is not None and to_phone["bye_ok"] is not None
    assert to_phone["incoming"].header_values("record-route")[0].endswith(";lr>")


@pytest_twisted.ensureDeferred
async def test_a_browser_whose_connection_closed_is_unavailable_at_once(
        ws_gateway: GatewayService) -> None:
    udp_port = ports(ws_gateway)["udp"]

    def run() -> int:
        browser = WsUA("carol", _url(ws_gateway), origin="https://phone.example.test")
        phone = UA("alice", udp_port)
        try:
            assert browser.register().status == 200
            browser.close()
            phone.send(phone.request("INVITE", browser.uri))
            return phone.expect(480, timeout=3).status
        finally:
            phone.close()

    assert await deferToThread(run) == 480


@pytest_twisted.ensureDeferred
async def test_bad_websocket_input_is_refused_counted_and_survived(
        ws_gateway: GatewayService) -> None:
    url = _url(ws_gateway)
    rejected_before = ws_gateway.metrics.malformed

    def run() -> dict[str, object]:
        seen: dict[str, object] = {}
        # A handshake without the sip subprotocol, and one from a page not allowed.
        for name, kwargs in (("no_sip", {"subprotocols": ["chat"]}),
                             ("origin", {"origin": "https://evil.example.test",
                                         "subprotocols": ["sip"]})):
            try:
                websocket.create_connection(url, timeout=3, **kwargs).close()
                seen[name] = "accepted"
            except websocket.WebSocketBadStatusException as exc:
                seen[name] = exc.status_code
        browser = WsUA("dave", url, origin="https://phone.example.test")
        try:
            browser.ws.send("hello, not SIP")  # dropped
            browser.ws.send("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;"
                            "branch=z9hG4bKbad\r\nCSeq: nonsense\r\n\r\n")  # 400
            seen["bad_request"] = browser.receive().status
            browser.ws.send("x" * 70_000)  # over sip.max_message_size: closed (1009)
            opcode, frame = browser.ws.recv_data_frame(control_frame=True)
            seen["closed"] = (opcode, int.from_bytes(frame.data[:2], "big"))
        finally:
            browser.close()
        after = WsUA("erin", url, origin="https://phone.example.test")
        try:
            seen["still_serving"] = after.register().status
        finally:
            after.close()
        return seen

    seen = await deferToThread(run)
    assert seen["no_sip"] == 400, seen
    assert seen["origin"] == 403, seen
    assert seen["bad_request"] == 400
    assert seen["closed"] == (websocket.ABNF.OPCODE_CLOSE, 1009), seen
    assert seen["still_serving"] == 200
    # Both handshakes, the garbage, the bad request and the oversize message.
    assert ws_gateway.metrics.malformed - rejected_before >= 5


def test_the_page_needs_its_jssip_bundle_and_a_listener(tmp_path: Path) -> None:
    from gateway.app.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"^websocket\.page: needs websocket\.listen"):
        load_config(None, {"websocket.page": "yes"})
    with pytest.raises(ConfigError, match=r"^websocket\.jssip: the JsSIP bundle"):
        load_config(None, {"websocket.page": "yes", "websocket.listen": "127.0.0.1:0",
                           "websocket.jssip": str(tmp_path / "missing.js")})


@pytest_twisted.ensureDeferred
async def test_the_phone_page_is_served_beside_the_websocket(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    bundle = tmp_path / "jssip.js"
    bundle.write_text("window.JsSIP = {};  // a stand-in bundle\n")
    service = await start_gateway(tmp_path / "data", **{
        "websocket.listen": "127.0.0.1:0", "websocket.page": "yes",
        "websocket.jssip": str(bundle)})
    base = _url(service).replace("ws://", "http://")

    def fetch(path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as answer:
                return answer.status, answer.headers["content-type"], answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, "", b""

    try:
        index, script, library, missing = [await deferToThread(fetch, path) for path in
                                           ("", "phone.js", "jssip.js", "nothing-here")]
        # The WebSocket still works on the same port.
        browser = await deferToThread(WsUA, "frank", _url(service))
        registered = await deferToThread(browser.register)
        browser.close()
    finally:
        await service.stopService()
    assert index[0] == 200 and index[1].startswith("text/html") and b"phone.js" in index[2]
    assert script[0] == 200 and b"window.phone" in script[2]
    assert library[0] == 200 and library[2] == bundle.read_bytes()
    assert missing[0] == 404
    assert registered.status == 200


@pytest_twisted.ensureDeferred
async def test_a_peer_that_stops_answering_pings_is_dropped(tmp_path: Path) -> None:
    """Keep-alive: with websocket.keepalive = 1, a client that answers pings stays
    connected, one that stops reading (no pongs) is dropped within about 2 s."""
    service = await start_gateway(tmp_path / "data", **{
        "websocket.listen": "127.0.0.1:0", "websocket.keepalive": "1"})
    connections = service.transports.websockets["ws"].connections
    url = _url(service)

    def run() -> tuple[int, int, int]:
        lively = websocket.create_connection(url, subprotocols=["sip"], timeout=5)
        silent = websocket.create_connection(url, subprotocols=["sip"], timeout=5)
        try:
            time.sleep(0.3)
            before = len(connections)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:  # the lively one answers pings as it reads
                lively.settimeout(0.2)
                with contextlib.suppress(websocket.WebSocketTimeoutException):
                    lively.recv()
            return before, len(connections), int(lively.connected)
        finally:
            lively.close()
            silent.close()

    try:
        before, after, lively_connected = await deferToThread(run)
    finally:
        await service.stopService()
    assert before == 2
    assert after == 1 and lively_connected == 1
