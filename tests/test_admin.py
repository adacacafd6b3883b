"""The ``p2psip-admin`` command line, run as a subprocess against a temporary registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.registry.binding import Binding
from gateway.registry.store import LocationStore

REPO = Path(__file__).resolve().parent.parent


def admin(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway.app.admin ARGS`` and capture its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "gateway.app.admin", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory whose registry is upgraded and holds a few bindings."""
    directory = tmp_path / "data"
    store = LocationStore(f"sqlite:///{directory / 'registry.sqlite3'}")
    try:
        store.upgrade_schema()
        now = time.time()
        store.write_snapshots(
            {
                "sip:alice@example.com": [
                    Binding(
                        "sip:alice@example.com",
                        "sip:alice@192.0.2.1:5060",
                        now + 300,
                        q=0.5,
                        received="198.51.100.1:40000",
                        user_agent="Phone A",
                    ),
                    Binding(
                        "sip:alice@example.com",
                        "sip:alice@192.0.2.2:5062;transport=tcp",
                        now + 3600,
                        q=1.0,
                        transport="tcp",
                        path=("<sip:edge.example.com;lr>",),
                    ),
                ],
                "sip:bob@example.com": [
                    Binding("sip:bob@example.com", "sip:bob@192.0.2.3", now + 60, transport="tls")
                ],
                "sip:gone@example.com": [
                    Binding("sip:gone@example.com", "sip:gone@192.0.2.4", now - 1)
                ],
            },
            now,
        )
    finally:
        store.close()
    return directory


def db_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'registry.sqlite3'}"


def test_db_upgrade_creates_the_registry_and_can_run_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'registry.sqlite3'}"
    for _ in range(2):
        result = admin("--db", url, "db", "upgrade")
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    store = LocationStore(url)
    try:
        assert store.schema_is_current()
    finally:
        store.close()


def test_bindings_list_json_shows_live_bindings(data_dir: Path) -> None:
    result = admin("--data-dir", str(data_dir), "bindings", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["aor"], r["contact"]) for r in rows] == [
        ("sip:alice@example.com", "sip:alice@192.0.2.2:5062;transport=tcp"),
        ("sip:alice@example.com", "sip:alice@192.0.2.1:5060"),
        ("sip:bob@example.com", "sip:bob@192.0.2.3"),
    ]
    assert rows[0]["path"] == ["<sip:edge.example.com;lr>"]
    assert rows[0]["transport"] == "tcp"
    assert 3590 <= rows[0]["expires_in"] <= 3600
    assert rows[1]["received"] == "198.51.100.1:40000"
    assert rows[1]["user_agent"] == "Phone A"


def test_bindings_list_of_one_aor_prints_an_aligned_table(data_dir: Path) -> None:
    result = admin("--db", db_url(data_dir), "bindings", "list", "sip:alice@example.com")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "AOR", "CONTACT", "EXPIRES", "IN", "Q", "RECEIVED", "TRANSPORT", "USER", "AGENT"
    ]  # fmt: skip
    assert len(lines) == 2
    assert "Phone A" in lines[1] and "198.51.100.1:40000" in lines[1]
    # Aligned: each value starts where its column header starts.
    for line in lines:
        assert line.index("sip:alice@192.0.2.") == header.index("CONTACT")
        transport = "tcp" if "transport=tcp" in line else "udp"
        assert line.index(f" {transport} ") + 1 == header.index("TRANSPORT")


def test_bindings_list_of_an_unknown_aor_exits_1(data_dir: Path) -> None:
    result = admin("--data-dir", str(data_dir), "bindings", "list", "sip:nobody@example.com")
    assert result.returncode == 1
    assert "no live bindings" in result.stderr


def test_bindings_remove_deletes_every_binding_of_the_aor(data_dir: Path) -> None:
    result = admin("--data-dir", str(data_dir), "bindings", "remove", "sip:alice@example.com")
    assert result.returncode == 0, result.stderr
    assert "removed 2 binding(s)" in result.stdout

    listing = json.loads(admin("--data-dir", str(data_dir), "bindings", "list", "--json").stdout)
    assert [row["aor"] for row in listing] == ["sip:bob@example.com"]

    again = admin("--data-dir", str(data_dir), "bindings", "remove", "sip:alice@example.com")
    assert again.returncode == 1
    assert "no bindings" in again.stderr


def test_config_file_names_the_registry(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.ini"
    config.write_text(f"[database]\nurl = {db_url(data_dir)}\n")
    result = admin("--config", str(config), "bindings", "list", "sip:bob@example.com", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["contact"] for row in json.loads(result.stdout)] == ["sip:bob@192.0.2.3"]


@pytest.mark.parametrize(
    "args",
    [
        ["--db", "postgresql+psycopg://postgres@127.0.0.1:1/none", "bindings", "list"],
        ["--data-dir", "/nonexistent/p2psip", "bindings", "list"],
        ["--db", "nosuchdialect://x", "db", "upgrade"],
        ["--config", "/nonexistent/gateway.ini", "bindings", "list"],
    ],
    ids=["unreachable", "missing-sqlite", "bad-url", "missing-config"],
)
def test_user_errors_exit_2_with_one_line_and_no_traceback(args: list[str]) -> None:
    result = admin(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("p2psip-admin: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_command_is_a_usage_error() -> None:
    result = admin()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def _admin_in(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "gateway.app.admin", "--data-dir", str(data_dir),
                           *args], cwd=REPO, env=env, input=stdin, capture_output=True,
                          text=True, timeout=120)


def _users_table(data_dir: Path) -> list[tuple[str, ...]]:
    import sqlite3

    with sqlite3.connect(data_dir / "registry.sqlite3") as db:
        return db.execute("SELECT username, realm, aor, ha1_md5, ha1_sha256 FROM users "
                          "ORDER BY aor").fetchall()


def test_users_add_stores_only_hashes_and_list_never_shows_them(tmp_path: Path) -> None:
    data = tmp_path / "fresh"  # users add creates the registry on a fresh install
    added = _admin_in(data, "users", "add", "sip:Alice@Example.COM", "--password-stdin",
                      stdin="s3cret pass\n")
    assert added.returncode == 0, added.stderr
    ((username, realm, aor, md5, sha256),) = _users_table(data)
    assert (username, realm, aor) == ("Alice", "example.com", "sip:Alice@example.com")
    import hashlib

    assert md5 == hashlib.md5(b"Alice:example.com:s3cret pass").hexdigest()
    assert sha256 == hashlib.sha256(b"Alice:example.com:s3cret pass").hexdigest()
    listed = _admin_in(data, "users", "list", "--json")
    assert json.loads(listed.stdout) == [{"aor": "sip:Alice@example.com", "username": "Alice",
                                          "realm": "example.com",
                                          "algorithms": ["SHA-256", "MD5"]}]
    assert md5 not in listed.stdout and "s3cret" not in listed.stdout


def test_users_add_twice_passwd_and_remove(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert _admin_in(data, "users", "add", "sip:bob@example.com", "--realm", "voip",
                     stdin="one\n").returncode == 0
    again = _admin_in(data, "users", "add", "sip:bob@example.com", "--realm", "voip",
                      stdin="two\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    before = _users_table(data)
    changed = _admin_in(data, "users", "passwd", "sip:bob@example.com", stdin="two\n")
    assert changed.returncode == 0, changed.stderr
    after = _users_table(data)
    assert before[0][:3] == after[0][:3] == ("bob", "voip", "sip:bob@example.com")
    assert before[0][3:] != after[0][3:]
    assert _admin_in(data, "users", "passwd", "sip:nobody@example.com",
                     stdin="x\n").returncode == 1
    assert _admin_in(data, "users", "remove", "sip:bob@example.com").returncode == 0
    assert _users_table(data) == []
    assert _admin_in(data, "users", "remove", "sip:bob@example.com").returncode == 1


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["users", "add", "bob@example.com"], "pw\n", "not a SIP"),
    (["users", "add", "sip:example.com"], "pw\n", "address-of-record"),
    (["users", "add", "sip:bob@example.com"], "\n", "empty password"),
])
def test_users_add_rejects_bad_input_with_one_line(tmp_path: Path, args: list[str],
                                                   stdin: str, message: str) -> None:
    result = _admin_in(tmp_path / "d", *args, stdin=stdin)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_password_is_never_a_command_line_option(tmp_path: Path) -> None:
    result = _admin_in(tmp_path / "d", "users", "add", "sip:bob@example.com", "--password",
                       "visible-in-ps")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
