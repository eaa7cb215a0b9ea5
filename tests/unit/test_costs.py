"""Exact costs (issue 11, "Costs"): each provider's billing rule in `Price.cost`, the usage
details the client gets and the record keeps, and abandoned attempts billed as estimates."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from compiler.validate import check_bytes
from runtime.adapters import Usage
from runtime.config import Budget, Price, PriceTier, RuntimeConfig
from runtime.listings import format_records
from runtime.records import FIELDS, RecordWriter, read_records
from tests.unit.scripted import (
    Fail,
    Gateway,
    Reply,
    ScriptedAdapter,
    Stall,
    Step,
    Stream,
    Think,
    chat,
    config,
    gateway,
    model,
    post,
    provider,
    route,
)

# List prices, USD per 1M tokens (docs/runtime.md "Costs" cites the pages).
SONNET = Price(3.0, 15.0, cached_input=0.30, cache_write=3.75, cache_write_1h=6.0)
GEMINI_PRO = Price(
    1.25,
    10.0,
    cached_input=0.125,
    tiers=(PriceTier(200_000, 2.5, 15.0, cached_input=0.25),),
)
GPT_4O = Price(2.5, 10.0, cached_input=1.25)


# --- Price.cost ------------------------------------------------------------------------------


def test_anthropic_cache_reads_cost_the_cache_read_rate_the_issue_figure() -> None:
    # 188,086 cache-read tokens at Claude Sonnet's $0.30/M: $0.0564, not $0.564.
    cost = SONNET.cost(188_086, 0, cached_input_tokens=188_086)
    assert cost == pytest.approx(0.0564258)


def test_anthropic_cache_writes_cost_their_own_rates_not_20_percent_under() -> None:
    cost = SONNET.cost(
        1_000_000 + 2_000_000 + 3_000_000,
        0,
        cache_write_tokens=2_000_000,
        cache_write_1h_tokens=3_000_000,
    )
    assert cost == pytest.approx(1 * 3.0 + 2 * 3.75 + 3 * 6.0)


def test_unset_cache_write_rates_default_to_anthropics_multipliers() -> None:
    price = Price(3.0, 15.0)
    assert price.cost(2_000_000, 0, cache_write_tokens=1_000_000) == pytest.approx(3.0 + 3.75)
    assert price.cost(2_000_000, 0, cache_write_1h_tokens=1_000_000) == pytest.approx(3.0 + 6.0)


def test_unset_cached_input_rate_is_the_input_rate() -> None:
    assert Price(2.0, 8.0).cost(1_000_000, 0, cached_input_tokens=600_000) == pytest.approx(2.0)


def test_openai_cached_input_is_not_charged_in_full() -> None:
    # prompt_tokens includes the cached ones (OpenAI-sense totals).
    cost = GPT_4O.cost(1_000_000, 100_000, cached_input_tokens=800_000)
    assert cost == pytest.approx(0.2 * 2.5 + 0.8 * 1.25 + 0.1 * 10.0)


def test_gemini_tier_is_chosen_by_the_total_input_cached_tokens_included() -> None:
    below = GEMINI_PRO.cost(200_000, 1_000, cached_input_tokens=100_000)
    assert below == pytest.approx((100_000 * 1.25 + 100_000 * 0.125 + 1_000 * 10.0) / 1e6)
    above = GEMINI_PRO.cost(200_001, 1_000, cached_input_tokens=100_000)
    assert above == pytest.approx((100_001 * 2.5 + 100_000 * 0.25 + 1_000 * 15.0) / 1e6)


def test_the_highest_tier_below_the_input_applies() -> None:
    price = Price(1.0, 1.0, tiers=(PriceTier(10, 2.0, 2.0), PriceTier(20, 3.0, 3.0)))
    assert [price.cost(n, 0) * 1e6 / n for n in (10, 11, 20, 21)] == pytest.approx(
        [1.0, 2.0, 2.0, 3.0]
    )


def test_reasoning_tokens_are_billed_as_output() -> None:
    # output_tokens already includes reasoning (Usage's contract): nothing is added.
    assert GPT_4O.cost(0, 1_000_000) == pytest.approx(10.0)


# --- what the client gets and what the record keeps ------------------------------------------

A = provider("a", dataclasses.replace(model("one"), price=SONNET))
B = provider("b", model("two", price=(10.0, 20.0)))
DETAILED = Usage(
    10_000, 500, cached_input_tokens=6_000, cache_write_tokens=1_000, reasoning_tokens=200
)
DETAILED_COST = (3_000 * 3.0 + 6_000 * 0.30 + 1_000 * 3.75 + 500 * 15.0) / 1e6


def _config(**options: Any) -> RuntimeConfig:
    r = route("r", [("a", "one"), ("b", "two")], first_byte_timeout_s=0.2)
    return config([A, B], [r], **options)


def make(script: dict[str, dict[str, list[Step]]], **options: Any) -> Gateway:
    return gateway(
        _config(**options), {p.id: ScriptedAdapter(p, script.get(p.id, {})) for p in (A, B)}
    )


def test_non_streamed_usage_has_openais_details_and_the_record_keeps_them() -> None:
    gw = make({"a": {"one": [Reply("hi", DETAILED)]}})
    resp = asyncio.run(post(gw.handler, chat("r")))
    assert resp.json()["usage"] == {
        "prompt_tokens": 10_000,
        "completion_tokens": 500,
        "total_tokens": 10_500,
        "prompt_tokens_details": {"cached_tokens": 6_000, "cache_write_tokens": 1_000},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    [rec] = gw.sink.records
    assert (
        rec.cached_input_tokens,
        rec.cache_write_tokens,
        rec.cache_write_1h_tokens,
        rec.reasoning_tokens,
    ) == (6_000, 1_000, 0, 200)
    assert rec.cost_usd == pytest.approx(DETAILED_COST)
    assert rec.abandoned_cost_usd is None


def test_the_streamed_final_usage_chunk_has_the_details() -> None:
    gw = make({"a": {"one": [Stream(("hel", "lo"), DETAILED)]}})
    body = chat("r", stream=True, stream_options={"include_usage": True})
    resp = asyncio.run(post(gw.handler, body))
    events = [e for e in resp.events() if e != "[DONE]"]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 6_000,
        "cache_write_tokens": 1_000,
    }
    assert events[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 200}
    [rec] = gw.sink.records
    assert rec.cost_usd == pytest.approx(DETAILED_COST)


# --- abandoned attempts ----------------------------------------------------------------------


def test_a_stream_abandoned_at_the_first_byte_timeout_is_billed_as_an_estimate() -> None:
    gw = make(
        {
            "a": {"one": [Stream((Think("x" * 400), Stall()), None)]},
            "b": {"two": [Stream(("from b",), Usage(100, 10))]},
        }
    )
    resp = asyncio.run(post(gw.handler, chat("r", stream=True)))
    assert resp.status == 200
    [rec] = gw.sink.records
    first, second = rec.attempts
    assert (first["outcome"], first["cost_estimated"]) == ("timeout", True)
    prompt = gw.services.router.plan(chat("r"), gw.services.config.orgs["acme"]).prompt_tokens
    # Input: the plan's prompt estimate; output: the 400 characters of thinking seen.
    assert first["cost_usd"] == pytest.approx(SONNET.cost(prompt, 100))
    assert "cost_usd" not in second
    answer = (100 * 10.0 + 10 * 20.0) / 1e6
    assert rec.abandoned_cost_usd == pytest.approx(first["cost_usd"])
    assert rec.cost_usd == pytest.approx(answer + first["cost_usd"])


def test_a_stream_that_breaks_before_the_commit_is_billed_what_it_showed() -> None:
    gw = make(
        {
            "a": {"one": [Stream((Fail("server_error", "reset"),), None)]},
            "b": {"two": [Stream(("ok",), Usage(5, 1))]},
        }
    )
    asyncio.run(post(gw.handler, chat("r", stream=True)))
    [rec] = gw.sink.records
    assert rec.attempts[0]["outcome"] == "server_error"
    assert rec.attempts[0]["cost_usd"] > 0
    assert rec.abandoned_cost_usd == rec.attempts[0]["cost_usd"]


def test_a_non_streamed_call_cut_by_its_timeout_is_billed_its_prompt() -> None:
    gw = make(
        {
            "a": {"one": [Fail("timeout", "no response before the timeout")]},
            "b": {"two": [Reply("from b", Usage(100, 10))]},
        }
    )
    asyncio.run(post(gw.handler, chat("r")))
    [rec] = gw.sink.records
    prompt = gw.services.router.plan(chat("r"), gw.services.config.orgs["acme"]).prompt_tokens
    assert rec.attempts[0]["cost_usd"] == pytest.approx(SONNET.cost(prompt, 0))


@pytest.mark.parametrize(
    "failure",
    [Fail("rate_limited", "slow down", 429), Fail("timeout", "HTTP 500 body late", 500)],
    ids=["refused", "error-status-timeout"],
)
def test_attempts_the_provider_refused_cost_nothing(failure: Fail) -> None:
    gw = make({"a": {"one": [failure]}, "b": {"two": [Reply("from b", Usage(100, 10))]}})
    asyncio.run(post(gw.handler, chat("r")))
    [rec] = gw.sink.records
    assert "cost_usd" not in rec.attempts[0]
    assert rec.abandoned_cost_usd is None


def test_abandoned_attempts_count_against_the_budget_even_when_every_candidate_failed() -> None:
    script = {
        "a": {"one": [Stream((Think("x" * 4000), Stall()), None)]},
        "b": {"two": [Fail("server_error", "down", 500)]},
    }
    # A budget with room for exactly the worst case of one request: the first is admitted,
    # and what its abandoned attempt cost leaves too little for the next.
    probe = make(script)
    worst = probe.services.router.plan(
        chat("r", stream=True), probe.services.config.orgs["acme"]
    ).worst_cost_usd
    assert worst is not None
    gw = make(script, key_budget=Budget(worst, None))
    resp = asyncio.run(post(gw.handler, chat("r", stream=True)))
    assert resp.status == 502
    [rec] = gw.sink.records
    assert rec.cost_usd is not None and rec.cost_usd == rec.abandoned_cost_usd > 0
    again = asyncio.run(post(gw.handler, chat("r")))
    assert again.status == 429
    assert again.json()["error"]["code"] == "budget_exceeded"


# --- records: columns, migration, listing ----------------------------------------------------


def _old_database(path: Path) -> None:
    """A request log as the release before these columns wrote it."""
    old = [
        f
        for f in FIELDS
        if f
        not in {
            "cached_input_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
            "abandoned_cost_usd",
        }
    ]
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE requests ({', '.join(old)})")
    values = {f: None for f in old} | {
        "request_id": "req-old",
        "ts": 1000.0,
        "environment": "dev",
        "status": 200,
        "latency_ms": 1.0,
        "usage_estimated": 0,
        "stream": 0,
        "attempts": "[]",
        "fell_back": 0,
        "broke_after_commit": 0,
        "skipped": "[]",
        "price_table_hash": "p",
        "config_hash": "c",
        "cost_usd": 0.5,
    }
    conn.execute(
        f"INSERT INTO requests ({', '.join(old)}) VALUES ({', '.join('?' for _ in old)})",
        [values[f] for f in old],
    )
    conn.commit()
    conn.close()


def test_an_old_database_reads_back_and_is_migrated_when_the_writer_starts(
    tmp_path: Path,
) -> None:
    db = tmp_path / "requests.db"
    _old_database(db)
    [old] = read_records(db)  # read-only, before any migration
    assert (old.request_id, old.cost_usd, old.cached_input_tokens) == ("req-old", 0.5, None)
    writer = RecordWriter(db, batch_size=1, flush_interval_ms=10, retention_days=100_000)
    writer.start()
    gw = make({"a": {"one": [Reply("hi", DETAILED)]}})
    asyncio.run(post(gw.handler, chat("r")))
    [new] = gw.sink.records
    writer.submit(new)
    assert writer.flush()
    writer.close()
    old_again, written = read_records(db)
    assert old_again == old
    assert (written.cached_input_tokens, written.cache_write_tokens) == (6_000, 1_000)
    assert written.reasoning_tokens == 200
    RecordWriter(db, 1, 10, 100_000).start()  # a second start finds the columns there


def test_the_requests_listing_shows_the_usage_details_and_flags_estimates() -> None:
    gw = make(
        {
            "a": {"one": [Stream((Think("x" * 400), Stall()), None)]},
            "b": {"two": [Stream(("from b",), Usage(100, 10, cached_input_tokens=40))]},
        }
    )
    asyncio.run(post(gw.handler, chat("r", stream=True)))
    text = format_records(gw.sink.records)
    header, row, note = text.splitlines()
    for column in ("cached", "cache writes", "reasoning"):
        assert column in header
    assert " 40 " in row and " ~ " in row
    assert note.startswith("~ cost usd: includes the estimated cost of attempts abandoned")


# --- check: the price table rules ------------------------------------------------------------

GATEWAY = (Path(__file__).resolve().parents[2] / "gateway.yaml").read_text()
GEMINI_TIER = (
    "            - {above_input_tokens: 200000, input: 2.50, cached_input: 0.25, output: 15.00}"
)


def _diagnostics(old: str, new: str) -> list[tuple[str, str, str]]:
    assert GATEWAY.count(old) == 1
    result = check_bytes(GATEWAY.replace(old, new))
    return [(d.code, d.dotted_path, d.message) for d in result.diagnostics]


def test_the_example_gateway_prices_pass_check_without_a_warning() -> None:
    assert check_bytes(GATEWAY).diagnostics == []


def test_a_repeated_tier_threshold_is_an_error() -> None:
    assert _diagnostics(GEMINI_TIER, GEMINI_TIER + "\n" + GEMINI_TIER) == [
        (
            "E060",
            "providers.gemini.models.'gemini-2.5-pro'.price.tiers[1].above_input_tokens",
            "tier threshold 200000 repeats the one before it (200000)",
        )
    ]


def test_a_negative_rate_is_a_shape_error() -> None:
    found = _diagnostics("cached_input: 0.25,", "cached_input: -0.25,")
    assert [(c, p) for c, p, _ in found if c.startswith("E")] == [
        ("E014", "providers.gemini.models.'gemini-2.5-pro'.price.tiers[0].cached_input")
    ]


def test_a_cache_read_rate_on_the_mock_adapter_is_never_used() -> None:
    found = _diagnostics(
        "price: {input: 0, output: 0}", "price: {input: 0, cached_input: 0, output: 0}"
    )
    assert [(c, p) for c, p, _ in found] == [
        ("W063", "providers.mock.models.echo.price.cached_input")
    ]


def test_a_tier_without_a_cache_read_rate_is_warned_about_too() -> None:
    found = _diagnostics(
        "input: 2.50, cached_input: 0.25, output: 15.00", "input: 2.50, output: 15"
    )
    assert [(c, p) for c, p, _ in found] == [
        ("W062", "providers.gemini.models.'gemini-2.5-pro'.price.tiers[0]")
    ]
