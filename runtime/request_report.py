"""Request-log reports: records grouped, with error rates, latency percentiles, tokens and cost.

Pure functions over `RequestRecord`s that return data (`GroupStats`); the `requests` command of
runtime/cli.py reads the database, and runtime/listings.py turns these into text or JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from runtime.records import RequestRecord

GROUP_BY: dict[str, Callable[[RequestRecord], str]] = {
    "model": lambda r: f"{r.provider}/{r.upstream_model}" if r.provider else "-",
    "provider": lambda r: r.provider or "-",
    "route": lambda r: r.route or r.requested_model or "-",
    "key": lambda r: r.key_id or "-",
    "org": lambda r: r.org or "-",
    "status": lambda r: str(r.status),
}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def is_error(record: RequestRecord) -> bool:
    """A refused or failed request, or a stream that broke after commit."""
    return record.status >= 400 or record.error_code is not None


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One row of a grouped report."""

    key: str
    count: int
    errors: int
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttfb_p50_ms: float | None
    ttfb_p95_ms: float | None
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    cost_usd: float | None  # sum of the known costs; None when none is known
    cost_unknown: int  # records whose cost is unknown


def summarize(records: Iterable[RequestRecord], by: str) -> list[GroupStats]:
    """Group records by `by` (a GROUP_BY key), busiest group first."""
    keyfunc = GROUP_BY[by]
    groups: dict[str, list[RequestRecord]] = {}
    for record in records:
        groups.setdefault(keyfunc(record), []).append(record)
    stats = [_stats(key, rows) for key, rows in groups.items()]
    return sorted(stats, key=lambda s: (-s.count, s.key))


def _stats(key: str, rows: list[RequestRecord]) -> GroupStats:
    latencies = [r.latency_ms for r in rows]
    ttfbs = [r.ttfb_ms for r in rows if r.ttfb_ms is not None]
    costs = [r.cost_usd for r in rows if r.cost_usd is not None]
    errors = sum(1 for r in rows if is_error(r))
    return GroupStats(
        key=key,
        count=len(rows),
        errors=errors,
        error_rate=errors / len(rows),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        ttfb_p50_ms=percentile(ttfbs, 50),
        ttfb_p95_ms=percentile(ttfbs, 95),
        input_tokens=sum(r.input_tokens or 0 for r in rows),
        output_tokens=sum(r.output_tokens or 0 for r in rows),
        tokens_estimated=any(r.usage_estimated for r in rows),
        cost_usd=sum(costs) if costs else None,
        cost_unknown=len(rows) - len(costs),
    )
