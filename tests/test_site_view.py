"""The site as one gateway sees it (gateway/registry/site.py): who holds a binding's
flow, who publishes an AoR, which flows died with their gateway."""

from __future__ import annotations

from gateway.registry.site import SiteView, route_value


def _gateway(ident: str, state: str = "up", uri: str = "") -> dict[str, object]:
    return {"id": ident, "name": ident, "uri": uri or f"sips:{ident}.example:5061",
            "started_at": 0.0, "heartbeat_at": 0.0, "state": state}


def test_a_binding_of_another_gateway_that_is_up_goes_through_it() -> None:
    view = SiteView("a", clock=lambda: 0.0)
    view.update([_gateway("a"), _gateway("b"), _gateway("c", "down")])
    assert view.holder_route("b") == "<sips:b.example:5061;lr>"
    assert view.holder_route("a") is None  # ours
    assert view.holder_route("") is None  # written by p2psip-admin
    assert view.holder_route("c") is None  # down: reached from here


def test_an_unknown_owner_asks_for_a_new_read_at_most_once_a_second() -> None:
    now = [0.0]
    asked = []
    view = SiteView("a", clock=lambda: now[0], refresh=lambda: asked.append(now[0]))
    view.update([_gateway("a")])
    for _ in range(5):
        assert view.holder_route("new") is None
    now[0] = 1.5
    view.holder_route("new")
    assert asked == [0.0, 1.5]


def test_each_aor_has_one_publisher_and_a_dead_gateways_aors_spread() -> None:
    views = {ident: SiteView(ident, clock=lambda: 0.0) for ident in "abc"}
    for view in views.values():
        view.update([_gateway("a"), _gateway("b"), _gateway("c")])
    aors = [f"sip:user{n}@example.com" for n in range(300)]
    # The owner of the newest binding publishes, whoever is asked.
    assert {view.publisher(aors[0], ["b", "a"]) for view in views.values()} == {"b"}
    # Owners all down (or none): every view picks the same gateway that is up.
    for view in views.values():
        view.update([_gateway("a"), _gateway("b"), _gateway("c", "down")])
    picked = [views["a"].publisher(aor, ["c"]) for aor in aors]
    assert picked == [views["b"].publisher(aor, ["c"]) for aor in aors]
    assert "c" not in picked
    assert 100 < picked.count("a") < 200  # spread over the survivors


def test_a_flow_is_lost_only_with_another_gateway_of_the_site() -> None:
    view = SiteView("a2", clock=lambda: 0.0)
    view.update([_gateway("a1", "stopped", uri="sips:a.example:5061"),
                 _gateway("a2", uri="sips:a.example:5061"),
                 _gateway("b", "down"), _gateway("c")])
    own = "sips:a.example:5061"
    assert view.flow_lost("b", own)  # died with its NAT bindings and connections
    assert not view.flow_lost("c", own)  # up: routed through it
    assert not view.flow_lost("a1", own)  # this gateway before a restart: same sockets
    assert not view.flow_lost("b", "")  # not a site: one gateway's rules
    assert not view.flow_lost("gone", own)  # unknown: nothing to say


def test_route_values_are_loose() -> None:
    assert route_value("sips:gw.example:5061") == "<sips:gw.example:5061;lr>"
    assert route_value("<sip:gw.example;transport=tls;lr>") == (
        "<sip:gw.example;transport=tls;lr>")
