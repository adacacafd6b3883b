"""SIP over TLS against the in-process gateway: its certificate, registrations and calls
over TLS, sips: rules, verification of the servers it connects to, and mutual TLS."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from conftest import ports, start_gateway
from sip_ua import UA, call
from tls_certs import TestCA
from twisted.internet.threads import deferToThread

from gateway.app.service import GatewayService, StartupError, prepare
from gateway.sip.message import Request, Response
from gateway.sip.parser import StreamFramer, parse_message
from gateway.sip.responses import build_response

HOST = "127.0.0.1"


def client_context(cafile: Path, *, cert: Path | None = None, key: Path | None = None,
                   maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A verifying client context that trusts ``cafile``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    if cert is not None:
        context.load_cert_chain(cert, key)
    if maximum is not None:
        context.maximum_version = maximum
    return context


def generated_cert(gateway: GatewayService) -> Path:
    return Path(gateway.prepared.config.data_dir) / "tls" / "gateway.crt"


def handshake(port: int, context: ssl.SSLContext, name: str = "localhost") -> bytes:
    """Connect, complete the handshake, return the server's certificate (DER)."""
    with socket.create_connection((HOST, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


async def _run(work):  # noqa: ANN001, ANN202 - a blocking test body in a thread
    return await deferToThread(work)


# --- the gateway's certificate --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_generated_certificate_verifies_for_localhost_and_loopback(gateway) -> None:
    port = ports(gateway)["tls"]
    context = client_context(generated_cert(gateway))

    def run() -> tuple[bytes, bytes]:
        return handshake(port, context, "localhost"), handshake(port, context, HOST)

    by_name, by_address = await _run(run)
    assert by_name == by_address
    fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(by_name).digest())
    assert fingerprint == gateway.prepared.tls.material.fingerprint


@pytest_twisted.ensureDeferred
async def test_generated_certificate_is_kept_across_restarts(tmp_path) -> None:
    first = await start_gateway(tmp_path / "data")
    fingerprint = first.prepared.tls.material.fingerprint
    await first.stopService()
    key = tmp_path / "data" / "tls" / "gateway.key"
    assert key.stat().st_mode & 0o077 == 0, "the private key must not be group/world readable"
    second = await start_gateway(tmp_path / "data")
    try:
        assert second.prepared.tls.material.fingerprint == fingerprint
    finally:
        await second.stopService()


@pytest_twisted.ensureDeferred
async def test_a_name_the_certificate_does_not_carry_is_rejected_by_clients(gateway) -> None:
    port = ports(gateway)["tls"]
    context = client_context(generated_cert(gateway))

    def run() -> None:
        handshake(port, context, "wrong.example.com")

    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        await _run(run)


@pytest_twisted.ensureDeferred
async def test_tls_versions_below_the_configured_minimum_are_refused(tmp_path) -> None:
    strict = await start_gateway(tmp_path / "strict", **{"tls.min_version": "1.3"})
    relaxed = await start_gateway(tmp_path / "relaxed")
    try:
        def run(gateway: GatewayService) -> bytes:
            context = client_context(generated_cert(gateway), maximum=ssl.TLSVersion.TLSv1_2)
            return handshake(ports(gateway)["tls"], context)

        assert await _run(lambda: run(relaxed))  # the same client speaks TLS 1.2 fine
        with pytest.raises(ssl.SSLError):
            await _run(lambda: run(strict))
    finally:
        await strict.stopService()
        await relaxed.stopService()


# The client side must offer TLS 1.1 on purpose: Python warns that it is deprecated.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_tls_1_1_is_refused_by_default(gateway, tmp_path) -> None:
    port = ports(gateway)["tls"]
    cafile = generated_cert(gateway)

    def legacy_client() -> ssl.SSLContext:
        context = client_context(cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context

    def control() -> None:
        """The same client against a server that accepts TLS 1.1: proves the client
        can speak it, so a refusal below comes from the gateway."""
        ca = TestCA(tmp_path / "ca")
        leaf = ca.issue("legacy", dns=["localhost"])
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        server.load_cert_chain(leaf.cert, leaf.key)
        with socket.create_server((HOST, 0)) as listener:
            def serve() -> None:
                conn, _ = listener.accept()
                with contextlib.suppress(OSError), server.wrap_socket(conn, server_side=True):
                    pass
            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            context = legacy_client()
            context.load_verify_locations(ca.cert_path)
            with socket.create_connection(listener.getsockname(), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == "TLSv1.1"
            thread.join(5)

    try:
        await _run(control)
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.1 even to a willing server: {exc}")
    with pytest.raises(ssl.SSLError):
        await _run(lambda: handshake(port, legacy_client()))


def test_configured_certificate_whose_key_does_not_match_is_a_one_line_error(tmp_path) -> None:
    ca = TestCA(tmp_path / "ca")
    one, other = ca.issue("one", dns=["localhost"]), ca.issue("other", dns=["localhost"])
    with pytest.raises(StartupError, match=r"^tls\.private_key: .*does not belong"):
        prepare(None, {"gateway.data_dir": str(tmp_path / "d"), "sip.listen_udp": "",
                       "sip.listen_tcp": "", "tls.listen": "127.0.0.1:0",
                       "tls.certificate": str(one.cert), "tls.private_key": str(other.key)})
    with pytest.raises(StartupError, match=r"^tls\.certificate: cannot read"):
        prepare(None, {"gateway.data_dir": str(tmp_path / "d"), "tls.listen": "127.0.0.1:0",
                       "sip.listen_udp": "", "sip.listen_tcp": "",
                       "tls.certificate": str(tmp_path / "missing.pem")})


def test_a_cipher_string_that_selects_nothing_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(StartupError, match=r"^tls\.ciphers: "):
        prepare(None, {"gateway.data_dir": str(tmp_path / "d"), "sip.listen_udp": "",
                       "sip.listen_tcp": "", "tls.listen": "127.0.0.1:0",
                       "tls.ciphers": "NO-SUCH-CIPHER"})


def test_mutual_tls_without_a_trust_store_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(StartupError, match=r"^tls\.ca_file: "):
        prepare(None, {"gateway.data_dir": str(tmp_path / "d"), "sip.listen_udp": "",
                       "sip.listen_tcp": "", "tls.listen": "127.0.0.1:0",
                       "tls.require_client_cert": "yes"})


# --- registrations and calls over TLS -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_register_over_tls_and_crlf_keepalive(gateway) -> None:
    port = ports(gateway)["tls"]
    context = client_context(generated_cert(gateway))

    def run() -> tuple[Response, bytes]:
        ua = UA("alice", port, "tls", tls=context)
        try:
            response = ua.register()
            ua.sock.sendall(b"\r\n\r\n")
            return response, ua.sock.recv(16)
        finally:
            ua.close()

    response, pong = await _run(run)
    assert response.status == 200
    assert pong == b"\r\n"
    (binding,) = gateway.location.lookup("sip:alice@127.0.0.1")
    assert binding.transport == "tls" and binding.contact.endswith(";transport=tls")


@pytest_twisted.ensureDeferred
async def test_a_call_to_a_tls_phone_reuses_its_registration_connection(gateway) -> None:
    udp, tls = ports(gateway)["udp"], ports(gateway)["tls"]
    context = client_context(generated_cert(gateway))

    def run() -> tuple[Request, Response]:
        alice = UA("alice", tls, "tls", tls=context)
        bob = UA("bob", udp)
        try:
            assert alice.register().status == 200
            seen = call(bob, alice)  # alice gets it on the connection she opened
            incoming, ok = seen["incoming"], seen["ok"]
            assert isinstance(incoming, Request) and isinstance(ok, Response)
            return incoming, ok
        finally:
            alice.close()
            bob.close()

    incoming, ok = await _run(run)
    assert incoming.vias[0].transport.upper() == "TLS"
    # The TLS side carries the phone's connection as a flow token (RFC 5626 §5.3).
    tls_side, udp_side = incoming.header_values("record-route")
    assert tls_side.startswith(f"<sip:127.0.0.1:{tls};transport=tls;lr;flow=")
    assert udp_side == f"<sip:127.0.0.1:{udp};lr>"
    assert ok.status == 200


@pytest_twisted.ensureDeferred
async def test_sips_request_reaches_a_sips_contact_over_tls(gateway) -> None:
    udp, tls = ports(gateway)["udp"], ports(gateway)["tls"]
    context = client_context(generated_cert(gateway))

    def run() -> Request:
        alice = UA("alice", tls, "tls", tls=context, sips_contact=True)
        bob = UA("bob", udp)
        try:
            assert alice.register().status == 200
            bob.send(bob.request("INVITE", "sips:alice@127.0.0.1"))
            incoming = alice.expect_request("INVITE")
            alice.answer(incoming, 486)
            bob.expect(486)
            return incoming
        finally:
            alice.close()
            bob.close()

    incoming = await _run(run)
    assert str(incoming.uri).startswith("sips:alice@127.0.0.1:")
    assert incoming.header_values("record-route")[0].startswith(
        f"<sips:127.0.0.1:{tls};lr;flow=")


@pytest_twisted.ensureDeferred
async def test_sips_request_is_never_downgraded_to_udp(gateway) -> None:
    udp = ports(gateway)["udp"]

    def run() -> Response:
        alice, bob = UA("alice", udp), UA("bob", udp)
        try:
            assert bob.register().status == 200  # a sip: Contact over UDP
            alice.send(alice.request("INVITE", "sips:bob@127.0.0.1"))
            return alice.expect(480)
        finally:
            alice.close()
            bob.close()

    response = await _run(run)
    assert "sips" in response.reason


@pytest_twisted.ensureDeferred
async def test_sips_without_a_tls_listener_is_unsupported(tmp_path) -> None:
    service = await start_gateway(tmp_path / "data", **{"tls.listen": ""})
    try:
        def run() -> Response:
            ua = UA("alice", ports(service)["udp"])
            try:
                ua.send(ua.request("INVITE", "sips:bob@127.0.0.1"))
                return ua.expect(416)
            finally:
                ua.close()

        assert (await _run(run)).status == 416
    finally:
        await service.stopService()


# --- outgoing TLS: the gateway verifies the servers it connects to --------------------------


@contextlib.contextmanager
def tls_uas(cert: Path, key: Path) -> Iterator[tuple[int, list[Request]]]:
    """A TLS server on 127.0.0.1 that answers each INVITE it gets with 486."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    received: list[Request] = []
    listener = socket.create_server((HOST, 0))
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                framer = StreamFramer(65535)
                while True:
                    data = tls.recv(65535)
                    if not data:
                        return
                    for item in framer.feed(data):
                        message = parse_message(item, framed=True)
                        if isinstance(message, Request) and message.method == "INVITE":
                            received.append(message)
                            tls.sendall(build_response(message, 486, to_tag="t").serialize())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        listener.close()
        thread.join(10)


@pytest.mark.parametrize(("names", "trusted", "expected"), [
    ({"ips": [HOST]}, True, 486),  # valid: the INVITE arrives and is answered
    ({"dns": ["wrong.example.com"]}, True, "certificate name mismatch"),
    ({"ips": [HOST]}, False, "certificate not trusted"),
])
@pytest_twisted.ensureDeferred
async def test_outgoing_tls_verifies_the_server_certificate(tmp_path, names, trusted,
                                                            expected) -> None:
    ca = TestCA(tmp_path / "ca")
    leaf = (ca if trusted else TestCA(tmp_path / "rogue", "rogue CA")).issue("uas", **names)
    service = await start_gateway(tmp_path / "data", **{"tls.ca_file": str(ca.cert_path)})
    try:
        udp = ports(service)["udp"]
        with tls_uas(leaf.cert, leaf.key) as (uas_port, received):
            def run() -> Response:
                ua, carol = UA("alice", udp), UA("carol", udp)
                try:
                    # carol's phone registers a sips: Contact served by the TLS UAS.
                    carol.send(carol.request("REGISTER", f"sip:{HOST}", to=carol.uri, extra=[
                        ("Contact", f"<sips:carol@{HOST}:{uas_port}>")]))
                    carol.expect(200)
                    ua.send(ua.request("INVITE", "sips:carol@127.0.0.1"))
                    return ua.expect(486, 503, timeout=15)
                finally:
                    ua.close()
                    carol.close()

            response = await _run(run)
        if expected == 486:
            assert response.status == 486
            assert received and str(received[0].uri) == f"sips:carol@{HOST}:{uas_port}"
            assert received[0].vias[0].transport.upper() == "TLS"
        else:
            assert response.status == 503 and expected in response.reason
            assert not received
    finally:
        await service.stopService()


# --- mutual TLS -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mutual_tls_peers_need_a_certificate_and_are_not_challenged(tmp_path) -> None:
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("gateway", dns=["localhost"], ips=[HOST])
    peer = ca.issue("peer", dns=["peer.example.com"])
    service = await start_gateway(tmp_path / "data", **{
        "tls.certificate": str(server.cert), "tls.private_key": str(server.key),
        "tls.ca_file": str(ca.cert_path), "tls.require_client_cert": "yes",
        "auth.trusted_networks": ""})
    try:
        tls, udp = ports(service)["tls"], ports(service)["udp"]

        def run() -> tuple[int, int]:
            with_cert = UA("alice", tls, "tls", tls=client_context(
                ca.cert_path, cert=peer.cert, key=peer.key))
            plain = UA("bob", udp)
            try:
                return with_cert.register().status, plain.register().status
            finally:
                with_cert.close()
                plain.close()

        assert await _run(run) == (200, 401)

        def without_certificate() -> None:
            ua = UA("carol", tls, "tls", tls=client_context(ca.cert_path))
            try:
                ua.register()
            finally:
                ua.close()

        with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError, OSError)):
            await _run(without_certificate)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_the_names_of_a_configured_certificate_are_the_gateways_own(tmp_path) -> None:
    """Phones name the gateway by its certificate's name in their outbound proxy, so a
    Route or Request-URI with that name is for the gateway; the generated certificate's
    names add nothing (they are this host's names already)."""
    issued = TestCA(tmp_path / "ca").issue("gw", dns=["gw.example.test", "*.example.test"])
    service = await start_gateway(tmp_path / "data", **{
        "tls.certificate": str(issued.cert), "tls.private_key": str(issued.key)})
    try:
        port = ports(service)["udp"]
        assert service.myself.is_me("gw.example.test", port)
        assert service.myself.is_me("GW.example.test", None)
        assert not service.myself.is_me("other.example.test", None)  # no wildcard
        assert not service.myself.is_me("example.test", None)
    finally:
        await service.stopService()
