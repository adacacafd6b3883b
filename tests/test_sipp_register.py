"""A real SIP client (SIPp) registers and unregisters users against a real gateway.

The gateway runs as ``twistd -n p2psip-gateway`` (see ``gateway_proc.py``); the registry
is read back with the admin CLI, as an operator would, and with a REGISTER without
Contact (RFC 3261 §10.2.3), as a phone would.  Skipped when ``sipp`` is not on PATH,
unless ``P2PSIP_REQUIRE_SIPP=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

try:
    from tests.gateway_proc import HOST, GatewayProcess, free_port
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from gateway_proc import HOST, GatewayProcess, free_port

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "bench" / "sipp"
EXPIRES = 3600


def run_sipp(
    sipp: str,
    scenario: str,
    gateway: GatewayProcess,
    workdir: Path,
    *,
    prefix: str,
    count: int,
    local_port: int,
    transport: str = "u1",
    expires: int = EXPIRES,
) -> dict[str, str]:
    """Run a scenario for users ``prefix1..prefix<count>``; assert all got 200 OK.

    Returns the final row of SIPp's statistics, keyed by column name.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stat_file = workdir / "stat.csv"
    port = gateway.tcp_port if transport.startswith("t") else gateway.udp_port
    command = [
        sipp, "-sf", str(SCENARIOS / scenario), "-t", transport,
        "-key", "user_prefix", prefix, "-key", "expires", str(expires),
        "-i", HOST, "-p", str(local_port), "-m", str(count), "-r", "100",
        "-timeout", "60s", "-timeout_error", "-nostdin", "-buff_size", "1048576",
        "-trace_stat", "-stf", str(stat_file),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        f"{HOST}:{port}",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=90, check=False
    )
    assert stat_file.exists(), f"SIPp wrote no statistics:\n{result.stdout}\n{result.stderr}"
    rows = list(csv.reader(stat_file.open(newline=""), delimiter=";"))
    stats = dict(zip(rows[0], rows[-1], strict=False))
    errors = workdir / "errors.log"
    context = (
        f"SIPp exit code {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}\n"
        f"{errors.read_text(errors='replace')[-3000:] if errors.exists() else ''}\n"
        f"gateway log:\n{gateway.log_tail()}"
    )
    assert result.returncode == 0, context
    assert int(stats["SuccessfulCall(C)"]) == count, context
    assert int(stats["FailedCall(C)"]) == 0, context
    return stats


def admin_bindings(data_dir: Path) -> list[dict[str, Any]]:
    """The registry's bindings, as ``gateway.app.admin bindings list --json`` prints them."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.app.admin", "--data-dir", str(data_dir),
         "bindings", "list", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"admin CLI failed:\n{result.stdout}\n{result.stderr}"
    bindings = json.loads(result.stdout)
    assert isinstance(bindings, list)
    return bindings


def remaining_seconds(binding: dict[str, Any]) -> float:
    """Seconds left on a binding, from ``expires_in`` or ``expires`` (absolute or relative)."""
    if binding.get("expires_in") is not None:
        return float(binding["expires_in"])
    expires = float(binding["expires"])
    return expires - time.time() if expires > 1e9 else expires


def uri_key(uri: str) -> str:
    """A comparison key for our test URIs: user parts are lowercase, and host and the
    transport parameter compare case-insensitively (RFC 3261 §19.1.4)."""
    return uri.strip().lower()


def expected_contact(prefix: str, n: int, local_port: int, transport: str) -> str:
    """The Contact URI register.xml sends for user ``n``."""
    return f"sip:{prefix}{n}@{HOST}:{local_port};transport={transport}"


def check_registry(
    data_dir: Path, expected: dict[str, str], transport: str, received_port: int | None
) -> None:
    """Assert the registry holds exactly ``expected`` (AoR -> contact), with fresh expiry."""
    bindings = admin_bindings(data_dir)
    for binding in bindings:
        assert {"aor", "contact", "q", "received", "transport"} <= binding.keys(), binding
    actual = {uri_key(b["aor"]): uri_key(b["contact"]) for b in bindings}
    assert len(bindings) == len(expected), f"{len(bindings)} bindings, not {len(expected)}"
    assert actual == {uri_key(aor): uri_key(contact) for aor, contact in expected.items()}
    for binding in bindings:
        assert EXPIRES - 120 <= remaining_seconds(binding) <= EXPIRES + 1, binding
        assert binding["transport"].lower() == transport, binding
        assert HOST in str(binding["received"]), binding
        if received_port is not None:
            assert str(binding["received"]).endswith(f":{received_port}"), binding


def query_contacts(gateway: GatewayProcess, user: str) -> tuple[int, list[str]]:
    """REGISTER without Contact for ``user``: the status code and the listed contacts."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        local_port = sock.getsockname()[1]
        request = (
            f"REGISTER sip:{HOST}:{gateway.udp_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{user}@{HOST}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
            "CSeq: 1 REGISTER\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), gateway.udp_address)
        response = sock.recv(65535).decode(errors="replace")
    head = response.split("\r\n\r\n", 1)[0].split("\r\n")
    code = int(head[0].split()[1])
    contacts: list[str] = []
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("contact", "m"):
            contacts += re.findall(r"<([^>]*)>", value) or [value.split(";")[0].strip()]
    return code, contacts


def test_sipp_registers_300_udp_users_unregisters_half_and_the_rest_survive_restart(
    sipp: str, tmp_path: Path
) -> None:
    users = 300
    local_port = free_port(socket.SOCK_DGRAM)
    data_dir = tmp_path / "data"
    expected = {
        f"sip:u{n}@{HOST}": expected_contact("u", n, local_port, "UDP") for n in range(1, users + 1)
    }
    with GatewayProcess(data_dir) as gateway:
        run_sipp(sipp, "register.xml", gateway, tmp_path / "register",
                 prefix="u", count=users, local_port=local_port)  # fmt: skip
        check_registry(data_dir, expected, "udp", local_port)

        # Expires: 0 for the very contact registered (same -p) removes u1..u150.
        run_sipp(sipp, "register.xml", gateway, tmp_path / "unregister",
                 prefix="u", count=users // 2, local_port=local_port, expires=0)  # fmt: skip
        remaining = {aor: c for aor, c in expected.items() if int(aor[5:].split("@")[0]) > 150}
        assert len(remaining) == 150
        check_registry(data_dir, remaining, "udp", local_port)

        gateway.restart()
        check_registry(data_dir, remaining, "udp", local_port)
        code, contacts = query_contacts(gateway, "u200")
        assert code == 200
        assert [uri_key(c) for c in contacts] == [uri_key(remaining[f"sip:u200@{HOST}"])]
        code, contacts = query_contacts(gateway, "u1")
        assert (code, contacts) == (200, [])
        assert gateway.running(), gateway.log_tail()


def test_sipp_registers_50_tcp_users_and_wildcard_unregisters_half(
    sipp: str, tmp_path: Path
) -> None:
    users = 50
    local_port = free_port(socket.SOCK_STREAM)
    data_dir = tmp_path / "data"
    expected = {
        f"sip:t{n}@{HOST}": expected_contact("t", n, local_port, "TCP") for n in range(1, users + 1)
    }
    with GatewayProcess(data_dir) as gateway:
        run_sipp(sipp, "register.xml", gateway, tmp_path / "register",
                 prefix="t", count=users, local_port=local_port, transport="t1")  # fmt: skip
        # SIPp binds its TCP connection to -p, so the source port is that port too.
        check_registry(data_dir, expected, "tcp", local_port)

        # Contact: * with Expires: 0 (RFC 3261 §10.2.2) removes t1..t25.
        run_sipp(sipp, "unregister.xml", gateway, tmp_path / "unregister",
                 prefix="t", count=users // 2, local_port=local_port, transport="t1")  # fmt: skip
        remaining = {aor: c for aor, c in expected.items() if int(aor[5:].split("@")[0]) > 25}
        check_registry(data_dir, remaining, "tcp", local_port)
        assert gateway.running(), gateway.log_tail()
