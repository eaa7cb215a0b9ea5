"""Budget reservations on the request path: the router's worst-case cost, the reservation
taken before the upstream call and settled whatever happens, and refusals after
authentication counted against the key's requests-per-minute (runtime/router.py,
runtime/chat.py over an in-process LocalLimiter)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest

from runtime.adapters import Usage
from runtime.config import Budget, Price, PriceTier
from runtime.limits import LocalLimiter
from tests.unit.scripted import (
    TOKEN,
    Fail,
    Gateway,
    Reply,
    ScriptedAdapter,
    Stall,
    Step,
    Stream,
    chat,
    config,
    gateway,
    model,
    post,
    provider,
    route,
)

# Output at $1,000 per 1M tokens and free input: a request's worst case is $0.001 per token of
# its output limit, whatever its prompt.
A = provider("a", model("one", price=(0.0, 1000.0), max_output=50))
B = provider("b", model("two", price=(0.0, 2000.0), max_output=20, window=1000))


def make(script: dict[str, dict[str, list[Step]]], **options: Any) -> Gateway:
    cfg = config([A, B], [route("r", [("a", "one"), ("b", "two")])], **options)
    return gateway(cfg, {p.id: ScriptedAdapter(p, script.get(p.id, {})) for p in (A, B)})


def limiter(gw: Gateway) -> LocalLimiter:
    lim = gw.services.limits
    assert isinstance(lim, LocalLimiter)
    return lim


def plan_worst(gw: Gateway, body: dict[str, Any]) -> float | None:
    return gw.services.router.plan(body, gw.services.config.orgs["acme"]).worst_cost_usd


# --- the worst case ---------------------------------------------------------------------------


def test_the_worst_case_is_the_costliest_candidate_at_its_output_limit() -> None:
    gw = make({})
    # max_tokens 10: a $0.01, b $0.02.
    assert plan_worst(gw, chat("r", max_tokens=10)) == pytest.approx(0.02)
    # No max_tokens: each model's own output limit (a: 50 -> $0.05, b: 20 -> $0.04).
    assert plan_worst(gw, chat("r")) == pytest.approx(0.05)


def test_without_max_tokens_the_window_left_after_the_prompt_caps_the_output() -> None:
    small = provider("a", model("one", price=(0.0, 1000.0), window=1000, max_output=None))
    cfg = config([small], [route("r", [("a", "one")])])
    gw = gateway(cfg, {"a": ScriptedAdapter(small, {})})
    body = chat("r", "word " * 400)
    prompt = gw.services.router.plan(body, cfg.orgs["acme"]).prompt_tokens
    assert 0 < prompt < 1000
    assert plan_worst(gw, body) == pytest.approx((1000 - prompt) * 0.001)


def test_the_worst_case_uses_the_price_tier_of_the_prompt() -> None:
    tiered = Price(1.0, 1.0, tiers=(PriceTier(100, 10.0, 100.0),))
    big = provider("a", replace(model("one", max_output=10), price=tiered))
    cfg = config([big], [route("r", [("a", "one")])])
    gw = gateway(cfg, {"a": ScriptedAdapter(big, {})})
    short, long = chat("r", "hi"), chat("r", "word " * 400)
    p_short = gw.services.router.plan(short, cfg.orgs["acme"]).prompt_tokens
    p_long = gw.services.router.plan(long, cfg.orgs["acme"]).prompt_tokens
    assert p_short <= 100 < p_long
    assert plan_worst(gw, short) == pytest.approx((p_short * 1.0 + 10 * 1.0) / 1e6)
    assert plan_worst(gw, long) == pytest.approx((p_long * 10.0 + 10 * 100.0) / 1e6)


def test_unpriced_candidates_reserve_nothing() -> None:
    free = provider("a", model("one", price=None))
    priced = provider("b", model("two", price=(0.0, 1000.0), max_output=5))
    cfg = config(
        [free, priced], [route("r", [("a", "one"), ("b", "two")]), route("u", [("a", "one")])]
    )
    gw = gateway(cfg, {p.id: ScriptedAdapter(p, {}) for p in (free, priced)})
    assert plan_worst(gw, chat("r")) == pytest.approx(0.005)  # the priced one's
    assert plan_worst(gw, chat("u")) is None


# --- reserve before, settle after -------------------------------------------------------------


def test_a_request_in_flight_holds_its_worst_case_and_settles_to_its_real_cost() -> None:
    # Room for one worst case ($0.01 at max_tokens 10 on a, b not reached).
    gw = make(
        {"a": {"one": [Stream(("x", Stall(0.3), "y"), Usage(5, 2)), Reply("z", Usage(5, 2))]}},
        key_budget=Budget(0.01, None),
    )
    body = chat("r", max_tokens=5)  # a: $0.005, b: $0.01

    async def two_at_once() -> tuple[int, int]:
        first = asyncio.create_task(post(gw.handler, {**body, "stream": True}))
        await asyncio.sleep(0.1)  # the first is streaming, its $0.01 held
        second = await post(gw.handler, body)
        return (await first).status, second.status

    assert asyncio.run(two_at_once()) == (200, 429)
    refusal = gw.sink.records[0]
    assert (refusal.status, refusal.error_code, refusal.attempts) == (429, "budget_exceeded", [])
    # Settled to its real cost, 2 output tokens ($0.002): the next fits the $0.008 left.
    assert limiter(gw).used_nano("k1", "acme")[0] == 2_000_000
    assert asyncio.run(post(gw.handler, chat("r", max_tokens=4))).status == 200
    assert "switchyard_budget_reservations 0" in limiter(gw).render_metrics()


def test_a_failed_request_settles_to_what_its_attempts_cost() -> None:
    gw = make(
        {"a": {"one": [Fail("server_error", "down", 500)]}, "b": {"two": [Fail("timeout")]}},
        key_budget=Budget(1.0, None),
    )
    resp = asyncio.run(post(gw.handler, chat("r", max_tokens=10)))
    assert resp.status >= 500
    [rec] = gw.sink.records
    assert limiter(gw).used_nano("k1", "acme")[0] == round((rec.cost_usd or 0.0) * 1e9)
    assert "switchyard_budget_reservations 0" in limiter(gw).render_metrics()


def test_a_client_that_leaves_mid_stream_still_settles() -> None:
    gw = make(
        {"a": {"one": [Stream(("x", Stall(30.0), "y"), Usage(5, 2))]}},
        key_budget=Budget(1.0, None),
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", b"Bearer " + TOKEN.encode())],
    }
    body = orjson.dumps(chat("r", max_tokens=10, stream=True))
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(0.1)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(asyncio.wait_for(gw.handler(scope, receive, send), 5))
    [rec] = gw.sink.records
    assert rec.status == 499
    assert "switchyard_budget_reservations 0" in limiter(gw).render_metrics()
    assert limiter(gw).used_nano("k1", "acme")[0] == round((rec.cost_usd or 0.0) * 1e9)


# --- refusals after authentication count against requests-per-minute --------------------------


async def post_raw(gw: Gateway, body: bytes, token: str = TOKEN) -> tuple[int, Any]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", b"Bearer " + token.encode())],
    }
    sent: list[dict[str, Any]] = []
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gw.handler(scope, receive, send)
    return sent[0]["status"], orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_flood_of_bad_requests_uses_up_the_key_s_requests_per_minute() -> None:
    gw = make({"a": {"one": [Reply()]}}, rpm=3)
    bad = [
        b"{not json",
        orjson.dumps(chat("no-such-route")),
        orjson.dumps({"model": "r", "messages": []}),
    ]
    statuses = [asyncio.run(post_raw(gw, b))[0] for b in bad]
    assert statuses == [400, 404, 400]
    status, body = asyncio.run(post_raw(gw, orjson.dumps(chat("r"))))
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    # A fourth bad one is answered the 429 too, and recorded as such.
    status, body = asyncio.run(post_raw(gw, b"{not json"))
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    assert [(r.status, r.error_code) for r in gw.sink.records] == [
        (400, "invalid_json"),
        (404, "model_not_found"),
        (400, "invalid_request"),
        (429, "rate_limit_exceeded"),
        (429, "rate_limit_exceeded"),
    ]


def test_requests_without_a_valid_key_do_not_use_a_key_s_limit() -> None:
    gw = make({"a": {"one": [Reply()]}}, rpm=1)
    for _ in range(3):
        assert asyncio.run(post(gw.handler, chat("r"), token="sy_test_wrong")).status == 401
    assert asyncio.run(post(gw.handler, chat("r"))).status == 200
