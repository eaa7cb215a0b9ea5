"""RedisLimiter against a real Redis: exact across processes, holds that lapse, settle, and
what happens when Redis cannot be reached (closed: 503, open: the local limiter), visible in
readiness and metrics, and used again when it returns.

Processes are real (`python -c` subprocesses with their own event loops and connections), as
two gateways on two hosts would be.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from runtime.config import Budget, ConfigError, Limits
from runtime.errors import GatewayError
from runtime.limits import Reservation
from runtime.limits_redis import RedisLimiter
from runtime.redis_client import RedisClient
from tests.servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
NO_BUDGET = Budget(None, None)


def limits(
    rpm: int | None = None,
    tpm: int | None = None,
    key_day: float | None = None,
    org_day: float | None = None,
    org_month: float | None = None,
) -> Limits:
    return Limits(rpm, tpm, Budget(key_day, None), Budget(org_day, org_month), {})


class LocalStandIn:
    """The `local` fallback (the in-process limiter of helper L1 in a gateway): admits
    everything and counts what it was asked, so a test sees when it is used."""

    def __init__(self) -> None:
        self.reserved: list[str] = []
        self.settled: list[str] = []
        self.rejected = 0

    async def reserve(
        self, request_id: str, key_id: str, org: str, est_tokens: int, worst: float | None
    ) -> Reservation:
        self.reserved.append(request_id)
        return Reservation(request_id, key_id, org, 0, 0, 0.0, 0.0)

    async def count_rejected(self, key_id: str) -> GatewayError | None:
        self.rejected += 1
        return None

    def settle(self, reservation: Reservation, cost_usd: float | None, tokens: int) -> None:
        self.settled.append(reservation.request_id)

    def readiness(self) -> tuple[list[str], list[str]]:
        return [], []

    def render_metrics(self) -> str:
        return ""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


def make(lim: Limits, url: str, on_unavailable: str = "closed", **kw: float) -> RedisLimiter:
    return RedisLimiter(lim, "test", url, on_unavailable, LocalStandIn(), **kw)


async def outcome(limiter: RedisLimiter, rid: str, worst: float | None = 0.01, **kw: str) -> str:
    try:
        await limiter.reserve(rid, kw.get("key", "k1"), kw.get("org", "acme"), 10, worst)
    except GatewayError as exc:
        return exc.code
    return "admitted"


def worker(url: str, lim: dict[str, float | None], n: int, start_at: float, tag: str) -> None:
    """Run in a subprocess: `n` concurrent reserves at `start_at`; prints their outcomes."""

    async def main() -> list[str]:
        limiter = make(limits(**lim), url)  # type: ignore[arg-type]
        await limiter.start()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        got = await asyncio.gather(*(outcome(limiter, f"{tag}-{i}") for i in range(n)))
        await limiter.close()
        return list(got)

    print(json.dumps(asyncio.run(main())))


def crash_after_reserve(url: str, lim: dict[str, float | None]) -> None:
    """Run in a subprocess: reserve, then die without settling (a crashed gateway)."""

    async def main() -> None:
        limiter = make(limits(**lim), url, hold_s=1.0)  # type: ignore[arg-type]
        await limiter.start()
        assert await outcome(limiter, "crashed-1", 0.03) == "admitted"
        os._exit(0)

    asyncio.run(main())


def spawn(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


def run_workers(url: str, lim: dict[str, float | None], per_process: Sequence[int]) -> list[str]:
    start_at = time.time() + 2.0
    procs = [
        spawn(
            "from tests.e2e.test_limits_redis import worker; "
            f"worker({url!r}, {lim!r}, {n}, {start_at!r}, 'p{i}')"
        )
        for i, n in enumerate(per_process)
    ]
    out: list[str] = []
    for p in procs:
        stdout, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        out += json.loads(stdout)
    return out


def test_fifty_concurrent_from_five_processes_against_room_for_five_admit_five(
    redis_url: str,
) -> None:
    got = run_workers(redis_url, {"key_day": 0.05}, [10] * 5)
    assert len(got) == 50
    assert got.count("admitted") == 5
    assert got.count("budget_exceeded") == 45


def test_org_budget_is_shared_by_the_keys_of_the_org(redis_url: str) -> None:
    async def main() -> list[str]:
        a, b = make(limits(org_day=0.03), redis_url), make(limits(org_day=0.03), redis_url)
        got = await asyncio.gather(
            *(outcome(a, f"a{i}", key="ka") for i in range(10)),
            *(outcome(b, f"b{i}", key="kb") for i in range(10)),
        )
        await a.close()
        await b.close()
        return list(got)

    assert asyncio.run(main()).count("admitted") == 3


def test_rate_limit_of_n_per_minute_admits_exactly_n_across_two_processes(redis_url: str) -> None:
    got = run_workers(redis_url, {"rpm": 7}, [10, 10])
    assert got.count("admitted") == 7
    assert got.count("rate_limit_exceeded") == 13


def test_refusals_say_why_and_when_to_retry(redis_url: str) -> None:
    async def main() -> None:
        limiter = make(limits(rpm=1, key_day=0.05), redis_url)
        await limiter.reserve("r1", "k1", "acme", 10, 0.01)
        with pytest.raises(GatewayError) as rpm:
            await limiter.reserve("r2", "k1", "acme", 10, 0.01)
        assert rpm.value.status == 429
        assert rpm.value.code == "rate_limit_exceeded"
        assert 1 <= int(rpm.value.headers["retry-after"]) <= 60
        with pytest.raises(GatewayError) as budget:
            await limiter.reserve("r3", "k2", "acme", 10, 0.06)
        assert budget.value.code == "budget_exceeded"
        assert "daily budget of $0.05" in budget.value.message
        assert 1 <= int(budget.value.headers["retry-after"]) <= 86400
        await limiter.close()

    asyncio.run(main())


def test_settle_replaces_the_hold_by_the_real_cost_once(redis_url: str) -> None:
    async def main() -> None:
        limiter = make(limits(key_day=0.05), redis_url)
        held = [await limiter.reserve(f"r{i}", "k1", "acme", 10, 0.01) for i in range(5)]
        assert await outcome(limiter, "r5") == "budget_exceeded"
        # Two requests cost $0.002 each instead of $0.01: $0.016 of room comes back.
        for r in held[:2]:
            limiter.settle(r, 0.002, 10)
            limiter.settle(r, 0.002, 10)  # settled twice: counted once
        await asyncio.sleep(0.2)
        assert await outcome(limiter, "r6") == "admitted"
        assert await outcome(limiter, "r7") == "budget_exceeded"
        spend = await RedisClient(redis_url).execute(
            "HGETALL", f"sy:test:spend:key:k1:day:{time.strftime('%Y-%m-%d', time.gmtime())}"
        )
        assert spend == [b"held", b"40000000", b"spent", b"4000000"]
        await limiter.close()

    asyncio.run(main())


def test_a_request_of_unknown_cost_is_admitted_while_there_is_room(redis_url: str) -> None:
    async def main() -> None:
        limiter = make(limits(key_day=0.05), redis_url)
        r = await limiter.reserve("r1", "k1", "acme", 10, None)
        assert r.nano_usd == 0
        limiter.settle(r, 0.05, 10)
        await asyncio.sleep(0.2)
        assert await outcome(limiter, "r2", None) == "budget_exceeded"
        await limiter.close()

    asyncio.run(main())


def test_tokens_per_minute_takes_the_estimate_and_settles_to_the_real_count(
    redis_url: str,
) -> None:
    async def main() -> None:
        limiter = make(limits(tpm=100), redis_url)
        r = await limiter.reserve("r1", "k1", "acme", 60, None)
        assert r.tokens == 60
        with pytest.raises(GatewayError) as exc:
            await limiter.reserve("r2", "k1", "acme", 60, None)
        assert exc.value.code == "token_rate_limit_exceeded"
        limiter.settle(r, None, 10)  # 50 tokens fewer than estimated come back
        await asyncio.sleep(0.2)
        assert (await limiter.reserve("r3", "k1", "acme", 60, None)).tokens == 60
        await limiter.close()

    asyncio.run(main())


def test_count_rejected_takes_one_request_in_redis(redis_url: str) -> None:
    async def main() -> None:
        a, b = make(limits(rpm=3), redis_url), make(limits(rpm=3), redis_url)
        assert await a.count_rejected("k1") is None
        assert await b.count_rejected("k1") is None
        assert await outcome(a, "r1") == "admitted"
        assert await outcome(b, "r2") == "rate_limit_exceeded"
        over = await a.count_rejected("k1")
        assert over is not None and over.status == 429 and over.code == "rate_limit_exceeded"
        await a.close()
        await b.close()

    asyncio.run(main())


def test_the_holds_of_a_crashed_gateway_lapse(redis_url: str) -> None:
    lim = {"key_day": 0.05}
    proc = spawn(
        f"from tests.e2e.test_limits_redis import crash_after_reserve; "
        f"crash_after_reserve({redis_url!r}, {lim!r})"
    )
    assert proc.wait(30) == 0

    async def main() -> None:
        limiter = make(limits(key_day=0.05), redis_url, hold_s=1.0)
        assert await outcome(limiter, "r1", 0.03) == "budget_exceeded"  # $0.03 still held
        await asyncio.sleep(1.2)
        assert await outcome(limiter, "r2", 0.03) == "admitted"
        await limiter.close()

    asyncio.run(main())


def test_closed_unreachable_redis_answers_503_quickly_without_pile_up() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def main() -> None:
        limiter = make(limits(key_day=1.0), url)
        await limiter.start()
        t0 = time.monotonic()
        got = await asyncio.gather(
            *(limiter.reserve(f"r{i}", "k1", "acme", 10, 0.01) for i in range(50)),
            return_exceptions=True,
        )
        assert time.monotonic() - t0 < 1.0  # not 50 waits in a row
        for exc in got:
            assert isinstance(exc, GatewayError)
            assert (exc.status, exc.code) == (503, "limits_unavailable")
            assert exc.headers["retry-after"] == "1"
            assert "x-should-retry" not in exc.headers
        problems, warnings = limiter.readiness()
        assert len(problems) == 1 and "limits store down" in problems[0]
        assert warnings == []
        assert f"127.0.0.1:{url.split(':')[2]}" in problems[0]
        text = limiter.render_metrics()
        assert "switchyard_limits_store_up 0\n" in text
        assert "switchyard_limits_store_errors_total 51\n" in text  # 1 start ping + 50 reserves
        assert "switchyard_limits_fail_open_total 0\n" in text
        await limiter.close()

    asyncio.run(main())


def test_open_unreachable_redis_falls_back_to_the_local_limiter() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def main() -> None:
        limiter = make(limits(key_day=1.0), url, "open")
        local = limiter.local
        assert isinstance(local, LocalStandIn)
        await limiter.start()
        r = await limiter.reserve("r1", "k1", "acme", 10, 0.01)
        assert local.reserved == ["r1"]
        limiter.settle(r, 0.01, 10)
        assert local.settled == ["r1"]
        assert await limiter.count_rejected("k1") is None
        problems, warnings = limiter.readiness()
        assert problems == []
        assert len(warnings) == 1 and "enforced by this process alone" in warnings[0]
        assert "switchyard_limits_fail_open_total 1\n" in limiter.render_metrics()
        await limiter.close()

    asyncio.run(main())


def test_redis_stopped_then_back_is_used_again(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path / "redis")

    async def main() -> None:
        limiter = make(limits(key_day=0.05), server.url)
        await limiter.start()
        assert await outcome(limiter, "r1") == "admitted"
        assert limiter.readiness() == ([], [])
        server.stop()
        assert await outcome(limiter, "r2") == "limits_unavailable"
        assert limiter.readiness()[0]
        assert "switchyard_limits_store_up 0\n" in limiter.render_metrics()
        server.resume()
        deadline = time.monotonic() + 5
        while await outcome(limiter, "r3") != "admitted":
            assert time.monotonic() < deadline, "Redis was not used again within 5 s"
            await asyncio.sleep(0.1)
        assert limiter.readiness() == ([], [])
        assert "switchyard_limits_store_up 1\n" in limiter.render_metrics()
        await limiter.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_a_hung_redis_costs_one_reply_timeout_then_fails_fast(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path / "redis")
    assert server.process is not None

    async def burst(limiter: RedisLimiter, tag: str) -> tuple[float, list[str]]:
        t0 = time.monotonic()
        got = await asyncio.gather(*(outcome(limiter, f"{tag}{i}") for i in range(50)))
        return time.monotonic() - t0, list(got)

    async def main() -> None:
        limiter = make(limits(key_day=1.0), server.url)
        await limiter.start()
        assert await outcome(limiter, "r0") == "admitted"
        server.process.send_signal(signal.SIGSTOP)  # accepts TCP, answers nothing
        try:
            took, got = await burst(limiter, "a")
            assert got == ["limits_unavailable"] * 50
            assert 0.4 < took < 1.2  # one reply timeout, shared (not 50)
            took, got = await burst(limiter, "b")
            assert got == ["limits_unavailable"] * 50
            assert took < 0.25  # the backoff: no waiting for Redis at all
            assert limiter.readiness()[0]
        finally:
            server.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 5
        while await outcome(limiter, "c") != "admitted":
            assert time.monotonic() < deadline, "Redis was not used again within 5 s"
            await asyncio.sleep(0.1)
        await limiter.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_a_settle_made_while_redis_was_down_is_applied_when_it_returns(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path / "redis")

    async def main() -> None:
        limiter = make(limits(key_day=0.05), server.url)
        await limiter.start()
        r = await limiter.reserve("r1", "k1", "acme", 10, 0.05)
        server.stop()
        limiter.settle(r, 0.01, 10)
        await asyncio.sleep(0.2)
        server.resume()
        await asyncio.sleep(3.0)  # the health check reconnects and settles
        assert await outcome(limiter, "r2", 0.04) == "admitted"
        assert await outcome(limiter, "r3", 0.01) == "budget_exceeded"
        await limiter.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_no_limit_configured_needs_no_redis_at_all() -> None:
    async def main() -> None:
        limiter = make(limits(), f"redis://127.0.0.1:{free_port()}/0")
        r = await limiter.reserve("r1", "k1", "acme", 10, 0.01)
        assert (r.nano_usd, r.tokens) == (0, 0)
        limiter.settle(r, 0.01, 10)
        await limiter.close()

    asyncio.run(main())


class Seed:
    """The records store's spend of the period, as `seed` reads it (counting its calls)."""

    def __init__(self, key_day: dict[str, float]) -> None:
        self.key_day = key_day
        self.key_month: dict[str, float] = {}
        self.org_day: dict[str, float] = {}
        self.org_month: dict[str, float] = {}
        self.calls = 0

    def __call__(self, day_start: float, month_start: float) -> Seed:
        assert day_start <= time.time() < day_start + 86400
        self.calls += 1
        return self


def test_an_empty_redis_is_seeded_once_from_the_records_by_many_gateways(redis_url: str) -> None:
    async def main() -> None:
        seeds = [Seed({"k1": 0.03}) for _ in range(4)]
        limiters = [
            RedisLimiter(limits(key_day=0.05), "test", redis_url, "closed", LocalStandIn(), seed=s)
            for s in seeds
        ]
        await asyncio.gather(*(lim.start() for lim in limiters))
        assert sum(lim.seeds for lim in limiters) == 2  # the day and the month, once each
        got = await asyncio.gather(
            *(outcome(lim, f"r{i}-{j}") for i, lim in enumerate(limiters) for j in range(5))
        )
        assert got.count("admitted") == 2  # $0.03 spent before: room for $0.02
        for lim in limiters:
            await lim.close()

    asyncio.run(main())


def test_a_flushed_redis_is_seeded_again(redis_url: str) -> None:
    async def main() -> None:
        seed = Seed({"k1": 0.05})
        limiter = RedisLimiter(
            limits(key_day=0.05), "test", redis_url, "closed", LocalStandIn(), seed=seed
        )
        await limiter.start()
        assert await outcome(limiter, "r1") == "budget_exceeded"
        await limiter.client.execute("FLUSHDB")
        assert await outcome(limiter, "r2") == "admitted"  # until the health check reseeds
        await asyncio.sleep(1.5)
        assert seed.calls == 2
        assert await outcome(limiter, "r3") == "budget_exceeded"
        await limiter.close()

    asyncio.run(main())


def test_a_bad_url_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as exc:
        make(limits(), "rediss://:hunter2@cache:6380/0")
    assert str(exc.value).startswith("state.limits.url_secret: rediss:// (TLS) is not supported")
    assert "hunter2" not in str(exc.value)
