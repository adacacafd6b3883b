"""Overload control (gateway/sip/overload.py): the admission rule on its own, the 503
built from a datagram's bytes, and a real gateway offered more REGISTERs than it can
serve (it sheds new requests, loses none it answered 200, and recovers at once)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gateway.sip.message import Response
from gateway.sip.overload import (
    OverloadGuard,
    OverloadSettings,
    acknowledges_shed,
    new_request_headers,
    unavailable_response,
)
from gateway.sip.parser import parse_message

try:
    from tests.gateway_proc import HOST, GatewayProcess
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from gateway_proc import HOST, GatewayProcess


def register(user: str, port: int, *, compact: bool = False, to_tag: str = "",
             method: str = "REGISTER") -> bytes:
    """A REGISTER (or ``method``) of ``user`` from 127.0.0.1:``port``."""
    names = (("v", "f", "t", "i") if compact else ("Via", "From", "To", "Call-ID"))
    tag = f";tag={to_tag}" if to_tag else ""
    lines = [
        f"{method} sip:{HOST} SIP/2.0",
        f"{names[0]}: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        f"{names[0]}: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKsecond",
        "Max-Forwards: 70",
        f"{names[1]}: <sip:{user}@{HOST}>;tag={uuid.uuid4().hex[:8]}",
        f"{names[2]}: <sip:{user}@{HOST}>{tag}",
        f"{names[3]}: {uuid.uuid4().hex}@{HOST}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:{user}@{HOST}:{port}>",
        "Expires: 3600",
        "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


# --- the admission rule ----------------------------------------------------------------


def feed(guard: OverloadGuard, start: float, seconds: float, waited: float,
         every: float = 0.001) -> float:
    """Datagrams every ``every`` s for ``seconds`` s, each having waited ``waited``."""
    now = start
    while now < start + seconds:
        guard.observe(waited, now)
        now += every
    return now


def test_a_standing_queue_lowers_admission_and_a_drained_one_raises_it_at_once() -> None:
    guard = OverloadGuard(OverloadSettings(target=0.03, interval=0.1, drop_delay=0.4))
    now = feed(guard, 0.0, 0.5, 0.001)
    assert guard.admitted_fraction == 1.0 and not guard.shedding
    now = feed(guard, now, 1.0, 0.1)  # a queue of 100 ms that does not drain
    assert guard.shedding and 0.02 <= guard.admitted_fraction < 0.2
    assert not guard.dropping
    admitted = sum(guard.admit() for _ in range(1000))
    assert abs(admitted - 1000 * guard.admitted_fraction) <= 1  # spread evenly
    now = feed(guard, now, 0.6, 0.001)  # drained: doubles every interval
    assert guard.admitted_fraction == 1.0 and not guard.shedding


def test_a_burst_that_drains_within_the_interval_sheds_nothing() -> None:
    guard = OverloadGuard(OverloadSettings(target=0.03, interval=0.1))
    now = feed(guard, 0.0, 0.3, 0.001)
    # 50 ms of datagrams that waited long (a burst read late), then the queue is empty.
    now = feed(guard, now, 0.05, 0.2)
    now = feed(guard, now, 0.3, 0.001)
    assert guard.admitted_fraction == 1.0


def test_a_very_long_queue_drops_new_requests_and_idleness_ends_it() -> None:
    guard = OverloadGuard(OverloadSettings(target=0.03, interval=0.1, drop_delay=0.4))
    now = feed(guard, 0.0, 0.5, 0.9)
    assert guard.dropping and not guard.admit()
    # Nothing arrives for a second, then one request that did not wait.
    guard.observe(0.0, now + 1.0)
    assert not guard.dropping and guard.admitted_fraction == 1.0 and guard.admit()


def test_off_when_the_target_is_zero() -> None:
    assert not OverloadGuard(OverloadSettings(target=0)).enabled


# --- the 503 built from bytes ----------------------------------------------------------


@pytest.mark.parametrize("compact", [False, True])
def test_the_stateless_503_is_a_valid_answer_to_the_request(compact: bool) -> None:
    data = register("alice", 5099, compact=compact)
    request = parse_message(data)
    lines = new_request_headers(data)
    assert lines is not None
    raw = unavailable_response(lines, 7)
    assert raw is not None
    response = parse_message(raw)
    assert isinstance(response, Response) and response.status == 503
    assert response.header("retry-after") == "7"
    assert [str(v) for v in response.vias] == [str(v) for v in request.vias]
    assert response.call_id == request.call_id and str(response.cseq) == str(request.cseq)
    assert response.from_.tag == request.from_.tag
    assert response.to.tag and response.to.uri == request.to.uri


@pytest.mark.parametrize("data", [
    register("bob", 5099, to_tag="abc"),  # inside a dialog
    register("bob", 5099, method="ACK"),
    register("bob", 5099, method="CANCEL"),
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKx\r\n\r\n",
    b"\x00\x01garbage",
])
def test_only_new_requests_may_be_shed(data: bytes) -> None:
    assert new_request_headers(data) is None


def test_the_ack_of_a_shed_invite_is_recognised() -> None:
    invite = register("dave", 5099, method="INVITE")
    lines = new_request_headers(invite)
    assert lines is not None
    raw = unavailable_response(lines, 5)
    assert raw is not None
    tag = parse_message(raw).to.tag
    assert acknowledges_shed(register("dave", 5099, method="ACK", to_tag=tag))
    assert not acknowledges_shed(register("dave", 5099, method="ACK", to_tag="abc123"))
    assert not acknowledges_shed(register("dave", 5099, method="BYE", to_tag=tag))


def test_a_request_that_needs_parsing_gets_no_stateless_503() -> None:
    folded = register("carol", 5099).replace(b"\r\nMax-Forwards: 70", b"\r\n Max-Forwards: 70")
    lines = new_request_headers(folded)
    assert lines is not None and unavailable_response(lines, 5) is None
    without_cseq = b"\r\n".join(line for line in register("carol", 5099).split(b"\r\n")
                                if not line.startswith(b"CSeq"))
    lines = new_request_headers(without_cseq)
    assert lines is not None and unavailable_response(lines, 5) is None


# --- a real gateway past its capacity --------------------------------------------------


def registered_bindings(data_dir: Path) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.app.admin", "--data-dir", str(data_dir),
         "bindings", "list", "--json"], capture_output=True, text=True, timeout=60,
        check=True)
    return json.loads(result.stdout)


def test_past_its_capacity_the_gateway_sheds_new_registrations_and_recovers(
        tmp_path: Path) -> None:
    """20 000 REGISTERs of new users offered as fast as one Python socket sends them
    (many times what a gateway on one core serves): some are answered 503 with
    Retry-After, every one answered 200 is in the registry, and once the flood ends a
    REGISTER is answered 200 at once."""
    gateway = GatewayProcess(tmp_path / "data", extra_args=(
        "--set", "limits.source_rate=0", "--set", "overlay.enabled=no",
        "--set", "limits.overload_delay=0.03", "--set", "limits.overload_drop_delay=60"))
    with gateway, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        sock.setblocking(False)
        answers: dict[str, int] = {}
        retry_after: set[str | None] = set()

        def read() -> None:
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    return
                response = parse_message(data)
                assert isinstance(response, Response)
                user = response.to.uri.user or ""
                answers[user] = response.status
                if response.status == 503:
                    retry_after.add(response.header("retry-after"))

        offered = 20_000
        for index in range(offered):
            sock.sendto(register(f"u{index}", port), gateway.udp_address)
            if index % 200 == 199:
                read()
        deadline = time.monotonic() + 30
        quiet_since, seen = time.monotonic(), 0
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
            read()  # until no answer came for a second: the backlog is served
            if len(answers) != seen:
                quiet_since, seen = time.monotonic(), len(answers)
            time.sleep(0.05)
        sock.setblocking(True)
        sock.settimeout(2.0)
        started = time.monotonic()
        sock.sendto(register("after", port), gateway.udp_address)
        while True:
            response = parse_message(sock.recv(65535))
            if isinstance(response, Response) and response.to.uri.user == "after":
                break
        recovered_in = time.monotonic() - started
        assert gateway.running(), gateway.log_tail()
    ok = {user for user, status in answers.items() if status == 200}
    shed = [user for user, status in answers.items() if status == 503]
    assert shed, f"nothing shed: {len(ok)} answered 200 of {offered}"
    assert retry_after == {"5"}
    assert len(ok) > offered // 10
    assert response.status == 200 and recovered_in < 0.5
    registered = {b["aor"].split(":", 1)[1].split("@", 1)[0] for b in registered_bindings(
        gateway.data_dir)}
    assert ok <= registered  # nothing answered 200 was lost
