"""Per-key rate limits and per-key / per-org budgets, enforced in memory on the hot path.

Rate limits are token buckets per key in this process. A replica runs `workers` processes
and the kernel spreads connections over them, so each process enforces its share
(limit / workers); the sum is the configured limit (docs/runtime.md says so).

Budgets need spend across processes and restarts: the request log is the source of truth.
`refresh(spend)` sets the totals read from it (every few seconds, off the event loop), and
`charge()` adds what this process spent since, so a burst cannot run far past a budget.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from typing import Protocol

from runtime.config import Budget, Limits
from runtime.errors import GatewayError


@dataclass(slots=True)
class Reservation:
    """What `Limiter.reserve` took for one request, given back to `Limiter.settle`.

    `nano_usd`: the worst-case cost reserved, in nano-USD (round(usd * 1e9); 0 = none);
    `tokens`: tokens taken from the tokens-per-minute bucket; `day_start`, `month_start`: the
    UTC periods it was reserved in.
    """

    request_id: str
    key_id: str
    org: str
    nano_usd: int
    tokens: int
    day_start: float
    month_start: float


class Limiter(Protocol):
    """Rate limits and budget reservations of the gateway (in this process, or in Redis)."""

    async def reserve(
        self,
        request_id: str,
        key_id: str,
        org: str,
        est_tokens: int,
        worst_cost_usd: float | None,
    ) -> Reservation:
        """Take one request from requests-per-minute, `est_tokens` from tokens-per-minute and
        `worst_cost_usd` from every budget that applies (key day/month, org day/month),
        atomically; raises GatewayError 429 (`rate_limit_exceeded`,
        `token_rate_limit_exceeded`, `budget_exceeded`, with Retry-After) or 503
        `limits_unavailable`."""
        ...

    async def count_rejected(self, key_id: str) -> GatewayError | None:
        """Take one request from requests-per-minute for a request refused after
        authentication; the 429 to answer instead when over the limit, else None."""
        ...

    def settle(self, reservation: Reservation, cost_usd: float | None, tokens: int) -> None:
        """Replace the reservation by the real cost and tokens; never raises, never blocks."""
        ...

    def readiness(self) -> tuple[list[str], list[str]]:
        """(problems, warnings) for /readyz."""
        ...

    def render_metrics(self) -> str:
        """Prometheus text of the limiter's own metrics; may be empty."""
        ...

    async def start(self) -> None:
        """Open what the limiter needs (called once, in the app's lifespan)."""
        ...

    async def close(self) -> None:
        """Release it."""
        ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class SpendTotals:
    day_start: float = 0.0
    month_start: float = 0.0
    key_day: dict[str, float] = field(default_factory=dict)
    key_month: dict[str, float] = field(default_factory=dict)
    org_day: dict[str, float] = field(default_factory=dict)
    org_month: dict[str, float] = field(default_factory=dict)


_PERIODS: tuple[float, float, float] = (0.0, 0.0, -1.0)  # day start, month start, valid until


def period_starts(now: float) -> tuple[float, float]:
    """Unix times of the start of the current UTC day and calendar month (cached per day)."""
    global _PERIODS
    day, month, until = _PERIODS
    if day <= now < until:
        return day, month
    day, month = _period_starts(now)
    _PERIODS = (day, month, day + 86400.0)
    return day, month


def _period_starts(now: float) -> tuple[float, float]:
    t = time.gmtime(now)
    day = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    month = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    return float(day), float(month)


class LimitState:
    """Rate-limit buckets and budget totals of one process."""

    def __init__(self, limits: Limits, workers: int = 1) -> None:
        self.limits = limits
        share = max(1, workers)
        self.rpm = (
            None
            if limits.requests_per_minute is None
            else max(1.0, limits.requests_per_minute / share)
        )
        self.tpm = (
            None if limits.tokens_per_minute is None else max(1.0, limits.tokens_per_minute / share)
        )
        self.req_buckets: dict[str, _Bucket] = {}
        self.tok_buckets: dict[str, _Bucket] = {}
        self.spend = SpendTotals()

    def check(self, key_id: str, org: str, est_tokens: int, now: float) -> None:
        """Admit one request or raise a 429 GatewayError with Retry-After.

        `now` is a monotonic clock for the rate buckets; budget periods are UTC days and months,
        so they are checked against the wall clock.
        """
        if self.rpm is not None:
            wait = _take(self.req_buckets, key_id, self.rpm, 1.0, now)
            if wait:
                raise _limited(
                    "rate_limit_exceeded",
                    "this key is over its limit of "
                    f"{self.limits.requests_per_minute} requests per minute",
                    wait,
                )
        if self.tpm is not None:
            wait = _take(self.tok_buckets, key_id, self.tpm, float(min(est_tokens, self.tpm)), now)
            if wait:
                raise _limited(
                    "token_rate_limit_exceeded",
                    "this key is over its limit of "
                    f"{self.limits.tokens_per_minute} tokens per minute",
                    wait,
                )
        self._check_budgets(key_id, org, time.time())

    def add_tokens(self, key_id: str, tokens: int, now: float) -> None:
        """Charge tokens the estimate did not cover (the real output) to the key's bucket."""
        if self.tpm is not None and tokens > 0:
            b = self.tok_buckets.get(key_id)
            if b is not None:
                b.tokens -= tokens

    def charge(self, key_id: str | None, org: str | None, cost: float | None) -> None:
        if not cost:
            return
        s = self.spend
        if key_id:
            s.key_day[key_id] = s.key_day.get(key_id, 0.0) + cost
            s.key_month[key_id] = s.key_month.get(key_id, 0.0) + cost
        if org:
            s.org_day[org] = s.org_day.get(org, 0.0) + cost
            s.org_month[org] = s.org_month.get(org, 0.0) + cost

    def refresh(self, totals: SpendTotals) -> None:
        """Replace spend with totals read from the request log."""
        self.spend = totals

    def _check_budgets(self, key_id: str, org: str, now: float) -> None:
        s = self.spend
        day_start, month_start = period_starts(now)
        if s.day_start != day_start:
            # A new UTC day (or month) began since the totals were read: start from zero.
            s.day_start, s.key_day, s.org_day = day_start, {}, {}
        if s.month_start != month_start:
            s.month_start, s.key_month, s.org_month = month_start, {}, {}
        _over(
            self.limits.key_budget,
            s.key_day.get(key_id, 0.0),
            s.key_month.get(key_id, 0.0),
            "key",
            now,
        )
        _over(
            self.limits.budget_of_org(org),
            s.org_day.get(org, 0.0),
            s.org_month.get(org, 0.0),
            f"org '{org}'",
            now,
        )


def _take(
    buckets: dict[str, _Bucket], key: str, per_minute: float, amount: float, now: float
) -> float:
    """Take `amount` from the key's bucket; 0 if admitted, else seconds until it would be."""
    b = buckets.get(key)
    rate = per_minute / 60.0
    if b is None:
        b = buckets[key] = _Bucket(per_minute, now)
    else:
        b.tokens = min(per_minute, b.tokens + (now - b.updated) * rate)
        b.updated = now
    if b.tokens >= amount:
        b.tokens -= amount
        return 0.0
    return (amount - b.tokens) / rate


def _over(budget: Budget, day: float, month: float, who: str, now: float) -> None:
    if budget.usd_per_day is not None and day >= budget.usd_per_day:
        day_start, _ = period_starts(now)
        raise _limited(
            "budget_exceeded",
            f"the {who} has spent its daily budget of ${budget.usd_per_day:g}",
            day_start + 86400 - now,
        )
    if budget.usd_per_month is not None and month >= budget.usd_per_month:
        t = time.gmtime(now)
        y, m = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        raise _limited(
            "budget_exceeded",
            f"the {who} has spent its monthly budget of ${budget.usd_per_month:g}",
            calendar.timegm((y, m, 1, 0, 0, 0)) - now,
        )


def _limited(code: str, message: str, wait: float) -> GatewayError:
    return GatewayError(429, code, message, headers={"retry-after": str(max(1, int(wait + 0.999)))})
