"""SIPp authenticates with digest MD5 against the real gateway (``twistd``); users are
created with the admin command line, as an operator would.

SIPp 3.6 answers only the first challenge of a 401 and knows only MD5, so this gateway
offers MD5 first here (``auth.algorithms = MD5, SHA-256``); docs/security.md explains.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from digest_client import authorization, parse_challenge
from gateway_proc import HOST, GatewayProcess, free_port
from sip_client import register
from test_sipp_calls import run_call
from test_sipp_register import admin_bindings

from gateway.sip.parser import parse_message

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "bench" / "sipp" / "register_auth.xml"
USERS = {"u1": "first-secret", "u2": "second secret", "u3": "Thïrd;pw"}


def admin(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``p2psip-admin --data-dir DATA ARGS`` with ``stdin``; must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.app.admin", "--data-dir", str(data_dir), *args],
        input=stdin, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result


def sipp_register(sipp: str, gateway: GatewayProcess, workdir: Path, user: str,
                  password: str, count: int) -> subprocess.CompletedProcess[str]:
    """Run register_auth.xml ``count`` times for ``user``."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        sipp, "-sf", str(SCENARIO), "-t", "u1", "-key", "user", user, "-au", user,
        "-ap", password, "-key", "expires", "3600", "-i", HOST,
        "-p", str(free_port(socket.SOCK_DGRAM)), "-m", str(count), "-r", "10",
        "-timeout", "20s", "-timeout_error", "-nostdin", "-trace_err",
        "-error_file", str(workdir / "errors.log"), f"{HOST}:{gateway.udp_port}",
    ]  # fmt: skip
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=60,
                          check=False)


def test_sipp_registers_with_md5_digest_and_a_wrong_password_fails(sipp: str,
                                                                   tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    admin(data_dir, "db", "upgrade")
    for user, password in USERS.items():
        admin(data_dir, "users", "add", f"sip:{user}@{HOST}", "--password-stdin",
              stdin=password + "\n")
    listed = admin(data_dir, "users", "list").stdout
    assert all(f"sip:{user}@{HOST}" in listed for user in USERS)
    assert not any(password in listed for password in USERS.values())
    config = tmp_path / "gateway.ini"
    config.write_text("[auth]\ntrusted_networks =\n")  # default algorithms
    with GatewayProcess(data_dir, extra_args=("--config", str(config))) as gateway:
        for user, password in USERS.items():
            result = sipp_register(sipp, gateway, tmp_path / user, user, password, 3)
            assert result.returncode == 0, (
                f"{user}: {result.stdout[-2000:]}\n{gateway.log_tail()}")
        wrong = sipp_register(sipp, gateway, tmp_path / "wrong", "u1", "not-it", 1)
        assert wrong.returncode != 0
        errors = (tmp_path / "wrong" / "errors.log").read_text(errors="replace")
        assert "401 Unauthorized" in errors
        bindings = admin_bindings(data_dir)
    registered = {b["aor"] for b in bindings}
    assert registered == {f"sip:{user}@{HOST}" for user in USERS}


def register_with_digest(gateway: GatewayProcess, user: str, password: str, port: int) -> None:
    """Register sip:<user>@127.0.0.1 from UDP ``port``, answering the 401 (the way the
    SIPp uas that then listens on that port would have)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        sock.settimeout(5)
        sock.sendto(register(user, local_port=port, call_id=f"reg-{user}"), gateway.udp_address)
        challenged = parse_message(sock.recv(65535))
        challenge = parse_challenge(challenged.header_values("www-authenticate")[0])
        header = authorization(challenge, method="REGISTER", uri=f"sip:{HOST}",
                               username=user, password=password)
        sock.sendto(register(user, local_port=port, call_id=f"reg-{user}", cseq=2,
                             extra=f"Authorization: {header}\r\n"), gateway.udp_address)
        assert sock.recv(65535).startswith(b"SIP/2.0 200 ")


def test_sipp_call_answers_the_407_challenge_and_completes(sipp: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for user, password in (("caller", "caller-pw"), ("callee", "callee-pw")):
        admin(data_dir, "users", "add", f"sip:{user}@{HOST}", stdin=password + "\n")
    config = tmp_path / "gateway.ini"
    config.write_text("[auth]\ntrusted_networks =\n")  # default algorithms
    with GatewayProcess(data_dir, extra_args=("--config", str(config))) as gateway:
        uas_port = free_port(socket.SOCK_DGRAM)
        register_with_digest(gateway, "callee", "callee-pw", uas_port)
        common = ["-i", HOST, "-m", "3", "-timeout", "40s", "-timeout_error", "-nostdin",
                  "-trace_err"]
        uas = [sipp, "-sf", str(SCENARIO.with_name("uas_call.xml")), "-p", str(uas_port),
               *common, "-error_file", str(tmp_path / "uas.errors"),
               f"{HOST}:{gateway.udp_port}"]
        uac = [sipp, "-sf", str(SCENARIO.with_name("uac_call_auth.xml")),
               "-p", str(free_port(socket.SOCK_DGRAM)), "-key", "user", "caller",
               "-au", "caller", "-ap", "caller-pw", "-s", "callee", "-r", "5", *common,
               "-error_file", str(tmp_path / "uac.errors"), f"{HOST}:{gateway.udp_port}"]
        run_call(uas, uac, tmp_path, gateway)
