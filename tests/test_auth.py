"""Digest authentication against the in-process gateway over real UDP sockets.

Sources in 127.0.0.9/32 are trusted; every other loopback address must authenticate.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from conftest import ports, start_gateway
from digest_client import authorization, parse_challenge
from sip_ua import UA, ack_for, in_dialog
from twisted.internet.threads import deferToThread

from gateway.app.secret import load_secret
from gateway.app.service import GatewayService
from gateway.registry.store import LocationStore
from gateway.registry.users import UserStore
from gateway.sip.digest import NonceFactory
from gateway.sip.message import Request, Response

REALM = "127.0.0.1"
TRUSTED = "127.0.0.9"


def _registry(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{data_dir / 'registry.sqlite3'}"
    store = LocationStore(url)
    store.upgrade_schema()
    store.close()
    return url


@pytest_twisted.async_yield_fixture
async def guarded(tmp_path: Path) -> AsyncIterator[GatewayService]:
    """A gateway that trusts only 127.0.0.9, with users alice and bob."""
    url = _registry(tmp_path / "data")
    users = UserStore(url)
    users.add("sip:alice@127.0.0.1", "alice", REALM, "alice-pw")
    users.add("sip:bob@127.0.0.1", "bob", REALM, "bob-pw")
    users.close()
    service = await start_gateway(tmp_path / "data", **{
        "auth.trusted_networks": f"{TRUSTED}/32", "auth.max_failures": "3",
        "auth.lockout": "60"})
    yield service
    await service.stopService()


def _challenges(response: Response, header: str = "www-authenticate") -> list[dict[str, str]]:
    return [parse_challenge(v) for v in response.header_values(header)]


#: linphonec 5.1's User-Agent: a client offered every algorithm (auth.multi_challenge_clients).
LINPHONE = "Linphonec/5.1.65"
BARESIP = "baresip v1.0.0 (x86_64/linux)"


def _register(ua: UA, *, call_id: str, cseq: int, auth: str | None = None,
              to: str | None = None, user_agent: str | None = LINPHONE) -> Response:
    extra = [("Contact", f"<{ua.contact}>"), ("Expires", "600")]
    if user_agent is not None:
        extra.append(("User-Agent", user_agent))
    if auth is not None:
        extra.append(("Authorization", auth))
    ua.send(ua.request("REGISTER", "sip:127.0.0.1", to=to or ua.uri, call_id=call_id,
                       cseq=cseq, extra=extra))
    return ua.expect(200, 401, 403)


def login(ua: UA, password: str, algorithm: str = "SHA-256", username: str | None = None,
          to: str | None = None) -> Response:
    """REGISTER, answer the challenge of ``algorithm``, return the final response."""
    call_id = f"reg-{ua.user}-{time.monotonic_ns()}"
    first = _register(ua, call_id=call_id, cseq=1, to=to)
    assert first.status == 401, first
    challenge = next(c for c in _challenges(first) if c["algorithm"] == algorithm)
    header = authorization(challenge, method="REGISTER", uri="sip:127.0.0.1",
                           username=username or ua.user, password=password)
    return _register(ua, call_id=call_id, cseq=2, auth=header, to=to)


async def _run(work):  # noqa: ANN001, ANN202 - a blocking test body in a thread
    return await deferToThread(work)


@pytest_twisted.ensureDeferred
async def test_register_is_challenged_with_sha256_first_then_md5(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> Response:
        ua = UA("alice", port)
        try:
            return _register(ua, call_id="c1", cseq=1)
        finally:
            ua.close()

    response = await _run(run)
    assert response.status == 401 and response.to.tag
    challenges = _challenges(response)
    assert [c["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
    for challenge in challenges:
        assert challenge["realm"] == REALM and challenge["qop"] == "auth"
        assert challenge["nonce"] and challenge["opaque"] and "stale" not in challenge


@pytest.mark.parametrize("user_agent", [BARESIP, None])
@pytest_twisted.ensureDeferred
async def test_other_clients_get_one_md5_challenge_and_register_with_it(
        guarded, user_agent: str | None) -> None:
    """On the defaults, a client not known to choose among challenges (baresip, or one
    that does not say) is challenged like Asterisk or Kamailio would: MD5 alone."""
    port = ports(guarded)["udp"]

    def run() -> tuple[Response, Response]:
        ua = UA("alice", port)
        try:
            first = _register(ua, call_id="md5", cseq=1, user_agent=user_agent)
            header = authorization(_challenges(first)[0], method="REGISTER",
                                   uri="sip:127.0.0.1", username="alice",
                                   password="alice-pw")
            return first, _register(ua, call_id="md5", cseq=2, auth=header,
                                    user_agent=user_agent)
        finally:
            ua.close()

    challenged, registered = await _run(run)
    assert [c["algorithm"] for c in _challenges(challenged)] == ["MD5"]
    assert registered.status == 200


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest_twisted.ensureDeferred
async def test_correct_password_registers_with_either_algorithm(guarded, algorithm) -> None:
    port = ports(guarded)["udp"]

    def run() -> Response:
        ua = UA("alice", port)
        try:
            return login(ua, "alice-pw", algorithm)
        finally:
            ua.close()

    response = await _run(run)
    assert response.status == 200
    assert [b.contact for b in guarded.location.lookup("sip:alice@127.0.0.1")]


@pytest_twisted.ensureDeferred
async def test_unknown_user_is_answered_exactly_like_a_wrong_password(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> tuple[Response, Response]:
        known, unknown = UA("alice", port), UA("mallory", port)
        try:
            return login(known, "wrong"), login(unknown, "wrong")
        finally:
            known.close()
            unknown.close()

    wrong_password, unknown_user = await _run(run)

    def shape(response: Response) -> tuple[object, ...]:
        names = [name for key, name, _ in response.headers if key not in ("to", "from",
                                                                          "call-id", "via")]
        params = [{k: v for k, v in c.items() if k != "nonce"} for c in _challenges(response)]
        return response.status, response.reason, names, params

    assert wrong_password.status == 401
    assert shape(wrong_password) == shape(unknown_user)
    assert not guarded.location.lookup("sip:alice@127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_expired_nonce_gets_a_fresh_challenge_marked_stale(guarded, tmp_path) -> None:
    port = ports(guarded)["udp"]
    # A genuine nonce issued 1000 s ago (the lifetime is 300 s): made with the gateway's
    # own secret, as the gateway itself would have made it then.
    old_nonce = NonceFactory(load_secret(str(tmp_path / "data")), 300).issue(
        REALM, time.time() - 1000)

    def run() -> Response:
        ua = UA("alice", port)
        try:
            first = _register(ua, call_id="s1", cseq=1)
            challenge = dict(_challenges(first)[0], nonce=old_nonce)
            header = authorization(challenge, method="REGISTER", uri="sip:127.0.0.1",
                                   username="alice", password="alice-pw")
            return _register(ua, call_id="s1", cseq=2, auth=header)
        finally:
            ua.close()

    response = await _run(run)
    assert response.status == 401
    assert all(c.get("stale") == "true" for c in _challenges(response))
    assert not guarded.location.lookup("sip:alice@127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_replayed_nonce_count_is_refused_and_the_next_count_works(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> list[Response]:
        ua = UA("alice", port)
        try:
            first = _register(ua, call_id="r1", cseq=1)
            challenge = _challenges(first)[0]
            once = authorization(challenge, method="REGISTER", uri="sip:127.0.0.1",
                                 username="alice", password="alice-pw", cnonce="c0ffee")
            ok = _register(ua, call_id="r1", cseq=2, auth=once)
            replay = _register(ua, call_id="r1", cseq=3, auth=once)  # same nc and cnonce
            second = authorization(challenge, method="REGISTER", uri="sip:127.0.0.1",
                                   username="alice", password="alice-pw", nc=2)
            return [ok, replay, _register(ua, call_id="r1", cseq=4, auth=second)]
        finally:
            ua.close()

    ok, replay, second = await _run(run)
    assert ok.status == 200
    assert replay.status == 401 and _challenges(replay)[0].get("stale") == "true"
    assert second.status == 200


@pytest_twisted.ensureDeferred
async def test_credentials_cannot_register_someone_elses_aor(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> Response:
        ua = UA("alice", port)
        try:
            return login(ua, "alice-pw", to="sip:bob@127.0.0.1")
        finally:
            ua.close()

    response = await _run(run)
    assert response.status == 403
    assert not guarded.location.lookup("sip:bob@127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_repeated_failures_lock_out_that_source_and_user_only(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> tuple[list[int], int, int]:
        attacker, other = UA("alice", port), UA("alice", port, local_host="127.0.0.2")
        try:
            statuses = [login(attacker, f"guess{n}").status for n in range(3)]
            locked = login(attacker, "alice-pw").status  # right password, still locked
            return statuses, locked, login(other, "alice-pw").status
        finally:
            attacker.close()
            other.close()

    statuses, locked, other = await _run(run)
    assert statuses == [401, 401, 403]
    assert locked == 403
    assert other == 200


@pytest_twisted.ensureDeferred
async def test_trusted_source_registers_without_credentials(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> Response:
        ua = UA("carol", port, local_host=TRUSTED)
        try:
            return ua.register()
        finally:
            ua.close()

    assert (await _run(run)).status == 200


@pytest_twisted.ensureDeferred
async def test_proxy_credentials_never_reach_the_callee_in_dialog_either(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> dict[str, object]:
        alice, bob = UA("alice", port), UA("bob", port, local_host=TRUSTED)
        seen: dict[str, object] = {}
        try:
            assert bob.register().status == 200
            invite = alice.request("INVITE", bob.uri, call_id="call-1")
            alice.send(invite)
            challenged = alice.expect(407)
            alice.send(ack_for(invite, challenged))
            seen["challenge"] = challenged
            challenge = _challenges(challenged, "proxy-authenticate")[0]
            header = authorization(challenge, method="INVITE", uri=bob.uri,
                                   username="alice", password="alice-pw")
            invite = alice.request("INVITE", bob.uri, call_id="call-1", cseq=2,
                                   from_tag=invite.from_.tag,
                                   extra=[("Proxy-Authorization", header)])
            alice.send(invite)
            incoming = bob.expect_request("INVITE")
            seen["incoming"] = incoming
            bob.answer(incoming, 200)
            ok = alice.expect(200)
            # In-dialog requests along the Record-Route need no credentials; linphone
            # sends them anyway (ours, and here one for another realm too).
            foreign = ('Digest username="alice", realm="far.example", nonce="n", '
                       'uri="sip:x", response="r"')
            for method, cseq in (("ACK", 2), ("BYE", 3)):
                dialog_request = in_dialog(alice, method, ok, invite, cseq)
                dialog_request.add_header("Proxy-Authorization", header)
                dialog_request.add_header("Proxy-Authorization", foreign)
                alice.send(dialog_request)
                seen[method] = bob.expect_request(method)
            bob.answer(seen["BYE"], 200, record_route=False)
            seen["bye_ok"] = alice.expect(200, method="BYE")
            return seen
        finally:
            alice.close()
            bob.close()

    seen = await _run(run)
    challenge = seen["challenge"]
    assert isinstance(challenge, Response)
    # The UA says no User-Agent: one MD5 challenge.
    assert [c["algorithm"] for c in _challenges(challenge, "proxy-authenticate")] == ["MD5"]
    incoming = seen["incoming"]
    assert isinstance(incoming, Request)
    assert incoming.header("proxy-authorization") is None
    for method in ("ACK", "BYE"):  # ours removed, the other realm's passed on
        values = seen[method].header_values("proxy-authorization")
        assert len(values) == 1 and 'realm="far.example"' in values[0], values


@pytest_twisted.ensureDeferred
async def test_other_domains_may_call_local_users_but_not_relay(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> tuple[Request, Response]:
        carol, bob = UA("carol", port), UA("bob", port, local_host=TRUSTED)
        try:
            assert bob.register().status == 200

            def from_elsewhere(uri: str, call_id: str) -> Request:
                request = carol.request("MESSAGE", uri, call_id=call_id)
                request.set_header("From", "<sip:carol@example.com>;tag=c1")
                return request

            carol.send(from_elsewhere(bob.uri, "in-1"))
            delivered = bob.expect_request("MESSAGE")
            bob.answer(delivered, 200, record_route=False)
            carol.expect(200)
            carol.send(from_elsewhere("sip:dave@192.0.2.5", "relay-1"))
            return delivered, carol.expect(403)
        finally:
            carol.close()
            bob.close()

    delivered, refused = await _run(run)
    assert delivered.call_id == "in-1"
    assert "relaying" in refused.reason


@pytest_twisted.ensureDeferred
async def test_options_ping_to_the_gateway_is_answered_without_a_challenge(guarded) -> None:
    port = ports(guarded)["udp"]

    def run() -> Response:
        ua = UA("alice", port)
        try:
            ua.send(ua.request("OPTIONS", f"sip:127.0.0.1:{port}"))
            return ua.expect(200, 401, 407)
        finally:
            ua.close()

    assert (await _run(run)).status == 200


@pytest_twisted.ensureDeferred
async def test_a_user_added_while_running_can_register_soon_after(guarded, tmp_path) -> None:
    port = ports(guarded)["udp"]
    users = UserStore(f"sqlite:///{tmp_path / 'data' / 'registry.sqlite3'}")
    users.add("sip:erin@127.0.0.1", "erin", REALM, "erin-pw")
    users.close()

    def run() -> int:
        ua = UA("erin", port)
        try:
            deadline = time.monotonic() + 5  # sync_interval is 0.5 s in tests
            while True:
                status = login(ua, "erin-pw").status
                if status == 200 or time.monotonic() > deadline:
                    return status
                time.sleep(0.3)
        finally:
            ua.close()

    assert await _run(run) == 200
