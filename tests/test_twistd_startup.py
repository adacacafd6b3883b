"""`twistd p2psip-gateway` as a user starts it: errors are one line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from gateway_proc import REPO, twistd_executable


def run_twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([twistd_executable(), "-n", "--pidfile=", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_bad_config_value_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.ini"
    config.write_text("[registrar]\nmax_contacts = lots\n")
    result = run_twistd("p2psip-gateway", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert last_line(result).startswith("p2psip-gateway: registrar.max_contacts:")
    assert "Traceback" not in result.stderr


def test_unknown_key_exits_non_zero_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.ini"
    config.write_text("[sip]\nlisten_sctp = 1\n")
    result = run_twistd("p2psip-gateway", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0 and "sip.listen_sctp" in last_line(result)


@pytest.mark.parametrize(("option", "key", "kind", "family"), [
    ("--listen-udp", "sip.listen_udp", "udp", socket.SOCK_DGRAM),
    ("--listen-tcp", "sip.listen_tcp", "tcp", socket.SOCK_STREAM),
    ("--listen-tls", "tls.listen", "tls", socket.SOCK_STREAM),
    ("--listen-overlay", "overlay.listen", "udp", socket.SOCK_DGRAM),
])
def test_port_in_use_is_a_one_line_error_naming_the_setting(
        tmp_path: Path, option: str, key: str, kind: str, family: int) -> None:
    with socket.socket(socket.AF_INET, family) as busy:
        busy.bind(("127.0.0.1", 0))
        if family == socket.SOCK_STREAM:
            busy.listen()
        port = busy.getsockname()[1]
        listeners = {"--listen-udp": "127.0.0.1:0", "--listen-tcp": "",
                     "--listen-tls": "", "--listen-overlay": "127.0.0.1:0",
                     option: f"127.0.0.1:{port}"}
        result = run_twistd("p2psip-gateway", "--data-dir", str(tmp_path / "d"),
                            *(item for pair in listeners.items() for item in pair),
                            cwd=tmp_path)
    assert result.returncode != 0
    assert last_line(result) == (f"p2psip-gateway: {key}: cannot listen on {kind} "
                                 f"127.0.0.1:{port}: Address already in use")
    assert "Traceback" not in result.stderr


def test_database_url_of_a_missing_driver_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_twistd("p2psip-gateway", "--data-dir", str(tmp_path / "d"),
                        "--listen-udp", "127.0.0.1:0", "--listen-tcp", "", "--listen-tls", "",
                        "--listen-overlay", "127.0.0.1:0", "--database", "mysql://x",
                        cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert last_line(result) == ("p2psip-gateway: database.url: cannot use database URL "
                                 "'mysql://x': No module named 'MySQLdb'")


def test_set_overrides_any_key_and_names_a_bad_one(tmp_path: Path) -> None:
    result = run_twistd("p2psip-gateway", "--data-dir", str(tmp_path / "d"),
                        "--set", "registrar.max_contacts=lots", cwd=tmp_path)
    assert result.returncode != 0
    assert last_line(result).startswith("p2psip-gateway: registrar.max_contacts:")
    result = run_twistd("p2psip-gateway", "--set", "registrar.nothing=1", cwd=tmp_path)
    assert result.returncode != 0 and "registrar.nothing" in last_line(result)


def test_version_options() -> None:
    from gateway import __version__

    for command in ([twistd_executable(), "p2psip-gateway", "--version"],
                    [sys.executable, "-m", "gateway.app.admin", "--version"],
                    [sys.executable, "-m", "gateway.app.peer", "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(__version__), command


def test_unreachable_database_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_twistd("p2psip-gateway", "--data-dir", str(tmp_path / "d"),
                        "--listen-udp", "127.0.0.1:0", "--listen-tcp", "", "--listen-tls", "",
                        "--listen-overlay", "127.0.0.1:0",
                        "--database", "postgresql+psycopg://nobody@127.0.0.1:1/none",
                        cwd=tmp_path)
    assert result.returncode != 0
    assert last_line(result).startswith("p2psip-gateway: database.url: cannot open the "
                                        "registry")


def test_other_reactor_stops_with_the_flag_to_use(tmp_path: Path) -> None:
    result = run_twistd("--reactor=poll", "p2psip-gateway", "--data-dir", str(tmp_path / "d"),
                        cwd=tmp_path)
    assert result.returncode != 0
    assert "--reactor=asyncio" in last_line(result)


def test_plugin_is_listed_by_twistd() -> None:
    result = subprocess.run([twistd_executable(), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert "p2psip-gateway" in result.stdout, sys.executable
