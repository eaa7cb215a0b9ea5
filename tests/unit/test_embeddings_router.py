"""`Router.plan_embeddings`: the same org/route/explicit-model rules as chat, the embeddings
skip reasons, the estimate and worst cost; and the kind check both ways (a chat route on
/v1/embeddings, an embeddings route or model on a chat endpoint)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runtime.config import ModelConfig, OrgConfig, RouteConfig
from runtime.errors import GatewayError
from runtime.router import Router
from tests.unit.scripted import ScriptedAdapter, config, model, provider, route, router

ACME = OrgConfig("acme", None, None, frozenset(), None)


def emb(name: str, dims: int, window: int = 8192, price: float = 0.02) -> ModelConfig:
    return dataclasses.replace(
        model(name, window=window, caps=["embeddings"], price=(price, 0.0)), dimensions=dims
    )


A = provider("a", emb("big", 3072, price=0.13), model("chatty"))
B = provider("b", emb("small", 1536, window=2048))
C = provider("c", emb("tiny", 256))


def emb_route(name: str, cands: list[tuple[str, str]], **kw: Any) -> RouteConfig:
    return dataclasses.replace(route(name, cands, **kw), kind="embeddings")


ROUTES = [
    emb_route("vectors", [("a", "big"), ("b", "small"), ("c", "tiny")]),
    emb_route("capped", [("a", "big"), ("b", "small")], cap=0.000001),
    route("chat", [("a", "chatty")]),
]


def make(without: tuple[str, ...] = ()) -> Router:
    cfg = config([A, B, C], ROUTES)
    adapters = {p.id: ScriptedAdapter(p, {}) for p in (A, B, C)}
    return router(cfg, adapters, without_credentials=without)


def req(model_name: str, inputs: list[Any], **extra: Any) -> dict[str, Any]:
    return {"model": model_name, "input": inputs, **extra}


def refs(plan: Any) -> list[str]:
    return [c.ref for c in plan.candidates]


def test_plan_keeps_route_order_and_estimates_every_input() -> None:
    plan = make().plan_embeddings(req("vectors", ["abcdefgh", "abcd", [1, 2, 3]]), ACME)
    assert refs(plan) == ["a/big", "b/small", "c/tiny"]
    assert (plan.route, plan.prompt_tokens, plan.max_tokens, plan.skipped) == (
        "vectors",
        2 + 1 + 3,
        None,
        [],
    )
    assert plan.worst_cost_usd == pytest.approx(6 * 0.13 / 1_000_000)


def test_dimensions_over_a_models_size_skip_it() -> None:
    plan = make().plan_embeddings(req("vectors", ["x"], dimensions=2000), ACME)
    assert refs(plan) == ["a/big"]
    assert plan.skipped == [
        {"provider": "b", "model": "small", "reason": "dimensions 2000 is over the model's 1536"},
        {"provider": "c", "model": "tiny", "reason": "dimensions 2000 is over the model's 256"},
    ]


def test_an_input_longer_than_a_window_skips_it() -> None:
    plan = make().plan_embeddings(req("vectors", ["short", "x" * 4 * 3000]), ACME)
    assert refs(plan) == ["a/big", "c/tiny"]
    assert plan.skipped[0]["reason"] == (
        "an input of an estimated 3000 tokens exceeds its context window of 2048"
    )


def test_missing_credentials_skip_and_a_chain_without_any_is_503() -> None:
    plan = make(without=("a",)).plan_embeddings(req("vectors", ["x"]), ACME)
    assert refs(plan) == ["b/small", "c/tiny"]
    assert plan.skipped[0]["reason"].startswith("credentials not set")
    with pytest.raises(GatewayError) as err:
        make(without=("a", "b", "c")).plan_embeddings(req("vectors", ["x"]), ACME)
    assert (err.value.status, err.value.code) == (503, "no_candidate")


def test_the_cost_cap_applies_to_the_input_price() -> None:
    with pytest.raises(GatewayError) as err:
        make().plan_embeddings(req("capped", ["x" * 400]), ACME)
    assert (err.value.status, err.value.code) == (400, "no_candidate")
    assert "over the route's cap" in err.value.message


def test_explicit_embedding_model_is_served() -> None:
    plan = make().plan_embeddings(req("b/small", ["x"]), ACME)
    assert (plan.route, refs(plan), plan.policy.max_attempts) == (None, ["b/small"], 1)


@pytest.mark.parametrize("name", ["chat", "a/chatty"])
def test_a_chat_route_or_model_on_embeddings_names_the_chat_endpoint(name: str) -> None:
    with pytest.raises(GatewayError) as err:
        make().plan_embeddings(req(name, ["x"]), ACME)
    assert (err.value.status, err.value.code, err.value.param) == (400, "wrong_endpoint", "model")
    assert "use POST /v1/chat/completions" in err.value.message


@pytest.mark.parametrize(("name", "what"), [("vectors", "route"), ("b/small", "model")])
def test_an_embeddings_route_or_model_on_chat_says_use_embeddings(name: str, what: str) -> None:
    chat = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(GatewayError) as err:
        make().plan(chat, ACME)
    assert (err.value.status, err.value.code) == (400, "wrong_endpoint")
    assert err.value.message == f"'{name}' is an embeddings {what}: use POST /v1/embeddings"


def test_org_and_unknown_model_rules_are_the_chat_ones() -> None:
    only_chat = OrgConfig("acme", frozenset({"chat"}), None, frozenset(), None)
    with pytest.raises(GatewayError) as err:
        make().plan_embeddings(req("vectors", ["x"]), only_chat)
    assert (err.value.status, err.value.code) == (403, "route_not_allowed")
    with pytest.raises(GatewayError) as err:
        make().plan_embeddings(req("nope", ["x"]), ACME)
    assert (err.value.status, err.value.code) == (404, "model_not_found")
