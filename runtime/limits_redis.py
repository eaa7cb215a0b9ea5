"""`RedisLimiter`: rate limits and budget reservations shared by every process, replica and host.

Each `reserve` is one Lua script run (one round trip, pipelined with the other requests of the
same loop iteration); each `settle` another, scheduled as a task. Both use the server's clock
(`TIME`), so the gateways' clocks do not matter for rate limits.

Keys, all under `sy:<environment>:` (so environments can share a Redis):
- `rpm:<key id>`, `tpm:<key id>`: token buckets (hash `t` tokens, `u` updated ms), 2 min TTL;
- `spend:key:<key id>:day:<YYYY-MM-DD>` (and `:month:<YYYY-MM>`, and `spend:org:<org>:...`):
  hash of `spent` (settled nano-USD) and `held` (live reservations, nano-USD); day keys live
  2 days, month keys 35 days (set when the hash is created);
- `holds`: one sorted set of the environment's live reservations,
  `<request id>|<nano-USD>|<budget hash>;<budget hash>...`, scored by the hold's expiry (ms);
- `settled:<request id>`: the mark that makes `settle` idempotent (2 days).

A budget admits a request iff spent + held + worst case <= budget, in integer nano-USD; a
request of unknown worst-case cost is admitted iff spent + held < budget. A hold lapses at
request timeout + margin (`hold_s`): the admit script first drops the lapsed holds (and gives
their amounts back to the budgets they name), so a crashed gateway's reservations free
themselves. One holds set for every budget keeps a request's work in Redis small: about 17
commands to admit with four budgets (key and org, day and month) and 10 to settle.

Requests-per-minute counts every request that arrives (a request refused for tokens or budget
took its request); tokens-per-minute and budgets are taken only when all of them admit.

When Redis cannot be used (`RedisUnavailable`, or an error reply such as OOM or READONLY),
`on_unavailable: closed` answers 503 `limits_unavailable` with Retry-After, `open` admits by
the `local` limiter of this process; both show in `readiness()` and `render_metrics()`.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from runtime.config import Budget, ConfigError, Limits
from runtime.errors import GatewayError
from runtime.limits import Limiter, Reservation, period_starts
from runtime.redis_client import Arg, RedisClient, RedisError, RedisReplyError, Reply, Script

NANO = 1_000_000_000
DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 35 * 86400
SETTLED_TTL_S = 2 * 86400
HEALTH_INTERVAL_S = 1.0
UNSETTLED_MAX = 10_000
LOCAL_IDS_MAX = 100_000
BUDGET_CACHE_MAX = 10_000

# Shared by both scripts: the bucket at `now` (ms), refilled at cap per minute.
_BUCKET = """
local function bucket(key, cap, now)
  local b = redis.call('HMGET', key, 't', 'u')
  local tokens = tonumber(b[1])
  if tokens == nil then return cap end
  return math.min(cap, tokens + (now - tonumber(b[2])) * cap / 60000)
end
local function store(key, tokens, now)
  redis.call('HSET', key, 't', tostring(tokens), 'u', now)
  redis.call('PEXPIRE', key, 120000)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: rpm bucket, tpm bucket, holds set, then one spend hash per budget.
# ARGV: rpm cap (0: none), tpm cap (0: none), tokens, worst nano (-1: unknown), request id,
#       hold ms, budgets n, then (limit nano, ttl s) per budget, then the hold's member.
# Returns {0, tokens taken} | {1, wait ms} rpm | {2, wait ms} tpm | {3, i, spent, held}.
ADMIT = Script(
    _BUCKET
    + """
local rpm, tpm, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm > 0 then
  local have = bucket(KEYS[1], rpm, now)
  if have < 1 then return {1, math.ceil((1 - have) * 60000 / rpm)} end
  store(KEYS[1], have - 1, now)
end
local tok = 0
if tpm > 0 then
  want = math.min(want, tpm)
  tok = bucket(KEYS[2], tpm, now)
  if tok < want then return {2, math.ceil((want - tok) * 60000 / tpm)} end
end
local worst, n = tonumber(ARGV[4]), tonumber(ARGV[7])
if n > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #lapsed > 0 then
    for _, m in ipairs(lapsed) do
      local amount, hashes = string.match(m, '^[^|]*|(%d+)|(.*)$')
      if amount then
        for h in string.gmatch(hashes, '[^;]+') do
          redis.call('HINCRBY', h, 'held', -tonumber(amount))
        end
      end
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  end
end
local fresh = {}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[3 + i], 'spent', 'held')
  fresh[i] = v[1] == false and v[2] == false
  local spent, held = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local limit = tonumber(ARGV[6 + 2 * i])
  if (worst >= 0 and spent + held + worst > limit) or (worst < 0 and spent + held >= limit) then
    return {3, i, spent, held}
  end
end
if tpm > 0 then store(KEYS[2], tok - want, now) else want = 0 end
if worst > 0 and n > 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[8 + 2 * n])
  redis.call('EXPIRE', KEYS[3], """
    + str(MONTH_TTL_S)
    + """)
  for i = 1, n do
    redis.call('HINCRBY', KEYS[3 + i], 'held', worst)
    if fresh[i] then redis.call('EXPIRE', KEYS[3 + i], ARGV[7 + 2 * i]) end
  end
end
return {0, want}
"""
)

# KEYS: settled mark, tpm bucket, holds set, then one spend hash per budget.
# ARGV: request id, held nano, cost nano, token delta (real - reserved), tpm cap (0: none),
#       budgets n, then ttl s per budget, then the hold's member.
# Returns 1 when applied, 0 when this reservation was settled before.
SETTLE = Script(
    _BUCKET
    + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', """
    + str(SETTLED_TTL_S)
    + """) then return 0 end
local held, cost, delta, tpm = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local release = held > 0 and n > 0 and redis.call('ZREM', KEYS[3], ARGV[7 + n]) == 1
for i = 1, n do
  local h = KEYS[3 + i]
  if release then redis.call('HINCRBY', h, 'held', -held) end
  if cost > 0 and redis.call('HINCRBY', h, 'spent', cost) == cost then
    redis.call('EXPIRE', h, ARGV[6 + i])  -- the hash was made anew (a flushed Redis)
  end
end
if tpm > 0 and delta ~= 0 then
  store(KEYS[2], math.min(tpm, bucket(KEYS[2], tpm, now) - delta), now)
end
return 1
"""
)


# KEYS: the period's seeded mark, then spend hashes; ARGV: the period's TTL, then nano-USD.
# Applied by the first gateway to set the mark (SET NX), never twice.
SEED = Script(
    """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'spent', ARGV[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
"""
)


class Spend(Protocol):
    """Known spend in USD of the current UTC day and month per key and per org, as read from
    the records store (the shape of runtime.limits's spend totals)."""

    @property
    def key_day(self) -> Mapping[str, float]: ...
    @property
    def key_month(self) -> Mapping[str, float]: ...
    @property
    def org_day(self) -> Mapping[str, float]: ...
    @property
    def org_month(self) -> Mapping[str, float]: ...


@dataclass(frozen=True, slots=True)
class _Applied:
    """One budget that applies to a request: its Redis key, limit and how to name it."""

    key: str
    limit: int
    ttl: int
    who: str
    period: str  # "daily" | "monthly"
    usd: float


class RedisLimiter:
    """The `Limiter` of an environment whose `state.limits_store` is `redis`.

    `url` is Redis's URL (read from the secret by the caller; never logged), `on_unavailable`
    `closed` or `open`, `local` the in-process limiter used while Redis is down in `open` mode.
    `hold_s`: how long a reservation holds budget when its request never settles (a crashed
    gateway): the request timeout plus a margin. `seed(day_start, month_start)`, when given,
    reads the period's spend from the records store (blocking: it runs in a thread); it fills
    a Redis that has no spend for the current day or month (new or flushed), once for all
    gateways.
    """

    def __init__(
        self,
        limits: Limits,
        environment: str,
        url: str,
        on_unavailable: str,
        local: Limiter,
        *,
        hold_s: float = 360.0,
        seed: Callable[[float, float], Spend] | None = None,
        connect_timeout_s: float = 0.5,
        command_timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits
        self.prefix = f"sy:{environment}:"
        self.holds = f"{self.prefix}holds"
        try:
            self.client = RedisClient(
                url, connect_timeout_s=connect_timeout_s, command_timeout_s=command_timeout_s
            )
        except ValueError as exc:
            raise ConfigError(f"state.limits.url_secret: {exc}") from None
        self.fail_open = on_unavailable == "open"
        self.local = local
        self.hold_ms = max(1, int(hold_s * 1000))
        self.clock = clock
        self.seed = seed
        self.seeds = 0  # periods this process seeded
        self.rpm = limits.requests_per_minute or 0
        self.tpm = limits.tokens_per_minute or 0
        self.errors = 0
        self.fail_open_total = 0
        self._local_ids: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: list[tuple[Reservation, int, int]] = []
        self._drain_scheduled = False
        self._budget_cache: dict[tuple[str, str, float, float], list[_Applied]] = {}
        self._unsettled: deque[tuple[Reservation, int, int]] = deque(maxlen=UNSETTLED_MAX)
        self._health: asyncio.Task[None] | None = None
        self._labels: dict[float, str] = {}

    # -- the Limiter interface ---------------------------------------------------------------

    async def reserve(
        self,
        request_id: str,
        key_id: str,
        org: str,
        est_tokens: int,
        worst_cost_usd: float | None,
    ) -> Reservation:
        """Admit one request atomically in Redis (see the module docstring) or raise."""
        now = self.clock()
        day_start, month_start = period_starts(now)
        budgets = self._budgets(key_id, org, day_start, month_start)
        worst = -1 if worst_cost_usd is None else max(0, round(worst_cost_usd * NANO))
        if not self.rpm and not self.tpm and not budgets:
            return Reservation(request_id, key_id, org, 0, 0, day_start, month_start)
        keys = [f"{self.prefix}rpm:{key_id}", f"{self.prefix}tpm:{key_id}", self.holds]
        args: list[Arg] = [
            self.rpm,
            self.tpm,
            max(0, est_tokens),
            worst,
            request_id,
            self.hold_ms,
            len(budgets),
        ]
        for b in budgets:
            keys.append(b.key)
            args += (b.limit, b.ttl)
        args.append(_member(request_id, worst, budgets))
        try:
            reply = await self.client.run_script(ADMIT, keys, args)
        except RedisError:
            return await self._unavailable(request_id, key_id, org, est_tokens, worst_cost_usd)
        if not isinstance(reply, list) or not reply or not all(isinstance(v, int) for v in reply):
            return await self._unavailable(request_id, key_id, org, est_tokens, worst_cost_usd)
        outcome = reply[0]
        if outcome == 0:
            taken = reply[1]
            assert isinstance(taken, int)
            return Reservation(
                request_id, key_id, org, max(0, worst), taken, day_start, month_start
            )
        raise self._refusal(reply, budgets, worst, now)

    async def count_rejected(self, key_id: str) -> GatewayError | None:
        """Take one request from the key's requests-per-minute bucket in Redis; the 429 when
        there is none left. While Redis is down the local limiter counts it."""
        if not self.rpm:
            return None
        keys = [f"{self.prefix}rpm:{key_id}", f"{self.prefix}tpm:{key_id}", self.holds]
        try:
            reply = await self.client.run_script(ADMIT, keys, [self.rpm, 0, 0, -1, "", 1, 0, ""])
        except RedisError:
            self.errors += 1
            return await self.local.count_rejected(key_id)
        if isinstance(reply, list) and reply and reply[0] == 1:
            return self._refusal(reply, [], 0, self.clock())
        return None

    def settle(self, reservation: Reservation, cost_usd: float | None, tokens: int) -> None:
        """Schedule the settle script (real cost in, hold out, token difference); never
        raises. A reservation the local fallback made is settled there, and its cost is
        still added to the shared spend."""
        try:
            cost = max(0, round((cost_usd or 0.0) * NANO))
            if reservation.request_id in self._local_ids:
                self._local_ids.discard(reservation.request_id)
                self.local.settle(reservation, cost_usd, tokens)
                shared = Reservation(
                    reservation.request_id,
                    reservation.key_id,
                    reservation.org,
                    0,
                    0,
                    reservation.day_start,
                    reservation.month_start,
                )
                self._schedule(shared, cost, 0)
            else:
                self._schedule(reservation, cost, tokens - reservation.tokens)
        except Exception:
            self.errors += 1

    def readiness(self) -> tuple[list[str], list[str]]:
        """A problem while Redis is down in `closed` mode (the replica refuses requests), a
        warning in `open` mode; the local limiter's own after."""
        problems, warnings = self.local.readiness()
        if not self.client.up:
            why = self.client.last_error or f"Redis at {self.client.url.where} not reached yet"
            if self.fail_open:
                warnings = [
                    f"limits store down ({why}): rate limits and budgets are enforced by this "
                    "process alone until Redis is back",
                    *warnings,
                ]
            else:
                problems = [
                    f"limits store down ({why}): requests get 503 limits_unavailable until "
                    "Redis is back",
                    *problems,
                ]
        return problems, warnings

    def render_metrics(self) -> str:
        """`switchyard_limits_store_up`, `_errors_total`, `_fail_open_total`, then the local
        limiter's."""
        own = (
            "# HELP switchyard_limits_store_up Whether the limits store (Redis) answered last.\n"
            "# TYPE switchyard_limits_store_up gauge\n"
            f"switchyard_limits_store_up {1 if self.client.up else 0}\n"
            "# HELP switchyard_limits_store_errors_total Limits store operations that failed.\n"
            "# TYPE switchyard_limits_store_errors_total counter\n"
            f"switchyard_limits_store_errors_total {self.errors}\n"
            "# HELP switchyard_limits_fail_open_total Requests admitted by this process's own "
            "limits while the store was down (on_unavailable: open).\n"
            "# TYPE switchyard_limits_fail_open_total counter\n"
            f"switchyard_limits_fail_open_total {self.fail_open_total}\n"
        )
        return own + self.local.render_metrics()

    async def start(self) -> None:
        """Start the local limiter, reach Redis once (a failure only shows in readiness) and
        the health check that keeps `up` true to the moment and retries failed settles."""
        await self.local.start()
        if await self._ping():
            await self._seed_if_missing()
        self._health = asyncio.get_running_loop().create_task(self._health_loop())

    async def close(self) -> None:
        """Finish the settles in flight and those kept while Redis was down (bounded: about
        2 s at most), then close."""
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.client.command_timeout_s * 2)
        if self._unsettled and self.client.up:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    while self._unsettled and self.client.up:
                        await self._settle(*self._unsettled.popleft())
        await self.client.close()
        await self.local.close()

    # -- inside ------------------------------------------------------------------------------

    def _budgets(
        self, key_id: str, org: str, day_start: float, month_start: float
    ) -> list[_Applied]:
        """The budgets that apply to a key's request in a period (cached: the same few keys
        ask again and again)."""
        index = (key_id, org, day_start, month_start)
        out = self._budget_cache.get(index)
        if out is None:
            if len(self._budget_cache) >= BUDGET_CACHE_MAX:
                self._budget_cache.clear()
            out = self._budget_cache[index] = self._applied_budgets(*index)
        return out

    def _applied_budgets(
        self, key_id: str, org: str, day_start: float, month_start: float
    ) -> list[_Applied]:
        out: list[_Applied] = []
        day, month = self._label(day_start, "%Y-%m-%d"), self._label(month_start, "%Y-%m")
        for budget, who, name in (
            (self.limits.key_budget, "key", f"key:{key_id}"),
            (self.limits.budget_of_org(org), f"org '{org}'", f"org:{org}"),
        ):
            out += _applied(budget, f"{self.prefix}spend:{name}", who, day, month)
        return out

    def _label(self, start: float, fmt: str) -> str:
        label = self._labels.get(start)
        if label is None:
            if len(self._labels) > 64:
                self._labels.clear()
            label = self._labels[start] = time.strftime(fmt, time.gmtime(start))
        return label

    async def _unavailable(
        self, request_id: str, key_id: str, org: str, est_tokens: int, worst: float | None
    ) -> Reservation:
        self.errors += 1
        if not self.fail_open:
            raise GatewayError(
                503,
                "limits_unavailable",
                "the gateway cannot reach its limits store (Redis) to check this key's rate "
                "limits and budgets; retry shortly",
                headers={"retry-after": "1"},
            )
        res = await self.local.reserve(request_id, key_id, org, est_tokens, worst)
        self.fail_open_total += 1
        if len(self._local_ids) >= LOCAL_IDS_MAX:  # requests that never settled: forget them
            self._local_ids.clear()
        self._local_ids.add(request_id)
        return res

    def _refusal(
        self, reply: Sequence[object], budgets: list[_Applied], worst: int, now: float
    ) -> GatewayError:
        outcome, detail = reply[0], reply[1]
        assert isinstance(detail, int)
        if outcome == 1:
            return _limited(
                "rate_limit_exceeded",
                f"this key is over its limit of {self.rpm} requests per minute",
                detail / 1000,
            )
        if outcome == 2:
            return _limited(
                "token_rate_limit_exceeded",
                f"this key is over its limit of {self.tpm} tokens per minute",
                detail / 1000,
            )
        b = budgets[detail - 1]
        spent, held = reply[2], reply[3]
        assert isinstance(spent, int) and isinstance(held, int)
        cost = "" if worst < 0 else f"; this request may cost up to ${worst / NANO:g}"
        return _limited(
            "budget_exceeded",
            f"the {b.who} has spent or reserved its {b.period} budget of ${b.usd:g} "
            f"(${spent / NANO:g} spent, ${held / NANO:g} held by requests in flight{cost})",
            _until_period_end(b.period, now),
        )

    def _schedule(self, reservation: Reservation, cost: int, delta: int) -> None:
        """Queue a settle; the settles of one loop iteration leave together, sent by one task
        (a task per settle cost more CPU than the rest of it)."""
        self._queued.append((reservation, cost, delta))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            task = asyncio.get_running_loop().create_task(self._settle_queued())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle_queued(self) -> None:
        self._drain_scheduled = False
        batch = list(self._queued)
        self._queued.clear()
        sent: list[tuple[asyncio.Future[Reply], tuple[Reservation, int, int]]] = []
        slow: list[tuple[Reservation, int, int]] = []
        for item in batch:
            call = self._settle_call(*item)
            if call is None:
                continue
            pending = self.client.script_nowait(SETTLE, *call)
            if pending is None:  # no connection yet: the awaited path connects (or fails)
                slow.append(item)
            else:
                sent.append((pending, item))
        if sent:
            await asyncio.wait([fut for fut, _ in sent])
        for done, item in sent:
            exc = done.exception()
            if exc is None:
                continue
            if isinstance(exc, RedisReplyError) and exc.prefix == "NOSCRIPT":
                slow.append(item)  # run_script loads the script
            else:
                self.errors += 1
                self._unsettled.append(item)
        for item in slow:
            await self._settle(*item)

    def _settle_call(
        self, r: Reservation, cost: int, delta: int
    ) -> tuple[list[str], list[Arg]] | None:
        """The settle script's keys and arguments; None when there is nothing to settle."""
        budgets = self._budgets(r.key_id, r.org, r.day_start, r.month_start)
        if (not budgets or not (r.nano_usd or cost)) and not (self.tpm and delta):
            return None  # nothing held, nothing spent, no tokens to give back or take
        keys = [
            f"{self.prefix}settled:{r.request_id}",
            f"{self.prefix}tpm:{r.key_id}",
            self.holds,
        ]
        args: list[Arg] = [r.request_id, r.nano_usd, cost, delta, self.tpm, len(budgets)]
        for b in budgets:
            keys.append(b.key)
            args.append(b.ttl)
        args.append(_member(r.request_id, r.nano_usd, budgets))
        return keys, args

    async def _settle(self, r: Reservation, cost: int, delta: int) -> None:
        call = self._settle_call(r, cost, delta)
        if call is None:
            return
        try:
            await self.client.run_script(SETTLE, *call)
        except RedisError:
            self.errors += 1
            self._unsettled.append((r, cost, delta))

    async def _ping(self) -> bool:
        try:
            await self.client.execute("PING")
            return True
        except RedisError:
            self.errors += 1
            return False

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            if await self._ping():
                await self._seed_if_missing()
                while self._unsettled and self.client.up:
                    await self._settle(*self._unsettled.popleft())

    async def _seed_if_missing(self) -> None:
        """Seed each period whose mark is missing in Redis from the records store."""
        if self.seed is None:
            return
        day_start, month_start = period_starts(self.clock())
        day, month = self._label(day_start, "%Y-%m-%d"), self._label(month_start, "%Y-%m")
        marks = [f"{self.prefix}seeded:day:{day}", f"{self.prefix}seeded:month:{month}"]
        try:
            present = await asyncio.gather(*(self.client.execute("EXISTS", m) for m in marks))
            if all(present):
                return
            spend = await asyncio.to_thread(self.seed, day_start, month_start)
            for mark, ttl, per_key, per_org, period, label in (
                (marks[0], DAY_TTL_S, spend.key_day, spend.org_day, "day", day),
                (marks[1], MONTH_TTL_S, spend.key_month, spend.org_month, "month", month),
            ):
                keys, args = [mark], [ttl]
                for who, amounts in (("key", per_key), ("org", per_org)):
                    for name, usd in amounts.items():
                        if usd > 0:
                            keys.append(f"{self.prefix}spend:{who}:{name}:{period}:{label}")
                            args.append(round(usd * NANO))
                if await self.client.run_script(SEED, keys, list(args)) == 1:
                    self.seeds += 1
        except RedisError:
            self.errors += 1
        except Exception:
            # The records store could not be read: count it and try again next round.
            self.errors += 1


def _member(request_id: str, nano_usd: int, budgets: Sequence[_Applied]) -> str:
    """A reservation in the holds set: what it holds and of which budgets, so that a lapsed
    one can be given back without knowing the request."""
    return f"{request_id}|{max(0, nano_usd)}|{';'.join(b.key for b in budgets)}"


def _applied(budget: Budget, base: str, who: str, day: str, month: str) -> list[_Applied]:
    out = []
    if budget.usd_per_day is not None:
        limit = round(budget.usd_per_day * NANO)
        out.append(
            _Applied(f"{base}:day:{day}", limit, DAY_TTL_S, who, "daily", budget.usd_per_day)
        )
    if budget.usd_per_month is not None:
        limit = round(budget.usd_per_month * NANO)
        out.append(
            _Applied(
                f"{base}:month:{month}", limit, MONTH_TTL_S, who, "monthly", budget.usd_per_month
            )
        )
    return out


def _until_period_end(period: str, now: float) -> float:
    day_start, _ = period_starts(now)
    if period == "daily":
        return day_start + 86400 - now
    t = time.gmtime(now)
    y, m = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((y, m, 1, 0, 0, 0)) - now


def _limited(code: str, message: str, wait: float) -> GatewayError:
    return GatewayError(429, code, message, headers={"retry-after": str(max(1, int(wait + 0.999)))})
