"""LocalLimiter (runtime/limits.py): rate buckets, budget reservations in integer nano-USD,
settlement, the spend of other processes, UTC periods, and `build_limiter`."""

from __future__ import annotations

import asyncio
import calendar
import sys
import time
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import runtime.limits as limits_module
from runtime.config import Budget, ConfigError, Limits, StateConfig
from runtime.errors import GatewayError
from runtime.limits import LocalLimiter, Reservation, build_limiter, to_nano
from runtime.records import RecordWriter, Spend, read_spend
from tests.unit.scripted import config
from tests.unit.test_records import make_record

NONE = Budget(None, None)


def limiter(
    key: Budget = NONE,
    org: Budget = NONE,
    orgs: dict[str, Budget] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    workers: int = 1,
) -> LocalLimiter:
    return LocalLimiter(Limits(rpm, tpm, key, org, orgs or {}), workers)


def refused(fn: Any, *args: Any) -> GatewayError:
    with pytest.raises(GatewayError) as exc:
        fn(*args)
    return exc.value


def test_nano_usd_holds_five_cent_worst_cases_in_a_five_cent_budget_exactly() -> None:
    assert to_nano(0.01) * 5 == to_nano(0.05) == 50_000_000
    lim = limiter(key=Budget(0.05, None))
    held = [lim.reserve_now(f"r{i}", "k", "acme", 10, 0.01) for i in range(5)]
    assert [r.nano_usd for r in held] == [10_000_000] * 5
    err = refused(lim.reserve_now, "r6", "k", "acme", 10, 0.01)
    assert (err.status, err.code) == (429, "budget_exceeded")
    assert err.message == (
        "the daily budget of the key ($0.05) has $0 left after what was spent and what requests"
        " in flight reserved; this request reserves its worst-case cost of $0.01"
        " (a smaller max_tokens reserves less)"
    )
    day_end = calendar.timegm((*time.gmtime()[:3], 0, 0, 0)) + 86400
    assert abs(int(err.headers["retry-after"]) - (day_end - time.time())) <= 2


def test_no_float_drift_three_ten_cent_worst_cases_fit_thirty_cents() -> None:
    assert 0.1 + 0.1 + 0.1 > 0.3  # summed as floats, the third would not fit
    lim = limiter(org=Budget(None, 0.3))
    for i in range(3):
        lim.reserve_now(f"r{i}", f"k{i}", "acme", 1, 0.1)
    assert refused(lim.reserve_now, "r3", "k3", "acme", 1, 1e-9).code == "budget_exceeded"


def test_fifty_concurrent_reservations_against_room_for_five_admit_five() -> None:
    lim = limiter(key=Budget(0.05, None))

    async def one(i: int) -> str:
        try:
            await lim.reserve(f"r{i}", "k", "acme", 10, 0.01)
            return "ok"
        except GatewayError as exc:
            return exc.code

    async def burst() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(50)))

    outcomes = asyncio.run(burst())
    assert outcomes.count("ok") == 5 and outcomes.count("budget_exceeded") == 45


def test_reserve_does_not_yield_to_the_event_loop() -> None:
    lim = limiter(key=Budget(0.05, None), rpm=100, tpm=1000)
    coro = lim.reserve("r1", "k", "acme", 10, 0.01)
    with pytest.raises(StopIteration) as done:
        coro.send(None)  # runs to the end without suspending once
    assert isinstance(done.value.value, Reservation)


def test_settle_replaces_the_worst_case_by_the_real_cost_once() -> None:
    lim = limiter(key=Budget(0.05, None))
    res = [lim.reserve_now(f"r{i}", "k", "acme", 10, 0.01) for i in range(5)]
    refused(lim.reserve_now, "r5", "k", "acme", 10, 0.01)
    lim.settle(res[0], 0.002, 30)
    lim.settle(res[0], 0.002, 30)  # a second settle of the same reservation changes nothing
    assert lim.used_nano("k", "acme")[0] == 2_000_000 + 4 * 10_000_000
    lim.reserve_now("r6", "k", "acme", 10, 0.008)  # exactly the $0.008 given back
    refused(lim.reserve_now, "r7", "k", "acme", 10, 0.000000001)
    for r in res[1:]:
        lim.settle(r, None, 0)  # failed before any cost: the whole worst case comes back
    assert lim.used_nano("k", "acme")[0] == 2_000_000 + 8_000_000


def test_every_budget_that_applies_is_reserved_and_named() -> None:
    lim = limiter(
        key=Budget(None, 1.0),
        org=Budget(0.03, None),
        orgs={"globex": Budget(None, None)},
    )
    lim.reserve_now("a", "k1", "acme", 1, 0.02)
    err = refused(lim.reserve_now, "b", "k2", "acme", 1, 0.02)  # another key, same org
    assert err.message.startswith("the daily budget of the org 'acme' ($0.03) has $0.01 left")
    lim.reserve_now("c", "k3", "globex", 1, 0.9)  # an org with its own (unlimited) budget
    err = refused(lim.reserve_now, "d", "k3", "globex", 1, 0.2)  # but the key's month is full
    assert err.message.startswith("the monthly budget of the key ($1) has $0.1 left")
    assert int(err.headers["retry-after"]) >= 1


def test_an_unpriced_request_reserves_nothing_and_needs_room_left() -> None:
    lim = limiter(key=Budget(0.05, None))
    unpriced = lim.reserve_now("u", "k", "acme", 1, None)
    assert unpriced.nano_usd == 0
    held = lim.reserve_now("p", "k", "acme", 1, 0.05)
    err = refused(lim.reserve_now, "u2", "k", "acme", 1, None)
    assert "cannot be estimated" in err.message
    lim.settle(held, 0.01, 1)
    lim.reserve_now("u3", "k", "acme", 1, None)


def test_without_budgets_reserve_keeps_no_state() -> None:
    lim = limiter(rpm=10)
    res = lim.reserve_now("r", "k", "acme", 10, 5.0)
    assert (res.nano_usd, res.day_start) == (0, 0.0)
    lim.settle(res, 5.0, 10)
    assert lim.used_nano("k", "acme") == (0, 0, 0, 0)
    assert lim.render_metrics() == "" and lim.readiness() == ([], [])


def test_the_spend_of_other_processes_adds_to_own_costs_and_reservations() -> None:
    lim = limiter(key=Budget(0.05, None), org=Budget(None, 0.1))
    day, month = limits_module.period_starts(time.time())
    done = lim.reserve_now("a", "k", "acme", 1, 0.01)
    lim.settle(done, 0.01, 1)
    lim.reserve_now("b", "k", "acme", 1, 0.01)  # in flight
    lim.refresh(Spend({"k": 0.02}, {"k": 0.02}, {"acme": 0.02}, {"acme": 0.07}), day, month)
    assert lim.used_nano("k", "acme") == (40_000_000, 40_000_000, 40_000_000, 90_000_000)
    lim.reserve_now("c", "k", "acme", 1, 0.01)
    err = refused(lim.reserve_now, "d", "k", "acme", 1, 0.01)
    assert "daily budget of the key" in err.message
    # A read of a past day (the refresh raced midnight) leaves the day's totals alone.
    lim.refresh(Spend({"k": 9.0}, {"k": 0.02}, {}, {"acme": 0.07}), day - 86400, month)
    assert lim.used_nano("k", "acme")[0] == 50_000_000


def test_a_new_utc_day_starts_from_zero_and_old_reservations_do_not_charge_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = {"now": calendar.timegm((2026, 3, 14, 23, 59, 0))}
    fake = types.SimpleNamespace(
        time=lambda: clock["now"], monotonic=time.monotonic, gmtime=time.gmtime
    )
    monkeypatch.setattr(limits_module, "time", fake)
    lim = limiter(key=Budget(0.05, 1.0))
    late = lim.reserve_now("late", "k", "acme", 1, 0.05)
    assert refused(lim.reserve_now, "x", "k", "acme", 1, 0.01).code == "budget_exceeded"
    clock["now"] += 120  # 00:01 the next day, same month
    lim.settle(late, 0.04, 1)  # billed to the day it was reserved in, and to the month
    assert lim.used_nano("k", "acme")[:2] == (0, 40_000_000)
    lim.reserve_now("y", "k", "acme", 1, 0.05)


def test_count_rejected_takes_from_requests_per_minute() -> None:
    lim = limiter(rpm=3)
    assert [lim.count_rejected_now("k", now=0.0) for _ in range(3)] == [None, None, None]
    err = lim.count_rejected_now("k", now=0.0)
    assert err is not None and (err.status, err.code) == (429, "rate_limit_exceeded")
    assert refused(lim.reserve_now, "r", "k", "acme", 1, None, 0.0).code == "rate_limit_exceeded"
    assert lim.count_rejected_now("other", now=0.0) is None
    assert limiter().count_rejected_now("k") is None


def test_tokens_beyond_the_estimate_are_taken_at_settle_and_per_process_share() -> None:
    lim = limiter(tpm=200, workers=2)  # 100 a minute in this process
    res = lim.reserve_now("a", "k", "acme", 40, None, 0.0)
    assert res.tokens == 40
    lim.settle(res, None, 90)  # 50 more than estimated
    err = refused(lim.reserve_now, "b", "k", "acme", 20, None, 0.0)
    assert (err.code, "200 tokens per minute" in err.message) == ("token_rate_limit_exceeded", True)
    lim.reserve_now("c", "k", "acme", 10, None, 0.0)


def test_a_budget_refusal_gives_the_tokens_back() -> None:
    lim = limiter(key=Budget(0.01, None), tpm=100)
    refused(lim.reserve_now, "a", "k", "acme", 100, 0.02, 0.0)
    lim.reserve_now("b", "k", "acme", 100, 0.01, 0.0)


def test_start_reads_spend_once_and_close_stops_the_refresh() -> None:
    calls: list[tuple[float, float]] = []

    def read(day: float, month: float) -> Spend:
        calls.append((day, month))
        return Spend({"k": 0.05}, {}, {}, {})

    lim = LocalLimiter(Limits(None, None, Budget(0.05, None), NONE, {}), 1, read, refresh_s=0.05)

    async def run() -> GatewayError:
        await lim.start()
        try:
            with pytest.raises(GatewayError) as exc:
                await lim.reserve("r", "k", "acme", 1, 0.001)
            await asyncio.sleep(0.2)
            return exc.value
        finally:
            await lim.close()

    assert asyncio.run(run()).code == "budget_exceeded"
    assert len(calls) >= 2 and calls[0] == limits_module.period_starts(time.time())
    assert "switchyard_budget_reservations 0" in lim.render_metrics()


def test_read_spend_leaves_out_this_process_s_own_records(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = RecordWriter(db, 10, 10, 30)
    w.start()
    now = time.time()
    for rid, cost in (("req_aaaa0001", 1.0), ("req_bbbb0001", 2.0), ("req_aaaa0002", 4.0)):
        rec = make_record(1, key_id="k", org="acme", cost_usd=cost, ts=now)
        w.submit(replace(rec, request_id=rid))
    w.close()
    day, month = limits_module.period_starts(now)
    assert read_spend(db, day, month, "req_aaaa").key_day == {"k": 2.0}
    assert read_spend(db, day, month).key_day == {"k": 7.0}


def test_build_limiter_is_local_for_memory_and_names_a_missing_redis_secret() -> None:
    cfg = config([], [], rpm=5)
    assert isinstance(build_limiter(cfg, {}, None), LocalLimiter)
    redis = replace(
        cfg, state=StateConfig(limits_store="redis", redis_url_secret="SWITCHYARD_REDIS_URL")
    )
    with pytest.raises(ConfigError) as exc:
        build_limiter(redis, {}, None)
    assert "SWITCHYARD_REDIS_URL" in str(exc.value) and "redis" in str(exc.value)


def test_build_limiter_hands_redis_its_url_settings_local_fallback_and_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: dict[str, Any] = {}

    class FakeRedisLimiter:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made["args"], made["kwargs"] = args, kwargs

    monkeypatch.setitem(
        sys.modules, "runtime.limits_redis", types.SimpleNamespace(RedisLimiter=FakeRedisLimiter)
    )
    cfg = replace(
        config([], [], rpm=5),
        state=StateConfig(
            limits_store="redis", redis_url_secret="REDIS_URL", on_redis_unavailable="open"
        ),
    )

    def others(day: float, month: float) -> Spend:
        return Spend({}, {}, {}, {})

    def everyone(day: float, month: float) -> Spend:
        return Spend({}, {}, {}, {})

    limiter = build_limiter(cfg, {"REDIS_URL": "redis://127.0.0.1:1/0"}, others, everyone)
    assert isinstance(limiter, FakeRedisLimiter)
    limits, environment, url, on_unavailable, local = made["args"]
    assert (limits, environment, url, on_unavailable) == (
        cfg.limits,
        "test",
        "redis://127.0.0.1:1/0",
        "open",
    )
    assert isinstance(local, LocalLimiter) and local.read_spend is others
    # Reservations outlive the longest request by a minute, then lapse.
    assert made["kwargs"] == {"seed": everyone, "hold_s": cfg.request_timeout_s + 60.0}
