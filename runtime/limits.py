"""Per-key rate limits and per-key / per-org budgets: the `Limiter` interface and the
in-process `LocalLimiter` (the embedded default, `state.limits_store: memory`).

Rate limits are token buckets per key in this process. A replica runs `workers` processes
and the kernel spreads connections over them, so each process enforces its share
(limit / workers); the sum is the configured limit (docs/runtime.md "Limits and budgets").

Budgets hold under concurrency: `reserve` takes a request's worst-case cost (the router's
`RoutePlan.worst_cost_usd`) from every budget that applies BEFORE the upstream call, and
`settle` replaces it by the real cost afterwards. All money is integer nano-USD, so five
$0.01 worst cases fit a $0.05 budget exactly. What a budget has used is

    spend of OTHER processes, read from the request log every few seconds (`read_spend`)
  + this process's settled costs (exact, kept in memory per UTC day and month)
  + this process's outstanding reservations.

The log read excludes this process's own records (by their request-id prefix), so a record
still in the writer's queue is neither lost nor counted twice. `reserve` and `settle` are a
few dict operations and never yield to the event loop. runtime/limits_redis.py implements the
same interface over Redis, for limits shared by replicas and hosts.
"""

from __future__ import annotations

import asyncio
import calendar
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from runtime.config import Budget, ConfigError, Limits
from runtime.errors import GatewayError

if TYPE_CHECKING:
    from runtime.config import RuntimeConfig

log = logging.getLogger("switchyard")

NANO = 1_000_000_000  # nano-USD per USD
SPEND_REFRESH_S = 5.0  # how often the spend of other processes is read from the request log


def to_nano(usd: float | None) -> int:
    """USD as integer nano-USD (`round(usd * 1e9)`); None and negatives are 0."""
    if not usd or usd < 0:
        return 0
    return round(usd * NANO)


@dataclass(slots=True)
class Reservation:
    """What `Limiter.reserve` took for one request, handed back to `settle`."""

    request_id: str
    key_id: str
    org: str
    nano_usd: int  # worst-case cost reserved, nano-USD (0: none)
    tokens: int  # taken from the tokens-per-minute bucket
    day_start: float  # the UTC day and month it was reserved in
    month_start: float


class Limiter(Protocol):
    """Rate limits and budget reservations of a gateway process (`Services.limits`)."""

    async def reserve(
        self,
        request_id: str,
        key_id: str,
        org: str,
        est_tokens: int,
        worst_cost_usd: float | None,
    ) -> Reservation:
        """Take one request from requests-per-minute, `est_tokens` from tokens-per-minute and
        the worst-case cost from every budget that applies, atomically; raise GatewayError
        429 (rate_limit_exceeded / token_rate_limit_exceeded / budget_exceeded, with
        Retry-After) or 503 limits_unavailable."""
        ...

    async def count_rejected(self, key_id: str) -> GatewayError | None:
        """Count a request refused after authentication against requests-per-minute; the 429
        to answer instead when the key is over its limit."""
        ...

    def settle(self, reservation: Reservation, cost_usd: float | None, tokens: int) -> None:
        """Replace a reservation by the real cost and tokens; never raises, never blocks."""
        ...

    def readiness(self) -> tuple[list[str], list[str]]:
        """(problems, warnings) for /readyz."""
        ...

    def render_metrics(self) -> str:
        """Prometheus text of the limiter's own metrics (may be empty)."""
        ...

    async def start(self) -> None:
        """Start background work (the spend refresh)."""
        ...

    async def close(self) -> None:
        """Stop background work."""
        ...


class SpendLike(Protocol):
    """Known cost (USD) since the start of the day and of the month, per key id and per org
    (runtime.records.Spend; the PostgreSQL records store returns the same shape)."""

    @property
    def key_day(self) -> Mapping[str, float]: ...
    @property
    def key_month(self) -> Mapping[str, float]: ...
    @property
    def org_day(self) -> Mapping[str, float]: ...
    @property
    def org_month(self) -> Mapping[str, float]: ...


# read_spend(day_start, month_start): the spend of every OTHER process from the request log
# (the gateway binds the store and excludes this process's request-id prefix). Runs in a
# thread; may block and may raise.
ReadSpend = Callable[[float, float], SpendLike]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class _Ledger:
    """Nano-USD per key and per org, for the current UTC day and month."""

    key_day: dict[str, int] = field(default_factory=dict)
    key_month: dict[str, int] = field(default_factory=dict)
    org_day: dict[str, int] = field(default_factory=dict)
    org_month: dict[str, int] = field(default_factory=dict)

    def add(self, key_id: str, org: str, nano: int, day: bool, month: bool) -> None:
        if day:
            self.key_day[key_id] = self.key_day.get(key_id, 0) + nano
            self.org_day[org] = self.org_day.get(org, 0) + nano
        if month:
            self.key_month[key_id] = self.key_month.get(key_id, 0) + nano
            self.org_month[org] = self.org_month.get(org, 0) + nano

    def new_day(self) -> None:
        self.key_day, self.org_day = {}, {}

    def new_month(self) -> None:
        self.key_month, self.org_month = {}, {}


def _sum(*parts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for name, nano in part.items():
            out[name] = out.get(name, 0) + nano
    return out


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


def month_end(now: float) -> float:
    """Unix time of the start of the next UTC calendar month."""
    t = time.gmtime(now)
    y, m = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((y, m, 1, 0, 0, 0)))


def _nano_budget(budget: Budget) -> tuple[int | None, int | None]:
    day, month = budget.usd_per_day, budget.usd_per_month
    return (
        None if day is None else round(day * NANO),
        None if month is None else round(month * NANO),
    )


class LocalLimiter:
    """Rate-limit buckets and budget reservations of one process (the `memory` store)."""

    def __init__(
        self,
        limits: Limits,
        workers: int = 1,
        read_spend: ReadSpend | None = None,
        refresh_s: float = SPEND_REFRESH_S,
    ) -> None:
        """`read_spend` feeds the spend of other processes (None: this process's only)."""
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
        self._key_budget = _nano_budget(limits.key_budget)
        self._org_default = _nano_budget(limits.org_budget)
        self._org_budgets = {org: _nano_budget(b) for org, b in limits.org_budgets.items()}
        self.has_budgets = any(
            v is not None
            for pair in (self._key_budget, self._org_default, *self._org_budgets.values())
            for v in pair
        )
        self._day_start, self._month_start = period_starts(time.time())
        self._base = _Ledger()  # other processes, from the request log
        self._own = _Ledger()  # this process's settled costs
        self._used = _Ledger()  # base + own + outstanding reservations: what admission compares
        self._outstanding: dict[str, Reservation] = {}  # by request id
        self.read_spend = read_spend
        self.refresh_s = refresh_s
        self.refresh_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the request path -----------------------------------------------------------------

    async def reserve(
        self,
        request_id: str,
        key_id: str,
        org: str,
        est_tokens: int,
        worst_cost_usd: float | None,
    ) -> Reservation:
        """Admit one request or raise a 429 GatewayError with Retry-After (never yields)."""
        return self.reserve_now(request_id, key_id, org, est_tokens, worst_cost_usd)

    def reserve_now(
        self,
        request_id: str,
        key_id: str,
        org: str,
        est_tokens: int,
        worst_cost_usd: float | None,
        now: float | None = None,
    ) -> Reservation:
        """`reserve` as a plain call (`now`: a monotonic time for the buckets, for tests)."""
        mono = time.monotonic() if now is None else now
        if self.rpm is not None:
            wait = _take(self.req_buckets, key_id, self.rpm, 1.0, mono)
            if wait:
                raise self._rpm_error(wait)
        taken = 0
        if self.tpm is not None:
            amount = min(est_tokens, int(self.tpm)) if est_tokens > 0 else 0
            wait = _take(self.tok_buckets, key_id, self.tpm, float(amount), mono)
            if wait:
                raise _limited(
                    "token_rate_limit_exceeded",
                    "this key is over its limit of "
                    f"{self.limits.tokens_per_minute} tokens per minute",
                    wait,
                )
            taken = amount
        if not self.has_budgets:
            return Reservation(request_id, key_id, org, 0, taken, 0.0, 0.0)
        wall = time.time()
        self._roll(wall)
        worst = None if worst_cost_usd is None else to_nano(worst_cost_usd)
        refusal = self._over(key_id, org, worst, wall)
        if refusal is not None:
            if taken:
                self.tok_buckets[key_id].tokens += taken
            raise refusal
        nano = worst or 0
        if nano:
            self._used.add(key_id, org, nano, True, True)
        res = Reservation(request_id, key_id, org, nano, taken, self._day_start, self._month_start)
        self._outstanding[request_id] = res
        return res

    async def count_rejected(self, key_id: str) -> GatewayError | None:
        """Take one request from the key's requests-per-minute; the 429 when over."""
        return self.count_rejected_now(key_id)

    def count_rejected_now(self, key_id: str, now: float | None = None) -> GatewayError | None:
        """`count_rejected` as a plain call (`now`: a monotonic time, for tests)."""
        if self.rpm is None:
            return None
        wait = _take(
            self.req_buckets, key_id, self.rpm, 1.0, time.monotonic() if now is None else now
        )
        return self._rpm_error(wait) if wait else None

    def settle(self, reservation: Reservation, cost_usd: float | None, tokens: int) -> None:
        """Replace the reservation by the real cost and tokens (idempotent, never raises)."""
        try:
            self._settle(reservation, cost_usd, tokens)
        except Exception:  # a bug here must not turn a served request into an error
            log.exception("settling the limits of %s failed", reservation.request_id)

    def _settle(self, res: Reservation, cost_usd: float | None, tokens: int) -> None:
        if self.tpm is not None:
            b = self.tok_buckets.get(res.key_id)
            if b is not None and tokens > res.tokens:
                # Tokens beyond the estimate are taken now; an unused estimate is not given
                # back (as OpenAI counts max_tokens against its own tokens-per-minute).
                b.tokens -= tokens - res.tokens
        if self._outstanding.pop(res.request_id, None) is None:
            return  # no budgets, or settled already
        self._roll(time.time())
        day = res.day_start == self._day_start
        month = res.month_start == self._month_start
        cost = to_nano(cost_usd)
        if cost != res.nano_usd:
            self._used.add(res.key_id, res.org, cost - res.nano_usd, day, month)
        if cost:
            self._own.add(res.key_id, res.org, cost, day, month)

    # --- budgets --------------------------------------------------------------------------

    def _roll(self, wall: float) -> None:
        """Start from zero when a new UTC day or month began."""
        day, month = period_starts(wall)
        if day != self._day_start:
            self._day_start = day
            for ledger in (self._base, self._own, self._used):
                ledger.new_day()
        if month != self._month_start:
            self._month_start = month
            for ledger in (self._base, self._own, self._used):
                ledger.new_month()

    def _over(self, key_id: str, org: str, worst: int | None, wall: float) -> GatewayError | None:
        u = self._used
        need = 0 if worst is None else worst
        key_day, key_month = self._key_budget
        org_day, org_month = self._org_budgets.get(org, self._org_default)
        for budget, table, name, daily, of_key in (
            (key_day, u.key_day, key_id, True, True),
            (key_month, u.key_month, key_id, False, True),
            (org_day, u.org_day, org, True, False),
            (org_month, u.org_month, org, False, False),
        ):
            if budget is None:
                continue
            used = table.get(name, 0)
            if used + need <= budget and (worst is not None or used < budget):
                continue
            who = "key" if of_key else f"org '{org}'"
            period = "daily" if daily else "monthly"
            left = max(0, budget - used) / NANO
            if worst is None:
                why = "none is left for a request whose cost cannot be estimated (unpriced)"
            else:
                why = (
                    f"this request reserves its worst-case cost of ${worst / NANO:.6g}"
                    " (a smaller max_tokens reserves less)"
                )
            end = self._day_start + 86400.0 if daily else month_end(wall)
            return _limited(
                "budget_exceeded",
                f"the {period} budget of the {who} (${budget / NANO:g}) has ${left:.6g} left"
                f" after what was spent and what requests in flight reserved; {why}",
                end - wall,
            )
        return None

    def refresh(self, spend: SpendLike, day_start: float, month_start: float) -> None:
        """Take the spend of other processes read from the log for the given periods (on the
        event loop: it rebuilds what admission compares)."""
        self._roll(time.time())
        base = _Ledger()
        if day_start == self._day_start:
            base.key_day = {k: to_nano(v) for k, v in spend.key_day.items()}
            base.org_day = {k: to_nano(v) for k, v in spend.org_day.items()}
        else:
            base.key_day, base.org_day = self._base.key_day, self._base.org_day
        if month_start == self._month_start:
            base.key_month = {k: to_nano(v) for k, v in spend.key_month.items()}
            base.org_month = {k: to_nano(v) for k, v in spend.org_month.items()}
        else:
            base.key_month, base.org_month = self._base.key_month, self._base.org_month
        self._base = base
        own, held = self._own, _Ledger()
        for r in self._outstanding.values():
            if r.nano_usd:
                day, month = r.day_start == self._day_start, r.month_start == self._month_start
                held.add(r.key_id, r.org, r.nano_usd, day, month)
        self._used = _Ledger(
            _sum(base.key_day, own.key_day, held.key_day),
            _sum(base.key_month, own.key_month, held.key_month),
            _sum(base.org_day, own.org_day, held.org_day),
            _sum(base.org_month, own.org_month, held.org_month),
        )

    def used_nano(self, key_id: str, org: str) -> tuple[int, int, int, int]:
        """(key day, key month, org day, org month) used: spent and reserved, nano-USD."""
        u = self._used
        return (
            u.key_day.get(key_id, 0),
            u.key_month.get(key_id, 0),
            u.org_day.get(org, 0),
            u.org_month.get(org, 0),
        )

    # --- lifecycle, readiness, metrics ----------------------------------------------------

    async def start(self) -> None:
        """Read the spend once, then refresh it every `refresh_s` from a daemon thread."""
        if not self.has_budgets or self.read_spend is None:
            return
        loop = asyncio.get_running_loop()
        try:
            day, month = period_starts(time.time())
            spend = await loop.run_in_executor(None, self.read_spend, day, month)
            self.refresh(spend, day, month)
        except Exception as exc:
            self.refresh_failures += 1
            log.warning("could not read spend for budgets: %s", exc)
        self._thread = threading.Thread(
            target=self._refresh_loop, args=(loop,), name="spend-refresh", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        read = self.read_spend
        assert read is not None
        while not self._stop.wait(self.refresh_s):
            day, month = period_starts(time.time())
            try:
                spend = read(day, month)
            except Exception as exc:  # the log may be briefly locked; keep the last totals
                self.refresh_failures += 1
                log.warning("could not read spend for budgets: %s", exc)
                continue
            try:
                loop.call_soon_threadsafe(self.refresh, spend, day, month)
            except RuntimeError:  # the loop closed: the process is stopping
                return

    async def close(self) -> None:
        """Stop the refresh thread."""
        self._stop.set()

    def readiness(self) -> tuple[list[str], list[str]]:
        """In-process limits are always available: no problems, no warnings."""
        return [], []

    def render_metrics(self) -> str:
        """Outstanding reservations and failed spend reads, when budgets are configured."""
        if not self.has_budgets:
            return ""
        return (
            "# HELP switchyard_budget_reservations Budget reservations of requests in flight.\n"
            "# TYPE switchyard_budget_reservations gauge\n"
            f"switchyard_budget_reservations {len(self._outstanding)}\n"
            "# HELP switchyard_spend_refresh_failures_total"
            " Failed reads of the spend of other processes from the request log.\n"
            "# TYPE switchyard_spend_refresh_failures_total counter\n"
            f"switchyard_spend_refresh_failures_total {self.refresh_failures}\n"
        )

    def _rpm_error(self, wait: float) -> GatewayError:
        return _limited(
            "rate_limit_exceeded",
            f"this key is over its limit of {self.limits.requests_per_minute} requests per minute",
            wait,
        )


def build_limiter(
    config: RuntimeConfig,
    environ: Mapping[str, str],
    read_spend: ReadSpend | None,
    seed: ReadSpend | None = None,
) -> Limiter:
    """The limiter of `config.state.limits_store`: a LocalLimiter (`memory`) fed by
    `read_spend` (the spend of the other processes), or a RedisLimiter at the URL in secret
    `state.redis_url_secret` with that LocalLimiter for its fallback (`redis`), which fills an
    empty Redis from `seed` (the spend of every process)."""
    local = LocalLimiter(config.limits, config.workers, read_spend)
    state = config.state
    if state.limits_store != "redis":
        return local
    name = state.redis_url_secret
    url = environ.get(name, "") if name else ""
    if not url:
        raise ConfigError(
            f"state.limits.store is redis but secret {name or '(url_secret unset)'} is not set;"
            " set it to the Redis URL (redis://host:port/db)"
        )
    # Imported only when configured (runtime/limits_redis.py, and the Redis client it needs).
    redis_limiter = importlib.import_module("runtime.limits_redis").RedisLimiter
    limiter: Limiter = redis_limiter(
        config.limits,
        config.environment,
        url,
        state.on_redis_unavailable,
        local,
        # A reservation outlives the longest request, then lapses (a crashed gateway's).
        hold_s=config.request_timeout_s + 60.0,
        seed=seed,
    )
    return limiter


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


def _limited(code: str, message: str, wait: float) -> GatewayError:
    return GatewayError(429, code, message, headers={"retry-after": str(max(1, int(wait + 0.999)))})
