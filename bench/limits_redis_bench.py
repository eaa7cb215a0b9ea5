"""Reserve + settle pairs per second through `RedisLimiter` from one process.

    python bench/limits_redis_bench.py redis://127.0.0.1:6379/0 [--tasks 16] [--seconds 5]

`--tasks` coroutines each loop reserve (one EVALSHA) then settle (one more, scheduled) with
every limit on: requests and tokens per minute, a key and an org budget per day and month (the
most work the scripts do). Distinct keys, so no request is refused. Prints pairs per second
and the reserve latency percentiles. It writes keys under `sy:bench:` (they expire).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from runtime.config import Budget, Limits
from runtime.errors import GatewayError
from runtime.limits import Reservation
from runtime.limits_redis import RedisLimiter


class _NoLocal:
    """The local fallback: never used while Redis answers."""

    async def reserve(
        self, request_id: str, key_id: str, org: str, est_tokens: int, worst: float | None
    ) -> Reservation:
        raise GatewayError(503, "limits_unavailable", "Redis is down during the benchmark")

    async def count_rejected(self, key_id: str) -> GatewayError | None:
        return None

    def settle(self, reservation: Reservation, cost_usd: float | None, tokens: int) -> None:
        pass

    def readiness(self) -> tuple[list[str], list[str]]:
        return [], []

    def render_metrics(self) -> str:
        return ""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def bench(url: str, tasks: int, seconds: float) -> None:
    big = Budget(1e6, 1e7)
    limits = Limits(10**9, 10**12, big, big, {})
    limiter = RedisLimiter(limits, "bench", url, "closed", _NoLocal())
    await limiter.start()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    count = 0

    async def loop(t: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < stop:
            i += 1
            t0 = time.perf_counter()
            r = await limiter.reserve(f"b{t}-{i}", f"key{t}", f"org{t % 4}", 500, 0.002)
            latencies.append(time.perf_counter() - t0)
            limiter.settle(r, 0.001, 400)
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(t) for t in range(tasks)))
    await limiter.close()  # waits for the settles still in flight
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{tasks} tasks, {elapsed:.1f} s: {count / elapsed:,.0f} reserve+settle pairs/s; "
        f"reserve latency p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms; "
        f"store errors {limiter.errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(bench(args.url, args.tasks, args.seconds))


if __name__ == "__main__":
    main()
