"""The router in process: strategies, what a request needs, and why candidates are skipped."""

from __future__ import annotations

import pytest

from runtime.config import OrgConfig
from runtime.errors import GatewayError
from runtime.router import Router
from tests.unit.scripted import ScriptedAdapter, chat, config, model, provider, route, router

A = provider("a", model("big", price=(3.0, 15.0)), model("small", window=8_000, price=(0.1, 0.4)))
B = provider(
    "b",
    model("mid", price=(1.0, 2.0), caps=("streaming",)),
    model("free", price=None),
    model("short", max_output=100),
)
ORG = config([A, B], []).orgs["acme"]


def make(*routes_: object, seed: int = 0, without_credentials: tuple[str, ...] = ()) -> Router:
    cfg = config([A, B], list(routes_))  # type: ignore[arg-type]
    adapters = {p.id: ScriptedAdapter(p, {}) for p in (A, B)}
    return router(cfg, adapters, seed=seed, without_credentials=without_credentials)


def refs(r: Router, body: dict[str, object]) -> list[str]:
    return [c.ref for c in r.plan(body, ORG).candidates]


def test_priority_keeps_the_configured_order() -> None:
    r = make(route("r", [("b", "mid"), ("a", "big"), ("a", "small")]))
    assert refs(r, chat("r")) == ["b/mid", "a/big", "a/small"]


def test_cheapest_orders_by_estimated_cost_and_puts_unpriced_last() -> None:
    r = make(
        route("r", [("b", "free"), ("a", "big"), ("b", "mid"), ("a", "small")], strategy="cheapest")
    )
    assert refs(r, chat("r")) == ["a/small", "b/mid", "a/big", "b/free"]


def test_weighted_picks_the_first_candidate_from_the_seeded_random_source() -> None:
    weighted = route(
        "r", [("a", "big", 1.0), ("b", "mid", 3.0), ("a", "small", 0)], strategy="weighted"
    )
    r = make(weighted, seed=7)
    plans = [refs(r, chat("r")) for _ in range(8)]
    # random.Random(7).choices(range(3), weights=[1, 3, 0]) gives 1, 0, 1, 0, 1, 1, 0, 1.
    big, mid = "a/big", "b/mid"
    assert [p[0] for p in plans] == [mid, big, mid, big, mid, mid, big, mid]
    # The others keep their configured order behind the pick.
    assert plans[0] == ["b/mid", "a/big", "a/small"]
    assert plans[1] == ["a/big", "b/mid", "a/small"]


def test_a_zero_weight_is_never_picked_first() -> None:
    weighted = route("r", [("a", "big", 0.0), ("b", "mid", 1.0)], strategy="weighted")
    r = make(weighted, seed=1)
    assert {refs(r, chat("r"))[0] for _ in range(50)} == {"b/mid"}


def test_the_same_seed_gives_the_same_picks() -> None:
    weighted = route("r", [("a", "big", 1.0), ("b", "mid", 1.0)], strategy="weighted")
    one, two = make(weighted, seed=3), make(weighted, seed=3)
    assert [refs(one, chat("r")) for _ in range(20)] == [refs(two, chat("r")) for _ in range(20)]


def test_a_request_needing_tools_skips_a_model_without_them() -> None:
    r = make(route("r", [("b", "mid"), ("a", "big")]))
    plan = r.plan(chat("r", tools=[{"type": "function", "function": {"name": "f"}}]), ORG)
    assert [c.ref for c in plan.candidates] == ["a/big"]
    assert plan.skipped == [
        {"provider": "b", "model": "mid", "reason": "lacks tools (needed by this request)"}
    ]


def test_context_window_and_output_limit_filter_candidates() -> None:
    r = make(route("r", [("a", "small"), ("b", "short"), ("a", "big")]))
    plan = r.plan(chat("r", max_tokens=9_000), ORG)
    assert [c.ref for c in plan.candidates] == ["a/big"]
    assert [s["reason"] for s in plan.skipped] == [
        f"estimated {plan.prompt_tokens} prompt tokens + 9000 output exceed its context window"
        " of 8000",
        "max_tokens 9000 is over the model's output limit of 100",
    ]


def test_no_candidate_left_is_400_when_the_request_caused_it() -> None:
    r = make(route("r", [("a", "small")]))
    with pytest.raises(GatewayError) as info:
        r.plan(chat("r", max_tokens=9_000), ORG)
    assert (info.value.status, info.value.code) == (400, "no_candidate")


def test_no_candidate_left_is_503_when_credentials_are_missing() -> None:
    r = make(route("r", [("a", "big"), ("b", "mid")]), without_credentials=("a", "b"))
    with pytest.raises(GatewayError) as info:
        r.plan(chat("r"), ORG)
    assert (info.value.status, info.value.code) == (503, "no_candidate")
    assert "a/big: credentials not set (A_KEY)" in info.value.message


def test_a_request_problem_is_400_even_when_other_candidates_lack_credentials() -> None:
    # The dev gateway's `chat`: a provider without a key first, then one that has it but
    # cannot give 100,000,000 output tokens. Retrying cannot help, so 400, every skip named.
    r = make(route("r", [("a", "big"), ("b", "short")]), without_credentials=("a",))
    with pytest.raises(GatewayError) as info:
        r.plan(chat("r", max_tokens=100_000_000), ORG)
    assert (info.value.status, info.value.code) == (400, "no_candidate")
    assert info.value.message == (
        "no candidate of 'r' can serve this request (a/big: credentials not set (A_KEY);"
        " b/short: max_tokens 100000000 is over the model's output limit of 100)"
    )


def test_a_lacking_capability_beside_missing_credentials_is_400_too() -> None:
    r = make(route("r", [("b", "mid"), ("a", "big")]), without_credentials=("a",))
    with pytest.raises(GatewayError) as info:
        r.plan(chat("r", tools=[{"type": "function", "function": {"name": "f"}}]), ORG)
    assert info.value.status == 400
    assert "b/mid: lacks tools (needed by this request)" in info.value.message


def test_a_cost_cap_skips_candidates_estimated_over_it_and_unpriced_ones() -> None:
    r = make(route("r", [("a", "big"), ("b", "free"), ("a", "small")], cap=0.001))
    plan = r.plan(chat("r"), ORG)
    assert [c.ref for c in plan.candidates] == ["a/small"]
    assert [s["reason"] for s in plan.skipped] == [
        "estimated cost $0.0150 is over the route's cap of $0.001",
        "unpriced model under a per-request cost cap",
    ]


def test_an_unknown_model_is_404() -> None:
    with pytest.raises(GatewayError) as info:
        make(route("r", [("a", "big")])).plan(chat("nope"), ORG)
    assert (info.value.status, info.value.code) == (404, "model_not_found")


class _OwnKeys:
    """A BYOK cache holding the org's own credentials for the providers given."""

    def __init__(self, org: str, *providers: str) -> None:
        self._held = {(org, p) for p in providers}

    def credentials(self, org: str, provider: str) -> dict[str, str] | None:
        return {"api_key": "own"} if (org, provider) in self._held else None


def test_model_ids_list_only_what_has_credentials_now() -> None:
    r = make(
        route("a-only", [("a", "big")]),
        route("mixed", [("a", "big"), ("b", "mid")]),
        route("b-only", [("b", "short")]),
        without_credentials=("a",),
    )
    assert r.model_ids(ORG) == ["mixed", "b-only", "b/mid", "b/free", "b/short"]
    # A route with no candidate left is still a route: a request gets the 503 naming the key.
    with pytest.raises(GatewayError) as info:
        r.plan(chat("a-only"), ORG)
    assert info.value.status == 503


def test_model_ids_count_the_orgs_own_byok_credentials() -> None:
    cfg = config([A, B], [route("a-only", [("a", "big")])])
    adapters = {p.id: ScriptedAdapter(p, {}) for p in (A, B)}
    creds: dict[str, dict[str, str] | None] = {"a": None, "b": None}
    byok_org = OrgConfig("own", None, None, frozenset({"a"}), "OWN_BYOK_KEY")
    other = OrgConfig("other", None, None, frozenset({"a"}), "OTHER_BYOK_KEY")
    r = Router(cfg, dict(adapters), creds, byok=_OwnKeys("own", "a"))  # type: ignore[arg-type]
    assert r.model_ids(byok_org) == ["a-only", "a/big", "a/small"]
    assert r.model_ids(other) == []


def test_model_ids_keep_an_orgs_route_allow_list() -> None:
    r = make(route("r1", [("b", "mid")]), route("r2", [("b", "mid")]))
    limited = OrgConfig("acme", frozenset({"r2"}), None, frozenset(), None)
    assert r.model_ids(limited) == ["r2", "a/big", "a/small", "b/mid", "b/free", "b/short"]
