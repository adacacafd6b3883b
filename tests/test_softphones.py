"""Real softphones through the gateway on its default [auth] settings: baresip (MD5 only)
and linphonec (SHA-256 capable) register with passwords and call each other over UDP,
TCP and TLS, in both directions; the call is established on both sides, each side
records the other's tone, and the hang-up is seen on both sides.

The lab: a router, the gateway's host (198.18.50.2, TLS certificate for
gw.example.test from a test CA) and one host per phone, so the phones are not in
``auth.trusted_networks`` (default: loopback only) and must authenticate; the phones
find gw.example.test through their namespace's /etc/hosts.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import softphones
from conftest import unavailable
from lab_gateway import LabGateway
from netlab import Lab
from softphones import Baresip, Linphonec, tone_share
from tls_certs import TestCA

DOMAIN = "example.test"
GATEWAY = "198.18.50.2"
GATEWAY_NAME = "gw.example.test"
BARESIP_TONE, LINPHONE_TONE = 440.0, 1000.0
PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@pytest.fixture
def phones_available() -> None:
    reason = softphones.available()
    if reason is not None:
        unavailable(reason, "P2PSIP_REQUIRE_SOFTPHONES")


def _has_header(head: str, name: str) -> bool:
    return any(line.lower().startswith(name.lower() + ":") for line in head.splitlines())


def _site(lab: Lab, tmp_path: Path) -> tuple[LabGateway, str, str, TestCA]:
    hosts = lab.star({"gw": GATEWAY, "pa": "198.18.51.2", "pb": "198.18.52.2"})
    for name in ("pa", "pb"):
        lab.etc_file(hosts[name], "hosts", f"127.0.0.1 localhost\n{GATEWAY} {GATEWAY_NAME}\n")
        lab.etc_file(hosts[name], "resolv.conf", "nameserver 127.0.0.1\n")
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue("gateway", dns=[GATEWAY_NAME, DOMAIN], ips=[GATEWAY])
    gateway = LabGateway(lab, hosts["gw"], GATEWAY, DOMAIN, tmp_path,
                         f"tls.certificate={issued.cert}", f"tls.private_key={issued.key}",
                         trusted_networks=None, tls=True)
    gateway.add_user("alice", "alice-secret")
    gateway.add_user("bob", "bob-secret")
    gateway.start()
    return gateway, hosts["pa"], hosts["pb"], ca


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_baresip_and_linphone_call_each_other_with_passwords(
        lab: Lab, tmp_path: Path, transport: str, phones_available: None) -> None:
    gateway, alice_host, bob_host, ca = _site(lab, tmp_path)
    port = PORTS[transport]
    alice = Baresip(lab, alice_host, tmp_path, user="alice", password="alice-secret",
                    domain=DOMAIN, address="198.18.51.2",
                    proxy=f"sip:{GATEWAY}:{port};transport={transport}",
                    transport=transport, tone_hz=BARESIP_TONE, cafile=ca.cert_path)
    bob = Linphonec(lab, bob_host, tmp_path, user="bob", password="bob-secret",
                    domain=DOMAIN, proxy=f"sip:{GATEWAY_NAME}:{port};transport={transport}",
                    transport=transport, tone_hz=LINPHONE_TONE, cafile=ca.cert_path)
    try:
        alice.start()
        bob.start()
        alice.wait_registered()
        bob.wait_registered()

        # baresip calls linphone; baresip hangs up.
        heard_by_bob = bob.record_next_call()
        alice.dial(f"sip:bob@{DOMAIN}")
        alice.wait_established()
        bob.wait_established()
        time.sleep(3)
        alice.hang_up()
        alice.wait_ended()
        bob.wait_ended()

        # linphone calls baresip; linphone hangs up.
        bob.record_next_call()
        bob.dial(f"sip:alice@{DOMAIN}")
        bob.wait_established()
        alice.wait_established()
        time.sleep(3)
        bob.hang_up()
        bob.wait_ended()
        alice.wait_ended()
    except AssertionError:
        print(gateway.tail(60))
        raise
    finally:
        alice.stop()
        bob.stop()
        gateway.stop()

    # linphone authenticated with SHA-256 (it chooses among the challenges); baresip,
    # challenged with MD5 alone, registered too (above).
    sent_by_bob = bob.requests_sent()
    assert any("algorithm=SHA-256" in head for head in sent_by_bob
               if head.startswith("REGISTER")), "linphone did not use SHA-256"
    # Credentials stop at the gateway: linphone sends its Proxy-Authorization again on
    # the in-dialog ACK and BYE, and neither phone receives anyone's.
    assert any(_has_header(head, "Proxy-Authorization") for head in sent_by_bob
               if head.startswith(("ACK", "BYE"))), "linphone sent no in-dialog credentials"
    received = alice.requests_received() + bob.requests_received()
    methods = {head.split(" ", 1)[0] for head in received}
    assert {"INVITE", "ACK", "BYE"} <= methods, methods
    leaked = [head for head in received if _has_header(head, "Proxy-Authorization")
              or _has_header(head, "Authorization")]
    assert leaked == [], leaked[0]

    heard_by_alice = alice.recordings()
    assert len(heard_by_alice) == 2, heard_by_alice
    # Each side recorded the other's tone (a share of the energy no noise reaches).
    assert tone_share(heard_by_bob, BARESIP_TONE) > 0.3, heard_by_bob
    assert tone_share(heard_by_alice[1], LINPHONE_TONE) > 0.3, heard_by_alice[1]
