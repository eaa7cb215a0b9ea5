"""Request-log reports: the last records, or records grouped with error rates and percentiles.

Pure functions over `Record`s; `runtime.admin` reads the database and prints what these return.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runtime.records import Record

_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

GROUP_BY: dict[str, Callable[[Record], str]] = {
    "model": lambda r: f"{r.provider}/{r.upstream_model}" if r.provider else "-",
    "provider": lambda r: r.provider or "-",
    "route": lambda r: r.route or r.requested_model or "-",
    "key": lambda r: r.key_id or "-",
    "org": lambda r: r.org or "-",
    "status": lambda r: str(r.status),
}


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `30m`, `1h`, `2d` or `1w`; ValueError otherwise."""
    match = _DURATION_RE.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h, 2d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def format_time(ts: float | None) -> str:
    """UTC time to the second, `-` for none."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def is_error(record: Record) -> bool:
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


def summarize(records: Iterable[Record], by: str) -> list[GroupStats]:
    """Group records by `by` (a GROUP_BY key), busiest group first."""
    keyfunc = GROUP_BY[by]
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(keyfunc(record), []).append(record)
    stats = [_stats(key, rows) for key, rows in groups.items()]
    return sorted(stats, key=lambda s: (-s.count, s.key))


def _stats(key: str, rows: list[Record]) -> GroupStats:
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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Aligned plain-text columns; columns whose index is in `right` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    right_set = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(w) if i in right_set else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _tokens(value: int | None, estimated: bool) -> str:
    if value is None:
        return "-"
    return f"~{value}" if estimated else str(value)


def _attempts(record: Record) -> str:
    return ",".join(f"{a.get('provider')}:{a.get('outcome')}" for a in record.attempts) or "-"


RECORD_HEADERS = (
    "time", "request id", "key", "route", "provider", "upstream model", "status", "error",
    "latency ms", "ttfb ms", "in", "out", "cost usd", "fell back", "attempts",
)  # fmt: skip
_RECORD_RIGHT = (6, 8, 9, 10, 11, 12)


def format_records(records: Sequence[Record]) -> str:
    """The records as a table, one line each."""
    rows = [
        (
            format_time(r.ts),
            r.request_id,
            r.key_id or "-",
            r.route or r.requested_model or "-",
            r.provider or "-",
            r.upstream_model or "-",
            str(r.status),
            r.error_code or ("broke after commit" if r.broke_after_commit else "-"),
            _ms(r.latency_ms),
            _ms(r.ttfb_ms),
            _tokens(r.input_tokens, r.usage_estimated),
            _tokens(r.output_tokens, r.usage_estimated),
            _cost(r.cost_usd),
            "yes" if r.fell_back else "no",
            _attempts(r),
        )
        for r in records
    ]
    return table(RECORD_HEADERS, rows, _RECORD_RIGHT)


def format_groups(groups: Sequence[GroupStats], by: str) -> str:
    """The grouped report as a table; a note follows when some costs are unknown."""
    headers = (
        by, "count", "errors", "error %", "p50 ms", "p95 ms", "ttfb p50", "ttfb p95",
        "in", "out", "cost usd",
    )  # fmt: skip
    rows = [
        (
            g.key,
            str(g.count),
            str(g.errors),
            f"{100 * g.error_rate:.1f}",
            _ms(g.latency_p50_ms),
            _ms(g.latency_p95_ms),
            _ms(g.ttfb_p50_ms),
            _ms(g.ttfb_p95_ms),
            _tokens(g.input_tokens, g.tokens_estimated),
            _tokens(g.output_tokens, g.tokens_estimated),
            _cost(g.cost_usd) + (f" (+{g.cost_unknown} unknown)" if g.cost_unknown else ""),
        )
        for g in groups
    ]
    text = table(headers, rows, range(1, 11))
    if any(g.tokens_estimated for g in groups):
        text += "\n~: includes token counts estimated by the gateway (the provider reported none)"
    if any(g.cost_unknown for g in groups):
        text += "\ncost usd: sum of the known costs; (+N unknown) requests have no known price"
    return text


def records_json(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The records as JSON-ready dicts."""
    return [asdict(r) for r in records]


def groups_json(groups: Sequence[GroupStats], by: str) -> list[dict[str, Any]]:
    """The grouped report as JSON-ready dicts, the group under the name of `by`."""
    out = []
    for g in groups:
        item = asdict(g)
        item[by] = item.pop("key")
        out.append(item)
    return out
