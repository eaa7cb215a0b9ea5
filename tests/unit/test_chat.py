"""The chat handler in process (ASGI, no socket): what the client sees, the one record of
each request (fields, attempt trail, cost), limits, and the commit rule seen by a client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from runtime.adapters import Usage
from runtime.config import Budget
from tests.unit.scripted import (
    TOKEN,
    Crash,
    Fail,
    Gateway,
    Reply,
    ScriptedAdapter,
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

A = provider("a", model("one", price=(1.0, 2.0)))
B = provider("b", model("two", price=(10.0, 20.0)))


def make(script: dict[str, dict[str, list[Step]]], **config_options: Any) -> Gateway:
    cfg = config([A, B], [route("r", [("a", "one"), ("b", "two")])], **config_options)
    return gateway(cfg, {p.id: ScriptedAdapter(p, script.get(p.id, {})) for p in (A, B)})


def test_success_answers_and_records_fields_and_cost() -> None:
    gw = make({"a": {"one": [Reply("hello", Usage(1000, 500))]}})
    resp = asyncio.run(post(gw.handler, chat("r")))
    assert resp.status == 200
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert resp.json()["usage"] == {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert resp.headers["x-switchyard-provider"] == "a"
    assert resp.headers["x-switchyard-attempts"] == "1"
    [rec] = gw.sink.records
    assert rec.request_id == resp.headers["x-request-id"]
    assert (rec.status, rec.error_code, rec.key_id, rec.org) == (200, None, "k1", "acme")
    assert (rec.route, rec.provider, rec.upstream_model) == ("r", "a", "up-one")
    assert (rec.input_tokens, rec.output_tokens, rec.usage_estimated) == (1000, 500, False)
    assert rec.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1_000_000)
    assert (rec.stream, rec.fell_back, rec.broke_after_commit) == (False, False, False)
    assert [(a["provider"], a["outcome"]) for a in rec.attempts] == [("a", "ok")]
    assert (rec.config_hash, rec.price_table_hash) == ("cfg-hash", "price-hash")


def test_fallback_is_in_the_headers_and_the_record_trail() -> None:
    gw = make(
        {
            "a": {"one": [Fail("rate_limited", "slow down", 429)]},
            "b": {"two": [Reply("from b", Usage(100, 10))]},
        }
    )
    resp = asyncio.run(post(gw.handler, chat("r")))
    assert resp.status == 200
    assert resp.headers["x-switchyard-provider"] == "b"
    assert resp.headers["x-switchyard-attempts"] == "2"
    assert resp.headers["x-switchyard-attempt-trail"].startswith("a/one=rate_limited:")
    [rec] = gw.sink.records
    assert rec.fell_back
    assert [(a["provider"], a["outcome"], a.get("status")) for a in rec.attempts] == [
        ("a", "rate_limited", 429),
        ("b", "ok", None),
    ]
    assert rec.cost_usd == pytest.approx((100 * 10.0 + 10 * 20.0) / 1_000_000)


def test_a_failed_chain_shows_the_last_error_and_records_every_attempt() -> None:
    gw = make(
        {
            "a": {"one": [Fail("overloaded", "busy", 529)]},
            "b": {"two": [Fail("rate_limited", "slow down", 429, retry_after=7)]},
        }
    )
    resp = asyncio.run(post(gw.handler, chat("r")))
    assert resp.status == 429
    assert resp.json()["error"] == {
        "message": "b: slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": "upstream_rate_limited",
    }
    assert resp.headers["retry-after"] == "7"
    assert resp.headers["x-switchyard-attempts"] == "2"
    [rec] = gw.sink.records
    assert (rec.status, rec.error_code, rec.provider) == (429, "upstream_rate_limited", "b")
    assert [a["outcome"] for a in rec.attempts] == ["overloaded", "rate_limited"]
    assert rec.cost_usd is None


def test_a_stream_broken_after_content_ends_with_an_error_event_and_no_fallback() -> None:
    gw = make({"a": {"one": [Stream(["hel", Fail("server_error", "cut")])]}})
    resp = asyncio.run(post(gw.handler, chat("r", stream=True)))
    assert resp.status == 200
    events = resp.events()
    assert events[1]["choices"][0]["delta"] == {"content": "hel"}
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert events[-1]["error"]["message"] == (
        "a: cut (after the response had started; not retried)"
    )
    assert "[DONE]" not in events
    [rec] = gw.sink.records
    assert (rec.broke_after_commit, rec.error_code) == (True, "stream_broken_after_commit")
    assert [a["outcome"] for a in rec.attempts] == ["broken_after_commit"]
    assert rec.usage_estimated


def test_an_adapter_crash_after_content_ends_with_an_error_event_and_a_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = make({"a": {"one": [Stream(["hel", Crash("list index out of range")])]}})
    with caplog.at_level(logging.WARNING):
        resp = asyncio.run(post(gw.handler, chat("r", stream=True)))
    assert resp.status == 200
    events = resp.events()
    assert events[1]["choices"][0]["delta"] == {"content": "hel"}
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert "[DONE]" not in events
    [rec] = gw.sink.records
    assert (rec.status, rec.broke_after_commit) == (200, True)
    assert rec.error_code == "stream_broken_after_commit"
    assert "Traceback" in caplog.text and "IndexError" in caplog.text


def test_a_stream_broken_before_content_falls_back_unseen() -> None:
    gw = make(
        {
            "a": {"one": [Stream([Fail("server_error")])]},
            "b": {"two": [Stream(["from ", "b"], Usage(5, 2))]},
        }
    )
    resp = asyncio.run(post(gw.handler, chat("r", stream=True)))
    assert resp.status == 200
    events = resp.events()
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == "from b"
    assert events[-1] == "[DONE]"
    [rec] = gw.sink.records
    assert (rec.status, rec.provider, rec.fell_back, rec.stream) == (200, "b", True, True)
    assert (rec.input_tokens, rec.output_tokens) == (5, 2)


def test_the_request_rate_limit_refuses_with_retry_after() -> None:
    gw = make({"a": {"one": [Reply(), Reply()]}}, rpm=1)
    first = asyncio.run(post(gw.handler, chat("r")))
    second = asyncio.run(post(gw.handler, chat("r")))
    assert (first.status, second.status) == (200, 429)
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(second.headers["retry-after"]) >= 1
    assert [r.status for r in gw.sink.records] == [200, 429]
    assert gw.sink.records[1].attempts == []


def test_a_spent_budget_refuses_the_next_request() -> None:
    gw = make(
        {"a": {"one": [Reply("x", Usage(1_000_000, 0)), Reply()]}},
        key_budget=Budget(usd_per_day=0.5, usd_per_month=None),
    )
    # max_tokens keeps the worst case reserved (prompt and 10 output tokens) under $0.5.
    first = asyncio.run(post(gw.handler, chat("r", max_tokens=10)))
    second = asyncio.run(post(gw.handler, chat("r", max_tokens=10)))
    assert (first.status, second.status) == (200, 429)
    assert second.json()["error"]["code"] == "budget_exceeded"
    assert second.json()["error"]["message"] == (
        "the daily budget of the key ($0.5) has $0 left after what was spent and what requests"
        " in flight reserved; this request reserves its worst-case cost of $0.00025"
        " (a smaller max_tokens reserves less)"
    )


def test_a_bad_key_is_refused_and_recorded() -> None:
    gw = make({})
    resp = asyncio.run(post(gw.handler, chat("r"), token=TOKEN + "x"))
    assert resp.status == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="switchyard"'
    [rec] = gw.sink.records
    assert (rec.status, rec.error_code, rec.key_id) == (401, "invalid_api_key", None)
