"""A site of two gateways on two hosts of the network lab sharing one PostgreSQL on a
third (started here), each knowing the other by its TLS certificate (issue 17).

Phones register at each gateway over UDP from behind a NAT box that drops unsolicited
traffic, over TCP and TLS (their Contacts lead nowhere: only their connections reach
them) and over WebSocket; every phone is called through every gateway (INVITE, 180,
200, ACK, BYE), and the overlay sees one record per AoR, routed to the gateway that
holds the phone. Then gateway A is killed (SIGKILL) while phones register at both, and
what the phones, the callers and the overlay see is measured until they recover."""

from __future__ import annotations

import glob
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import unavailable
from lab_gateway import SIP_PORT, TLS_PORT, LabGateway, lab_env
from netlab import Lab
from sip_ua import UA, call
from test_lab_sites import ack_of
from test_tls import client_context
from tls_certs import TestCA
from ws_ua import WsUA

A, B, DB, PUBLIC, NAT_PUBLIC, HOME = ("198.18.1.2", "198.18.2.2", "198.18.9.2",
                                      "198.18.5.2", "198.18.3.2", "10.3.0.2")
DOMAIN = "site.example"
WS_PORT = 8080
HEARTBEAT = 1.0
NOWHERE = 9  # the Contact port of stream phones: nothing listens there


@pytest.fixture
def postgres_host(lab: Lab, tmp_path: Path) -> Iterator[str]:
    """Host ``db`` of the lab running a PostgreSQL server of its own (trust auth); its
    SQLAlchemy URL."""
    servers = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not servers or shutil.which("setpriv") is None:
        unavailable("PostgreSQL's server binaries", "P2PSIP_REQUIRE_POSTGRES")
    binaries = Path(servers[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="p2psip-lab-pg-"))  # postgres must reach it
    try:
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
        subprocess.run([*as_postgres, str(binaries / "initdb"), "-D", str(data), "-A",
                        "trust", "-U", "postgres"], check=True, capture_output=True,
                       timeout=120)
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 198.18.0.0/15 trust\n")  # the lab's gateways
        db = lab.host("db")
        lab.cable(db, "eth0", f"{DB}/24", lab.router("r"), "to-db", "198.18.9.1/24")
        lab.default_route(db, "198.18.9.1")
        lab.popen(db, [*as_postgres, str(binaries / "postgres"), "-D", str(data),
                       "-c", f"listen_addresses={DB}", "-c",
                       f"unix_socket_directories={data}"], tmp_path / "postgres.log")
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", db, str(binaries / "pg_isready"),
                              "-h", DB, "-q"], check=False).returncode != 0:
            assert time.monotonic() < deadline, (tmp_path / "postgres.log").read_text()
            time.sleep(0.2)
        yield f"postgresql+psycopg://postgres@{DB}:5432/postgres"
    finally:
        lab.close()  # postgres first, then its files
        shutil.rmtree(data, ignore_errors=True)


def _site(lab: Lab, tmp_path: Path, url: str) -> tuple[LabGateway, LabGateway, TestCA]:
    router = f"{lab.tag}r"  # made with the database host
    ca = TestCA(tmp_path / "ca", "site CA")
    site = ca.issue("site", dns=[DOMAIN])  # the overlay voice of the whole site
    gateways = []
    for name, address, net in (("a", A, "198.18.1"), ("b", B, "198.18.2")):
        host = lab.host(name)
        lab.cable(host, "eth0", f"{address}/24", router, f"to-{name}", f"{net}.1/24")
        lab.default_route(host, f"{net}.1")
        own = ca.issue(f"gw-{name}", dns=[f"gw-{name}.site.test", DOMAIN], ips=[address])
        gateways.append(LabGateway(
            lab, host, address, DOMAIN, tmp_path / name,
            f"database.url={url}", f"database.heartbeat_interval={HEARTBEAT}",
            f"tls.certificate={own.cert}", f"tls.private_key={own.key}",
            f"tls.ca_file={ca.cert_path}", f"site.uri=sips:{address}:{TLS_PORT}",
            "site.peers=gw-a.site.test, gw-b.site.test",
            f"overlay.certificate={site.cert}", f"overlay.private_key={site.key}",
            f"websocket.listen={address}:{WS_PORT}", "auth.methods=INVITE",
            bootstrap=f"{A}:6084" if name == "b" else "", tls=True,
            trusted_networks=""))  # trusted by certificate only
    for gateway in gateways:
        gateway.start()
    return gateways[0], gateways[1], ca


def _edges(lab: Lab) -> tuple[str, str]:
    """Host ``pub`` (public phones and callers) and ``home`` behind a NAT box."""
    router = f"{lab.tag}r"
    pub, natbox, home = lab.host("pub"), lab.host("nat"), lab.host("home")
    lab.cable(pub, "eth0", f"{PUBLIC}/24", router, "to-pub", "198.18.5.1/24")
    lab.cable(router, "to-nat", "198.18.3.1/24", natbox, "up", f"{NAT_PUBLIC}/24")
    lab.cable(natbox, "lan", "10.3.0.1/24", home, "eth0", f"{HOME}/24")
    lab.nat(natbox, "up")
    for ns, via in ((pub, "198.18.5.1"), (natbox, "198.18.3.1"), (home, "10.3.0.1")):
        lab.default_route(ns, via)
    return pub, home


def _phones(lab: Lab, pub: str, home: str, gateway: LabGateway, ca: TestCA,
            tag: str) -> dict[str, UA]:
    """A registered phone of each kind at ``gateway`` (users u<tag>, t<tag>, s<tag>,
    w<tag>)."""
    address = gateway.address
    with lab.inside(home):
        udp = UA(f"u{tag}", SIP_PORT, local_host=HOME, domain=DOMAIN,
                 gateway_host=address, timeout=10)
    with lab.inside(pub):
        tcp = UA(f"t{tag}", SIP_PORT, "tcp", local_host=PUBLIC, domain=DOMAIN,
                 gateway_host=address, timeout=10)
        tls = UA(f"s{tag}", TLS_PORT, "tls", local_host=PUBLIC, domain=DOMAIN,
                 gateway_host=address, timeout=10, tls=client_context(ca.cert_path),
                 server_name=address)
        sock = socket.create_connection((address, WS_PORT), timeout=10)
    ws = WsUA(f"w{tag}", f"ws://{address}:{WS_PORT}/", sock=sock, domain=DOMAIN,
              timeout=10)
    for phone in (tcp, tls):
        phone.port = NOWHERE
    phones = {"udp": udp, "tcp": tcp, "tls": tls, "ws": ws}
    for kind, phone in phones.items():
        assert phone.register(expires=600).status == 200, kind
    return phones


def _caller(lab: Lab, pub: str, gateway: LabGateway) -> UA:
    """A phone of another domain that calls through ``gateway``."""
    with lab.inside(pub):
        return UA("carol", SIP_PORT, local_host=PUBLIC, domain="elsewhere.example",
                  gateway_host=gateway.address, timeout=10)


def _lookup(lab: Lab, pub: str, tmp_path: Path, aor: str) -> list[dict]:
    done = subprocess.run(
        ["ip", "netns", "exec", pub, sys.executable, "-m", "gateway.app.peer",
         "--host", PUBLIC, "--state-dir", str(tmp_path / "peer"), "--bootstrap",
         f"{B}:6084", "--first-pin", "replicas", "lookup", aor], capture_output=True,
        text=True, env=lab_env(), timeout=60, cwd=tmp_path)
    return json.loads(done.stdout) if done.returncode == 0 else []


def test_every_phone_through_every_gateway_and_a_gateway_killed_under_load(
        lab: Lab, postgres_host: str, tmp_path: Path) -> None:
    gateway_a, gateway_b, ca = _site(lab, tmp_path, postgres_host)
    pub, home = _edges(lab)
    phones = {"a": _phones(lab, pub, home, gateway_a, ca, "a"),
              "b": _phones(lab, pub, home, gateway_b, ca, "b")}
    callers = {"a": _caller(lab, pub, gateway_a), "b": _caller(lab, pub, gateway_b)}
    owners = {"a": A, "b": B}
    everything = [*callers.values(), *(p for group in phones.values() for p in group.values())]
    try:
        time.sleep(0.5)  # the change feed brings every registration to the other gateway
        for holder, group in phones.items():
            for kind, phone in group.items():
                for through, caller in callers.items():
                    # The BYE comes from the phone's side for half of them.
                    seen = call(caller, phone, "callee" if kind in ("udp", "ws") else "caller")
                    incoming = seen["incoming"]
                    assert owners[holder] in incoming.header_values("via")[0], (
                        f"{kind} phone of {holder} called through {through}")
                    assert seen["bye_ok"] is not None
        # The overlay: one record per AoR, from the site's certificate, routed to the
        # gateway that holds the phone.
        signers = set()
        for holder, group in phones.items():
            for phone in group.values():
                records = _lookup(lab, pub, tmp_path, phone.uri)
                assert len(records) == 1, (phone.uri, records)
                assert owners[holder] in records[0]["route"], records
                signers.add(records[0]["signer"])
        assert len(signers) == 1

        # -- kill A while phones register at both gateways ---------------------------
        outcomes: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
        stop = threading.Event()

        def load(name: str, gateway: LabGateway) -> None:
            with lab.inside(pub):
                ua = UA(f"load-{name}", SIP_PORT, local_host=PUBLIC, domain=DOMAIN,
                        gateway_host=gateway.address, timeout=1)
            started = time.monotonic()
            try:
                for sent in range(100_000):  # bounded; stopped by the event
                    if stop.is_set():
                        return
                    # 100 REGISTERs a second: under limits.source_rate for one address.
                    time.sleep(max(0.0, started + sent / 100 - time.monotonic()))
                    try:
                        status = ua.register(expires=600).status
                    except TimeoutError:
                        status = 0
                    outcomes[name].append((time.monotonic(), status))
            finally:
                ua.close()

        threads = [threading.Thread(target=load, args=(n, g), daemon=True)
                   for n, g in (("a", gateway_a), ("b", gateway_b))]
        for thread in threads:
            thread.start()
        time.sleep(2)
        killed = time.monotonic()
        gateway_a.kill()
        # What a caller through B sees for A's TCP phone until that phone registers
        # again at B (as it does when its connection closes: next SRV target).
        victim = phones["a"]["tcp"]
        statuses = []
        invite = callers["b"].request("INVITE", victim.uri)
        callers["b"].send(invite)
        answer = callers["b"].expect(*range(300, 700), timeout=40)
        callers["b"].send(ack_of(answer))
        statuses.append(answer.status)
        with lab.inside(pub):
            moved = UA(victim.user, SIP_PORT, "tcp", local_host=PUBLIC, domain=DOMAIN,
                       gateway_host=B, timeout=10)
        everything.append(moved)
        moved.port = NOWHERE
        assert moved.register(expires=600).status == 200
        seen = call(callers["b"], moved)
        assert B in seen["incoming"].header_values("via")[0]
        recovered = time.monotonic() - killed
        # A's UDP phone behind NAT: its NAT lets in only A's packets. B, knowing A is
        # gone (a request to it failed, or its heartbeat stopped), answers at once.
        natted = phones["a"]["udp"]
        asked = time.monotonic()
        invite = callers["b"].request("INVITE", natted.uri)
        callers["b"].send(invite)
        answer = callers["b"].expect(*range(300, 700), timeout=40)
        callers["b"].send(ack_of(answer))
        natted_wait = time.monotonic() - asked
        statuses.append(answer.status)
        natted.gateway = (B, SIP_PORT)  # its next REGISTER goes to the next SRV target
        assert natted.register(expires=600).status == 200
        seen = call(callers["b"], natted)
        assert B in seen["incoming"].header_values("via")[0]
        # The overlay: A's phones that did not register again end up published by B
        # (once it sees A down), one record each throughout.
        deadline = time.monotonic() + 30
        while True:
            records = _lookup(lab, pub, tmp_path, phones["a"]["tls"].uri)
            if len(records) == 1 and B in records[0]["route"]:
                break
            assert len(records) <= 1, records
            assert time.monotonic() < deadline, records
            time.sleep(0.5)
        republished = time.monotonic() - killed
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        at_b = [status for _, status in outcomes["b"]]
        after_kill_a = [status for at, status in outcomes["a"] if at > killed]
        report = {"registrations at B during the kill": len(at_b),
                  "failed at B": sum(s != 200 for s in at_b),
                  "statuses at B": sorted(set(at_b)),
                  "REGISTERs to dead A (timed out)": len(after_kill_a),
                  "first calls to A's TCP, then UDP phone through B": statuses,
                  "seconds until the TCP phone was called through B": round(recovered, 2),
                  "seconds the UDP phone's caller waited": round(natted_wait, 2),
                  "seconds until the overlay routed A's phone to B": round(republished, 2)}
        print(f"\nsite kill report: {report}")
        assert report["failed at B"] == 0, report
        assert statuses[0] in (480, 503) and statuses[1] in (480, 503), report
        assert natted_wait < 2, report  # not Timer B's 32 s
        # B stops routing through A within three heartbeats (and the overlay follows).
        assert republished < 3 * HEARTBEAT + 15, report
    finally:
        for phone in everything:
            phone.close()
        gateway_b.stop()
        gateway_a.stop()
