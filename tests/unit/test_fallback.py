"""The fallback loop (runtime/fallback.py) in process, over scripted adapters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime.context import RequestContext, ResponseProgress
from runtime.fallback import AllCandidatesFailed, Opened, complete, open_stream
from runtime.records import RequestRecord
from tests.unit.scripted import (
    ALL_CLASSES,
    KEY,
    Crash,
    Fail,
    Reply,
    ScriptedAdapter,
    Stall,
    Step,
    Stream,
    Think,
    Unserve,
    chat,
    config,
    model,
    provider,
    route,
    router,
)

A = provider("a", model("one", window=8_000), model("two", window=8_000))
B = provider("b", model("wide", window=200_000))
C = provider("c", model("three"))
CHAIN = [("a", "one"), ("b", "wide"), ("c", "three")]


def setup(
    script: dict[str, dict[str, list[Step]]], stream: bool = False, **route_options: Any
) -> tuple[RequestContext, dict[str, ScriptedAdapter]]:
    cfg = config([A, B, C], [route("r", CHAIN, **route_options)])
    adapters = {p.id: ScriptedAdapter(p, script.get(p.id, {})) for p in (A, B, C)}
    body = chat("r", stream=stream)
    plan = router(cfg, adapters).plan(body, cfg.orgs["acme"])
    record = RequestRecord(
        "req_1", 0.0, "test", "k1", "acme", "r", "r", None, None, 0, None, 0.0, None, None,
        None, False, None, stream, [], False, False, [], "p", "c",
    )  # fmt: skip
    ctx = RequestContext(
        "req_1", KEY, cfg.orgs["acme"], body, stream, plan, record, ResponseProgress(), []
    )
    return ctx, adapters


def outcomes(ctx: RequestContext) -> list[tuple[str, str]]:
    return [(f"{a.provider}/{a.model}", a.outcome) for a in ctx.attempts]


@pytest.mark.parametrize("error_class", sorted(ALL_CLASSES - {"context_length"}))
def test_falls_back_on_each_class_in_on(error_class: Any) -> None:
    ctx, _ = setup(
        {"a": {"one": [Fail(error_class)]}, "b": {"wide": [Reply("from b")]}}, on=[error_class]
    )
    cand, result = asyncio.run(complete(ctx))
    assert (cand.ref, result.message["content"]) == ("b/wide", "from b")
    assert outcomes(ctx) == [("a/one", error_class), ("b/wide", "ok")]


@pytest.mark.parametrize("error_class", sorted(ALL_CLASSES - {"rate_limited"}))
def test_does_not_fall_back_on_a_class_not_in_on(error_class: Any) -> None:
    ctx, adapters = setup({"a": {"one": [Fail(error_class)]}}, on=["rate_limited"])
    with pytest.raises(AllCandidatesFailed) as info:
        asyncio.run(complete(ctx))
    assert info.value.error.error_class == error_class
    assert outcomes(ctx) == [("a/one", error_class)]
    assert adapters["b"].calls == []


def test_a_context_length_error_skips_candidates_whose_window_is_not_larger() -> None:
    ctx, adapters = setup(
        {"a": {"one": [Fail("context_length")]}, "b": {"wide": [Reply()]}},
        on=["context_length"],
    )
    cfg_chain = [("a", "one"), ("a", "two"), ("b", "wide")]
    cfg = config([A, B, C], [route("r", cfg_chain, on=["context_length"])])
    ctx.plan = router(cfg, adapters).plan(ctx.request, ctx.org)
    cand, _ = asyncio.run(complete(ctx))
    assert cand.ref == "b/wide"
    assert outcomes(ctx) == [("a/one", "context_length"), ("b/wide", "ok")]
    assert ctx.plan.skipped == [
        {
            "provider": "a",
            "model": "two",
            "reason": "context window 8000 is not larger than the one that overflowed (8000)",
        }
    ]


def test_max_attempts_stops_the_chain() -> None:
    ctx, adapters = setup(
        {"a": {"one": [Fail("server_error")]}, "b": {"wide": [Fail("overloaded")]}},
        max_attempts=2,
    )
    with pytest.raises(AllCandidatesFailed):
        asyncio.run(complete(ctx))
    assert outcomes(ctx) == [("a/one", "server_error"), ("b/wide", "overloaded")]
    assert adapters["c"].calls == []


def test_a_failed_chain_carries_every_attempts_error_in_order() -> None:
    ctx, _ = setup(
        {
            "a": {"one": [Fail("rate_limited", "slow down", 429)]},
            "b": {"wide": [Fail("server_error", "boom", 500)]},
            "c": {"three": [Fail("timeout", "no response")]},
        }
    )
    with pytest.raises(AllCandidatesFailed) as info:
        asyncio.run(complete(ctx))
    failed = info.value
    assert [(e.candidate.ref, e.error.error_class, e.error.message) for e in failed.errors] == [
        ("a/one", "rate_limited", "slow down"),
        ("b/wide", "server_error", "boom"),
        ("c/three", "timeout", "no response"),
    ]
    # What the client is told about: the last attempt.
    assert (failed.candidate.ref, failed.error.message) == ("c/three", "no response")
    assert str(failed) == "a/one: slow down; b/wide: boom; c/three: no response"


def test_a_stream_that_fails_before_its_first_content_chunk_falls_back() -> None:
    ctx, _ = setup(
        {
            "a": {"one": [Stream([Fail("server_error")])]},
            "b": {"wide": [Stream(["from b"])]},
        },
        stream=True,
    )
    opened = asyncio.run(open_stream(ctx))
    assert isinstance(opened, Opened)
    assert opened.candidate.ref == "b/wide"
    assert [c.content for c in opened.held] == [False, True]  # the role chunk, then content
    assert outcomes(ctx) == [("a/one", "server_error"), ("b/wide", "ok")]


def test_a_stream_that_fails_after_its_first_content_chunk_is_committed() -> None:
    ctx, adapters = setup(
        {"a": {"one": [Stream(["hel", Fail("server_error")])]}, "b": {"wide": [Stream()]}},
        stream=True,
    )

    async def run() -> str | None:
        opened = await open_stream(ctx)
        try:
            async for _ in opened.iterator:
                pass
        except Exception as exc:
            return type(exc).__name__
        return None

    assert asyncio.run(run()) == "UpstreamError"  # raised to the caller, not retried
    assert outcomes(ctx) == [("a/one", "ok")]
    assert adapters["b"].calls == []


def test_no_content_within_the_first_byte_timeout_falls_back() -> None:
    ctx, _ = setup(
        {"a": {"one": [Stream([Stall(10.0), "late"])]}, "b": {"wide": [Stream(["on time"])]}},
        stream=True,
        first_byte_timeout_s=0.05,
    )
    opened = asyncio.run(open_stream(ctx))
    assert opened.candidate.ref == "b/wide"
    first = ctx.attempts[0]
    assert (first.outcome, first.code) == ("timeout", "first_byte_timeout")
    assert first.latency_ms < 1000


def test_a_stalled_stream_opening_counts_against_the_first_byte_timeout() -> None:
    ctx, _ = setup(
        {"a": {"one": [Stall()]}, "b": {"wide": [Stream()]}},
        stream=True,
        first_byte_timeout_s=0.05,
    )
    assert asyncio.run(open_stream(ctx)).candidate.ref == "b/wide"
    assert outcomes(ctx) == [("a/one", "timeout"), ("b/wide", "ok")]


def test_a_candidate_that_cannot_take_the_request_is_skipped_not_tried() -> None:
    ctx, _ = setup(
        {"a": {"one": [Unserve("n > 1: one choice only")]}, "b": {"wide": [Reply("from b")]}},
        on=["rate_limited"],  # the skip does not depend on the fallback policy
        max_attempts=1,  # nor count as an attempt
    )
    cand, result = asyncio.run(complete(ctx))
    assert (cand.ref, result.message["content"]) == ("b/wide", "from b")
    assert outcomes(ctx) == [("b/wide", "ok")]
    assert {"provider": "a", "model": "one", "reason": "n > 1: one choice only"} in (
        ctx.plan.skipped
    )


def test_when_no_candidate_can_take_the_request_the_reasons_are_a_bad_request() -> None:
    ctx, _ = setup(
        {
            "a": {"one": [Unserve("n > 1: one choice only")]},
            "b": {"wide": [Unserve("no logprobs")]},
            "c": {"three": [Unserve("no audio")]},
        }
    )
    with pytest.raises(AllCandidatesFailed) as info:
        asyncio.run(complete(ctx))
    assert info.value.error.error_class == "bad_request"
    assert info.value.error.code == "unsupported_by_candidate"
    assert "a/one: n > 1: one choice only" in info.value.error.message
    assert "c/three: no audio" in info.value.error.message
    assert ctx.attempts == []


def test_what_an_adapter_dropped_is_noted_in_the_attempt_trail() -> None:
    ctx, _ = setup({"a": {"one": [Reply(notes=("dropped `seed`: not supported",))]}})
    asyncio.run(complete(ctx))
    assert ctx.attempts[0].as_dict()["notes"] == ["dropped `seed`: not supported"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_adapter_crash_falls_back_as_a_malformed_answer(stream: bool) -> None:
    answer: Step = Stream(["from b"]) if stream else Reply("from b")
    ctx, _ = setup({"a": {"one": [Crash()]}, "b": {"wide": [answer]}}, stream=stream)
    asyncio.run(open_stream(ctx) if stream else complete(ctx))  # type: ignore[arg-type]
    first = ctx.attempts[0]
    assert (first.outcome, first.code) == ("server_error", "upstream_malformed")
    assert outcomes(ctx)[1] == ("b/wide", "ok")


def test_thinking_restarts_the_first_byte_timeout() -> None:
    """The timeout is about silence: a model that keeps thinking is not abandoned."""
    thinking: list[str | Fail | Stall | Think] = []
    for _ in range(6):
        thinking += [Stall(0.04), Think()]
    ctx, _ = setup(
        {"a": {"one": [Stream([*thinking, "answer"])]}},
        stream=True,
        first_byte_timeout_s=0.1,
    )
    opened = asyncio.run(open_stream(ctx))
    assert opened.candidate.ref == "a/one"
    assert [c.reasoning for c in opened.held if hasattr(c, "reasoning")].count(True) == 6
    assert outcomes(ctx) == [("a/one", "ok")]


def test_silence_after_thinking_still_times_out() -> None:
    ctx, _ = setup(
        {"a": {"one": [Stream([Think(), Stall(1.0), "late"])]}, "b": {"wide": [Stream()]}},
        stream=True,
        first_byte_timeout_s=0.1,
    )
    opened = asyncio.run(open_stream(ctx))
    assert opened.candidate.ref == "b/wide"
    assert ctx.attempts[0].code == "first_byte_timeout"
