"""How the command line shows what it lists: gateway keys, BYOK credentials, request records
and grouped request reports, as aligned text tables or as JSON-ready dicts.

Pure functions returning strings and dicts; runtime/cli.py prints them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict

from runtime.byok_store import ByokRow
from runtime.keys import KeyInfo
from runtime.records import CHAT_ENDPOINT, RequestRecord
from runtime.request_report import GroupStats


def format_time(ts: float | None) -> str:
    """UTC time to the second, `-` for none."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


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


def _attempts(record: RequestRecord) -> str:
    return ",".join(f"{a.get('provider')}:{a.get('outcome')}" for a in record.attempts) or "-"


RECORD_HEADERS = (
    "time", "request id", "key", "route", "provider", "upstream model", "status", "error",
    "latency ms", "ttfb ms", "in", "out", "cached", "cache writes", "reasoning", "cost usd",
    "fell back", "attempts",
)  # fmt: skip
_RECORD_RIGHT = (6, 8, 9, 10, 11, 12, 13, 14, 15)


def _detail(value: int | None) -> str:
    return "-" if value is None else str(value)


def _writes(r: RequestRecord) -> str:
    if r.cache_write_tokens is None and r.cache_write_1h_tokens is None:
        return "-"
    five, hour = r.cache_write_tokens or 0, r.cache_write_1h_tokens or 0
    return f"{five}+{hour}h" if hour else str(five)


def _record_cost(r: RequestRecord) -> str:
    text = _cost(r.cost_usd)
    return text + " ~" if r.abandoned_cost_usd is not None else text


def format_records(records: Sequence[RequestRecord]) -> str:
    """The records as a table, one line each: tokens with their details (cached input, cache
    writes as `5-minute+1-hour h`, reasoning), cost marked `~` when it includes the estimated
    cost of abandoned attempts."""
    rows = [
        (
            format_time(r.ts),
            r.request_id,
            r.key_id or "-",
            r.route or r.requested_model or (r.endpoint if r.endpoint != CHAT_ENDPOINT else "-"),
            r.provider or "-",
            r.upstream_model or "-",
            str(r.status),
            r.error_code or ("broke after commit" if r.broke_after_commit else "-"),
            _ms(r.latency_ms),
            _ms(r.ttfb_ms),
            _tokens(r.input_tokens, r.usage_estimated),
            _tokens(r.output_tokens, r.usage_estimated),
            _detail(r.cached_input_tokens),
            _writes(r),
            _detail(r.reasoning_tokens),
            _record_cost(r),
            "yes" if r.fell_back else "no",
            _attempts(r),
        )
        for r in records
    ]
    text = table(RECORD_HEADERS, rows, _RECORD_RIGHT)
    if any(r.abandoned_cost_usd is not None for r in records):
        text += "\n~ cost usd: includes the estimated cost of attempts abandoned after the"
        text += " provider started generating"
    return text


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


def records_json(records: Sequence[RequestRecord]) -> list[dict[str, object]]:
    """The records as JSON-ready dicts."""
    return [asdict(r) for r in records]


def groups_json(groups: Sequence[GroupStats], by: str) -> list[dict[str, object]]:
    """The grouped report as JSON-ready dicts, the group under the name of `by`."""
    out = []
    for g in groups:
        item = asdict(g)
        item[by] = item.pop("key")
        out.append(item)
    return out


def format_keys(infos: Sequence[KeyInfo], now: float) -> str:
    """Gateway keys as a table: id, org, name, created, expires, status at `now`."""
    rows = [
        (
            i.id,
            i.org,
            i.name,
            format_time(i.created_at),
            format_time(i.expires_at) if i.expires_at else "never",
            i.status(now),
        )
        for i in infos
    ]
    return table(("id", "org", "name", "created", "expires", "status"), rows)


def keys_json(infos: Sequence[KeyInfo], now: float) -> list[dict[str, object]]:
    """Gateway keys as JSON-ready dicts, with their status at `now`."""
    return [
        {
            "id": info.id,
            "environment": info.environment,
            "org": info.org,
            "name": info.name,
            "created_at": info.created_at,
            "expires_at": info.expires_at,
            "revoked_at": info.revoked_at,
            "status": info.status(now),
        }
        for info in infos
    ]


def format_byok_rows(rows: Sequence[ByokRow]) -> str:
    """Stored BYOK credentials (never values) as a table: org, provider, field, key, updated."""
    cells = [(r.org, r.provider, r.field, r.fingerprint, format_time(r.updated_at)) for r in rows]
    return table(("org", "provider", "field", "key", "updated"), cells)


def byok_rows_json(rows: Sequence[ByokRow]) -> list[dict[str, object]]:
    """Stored BYOK credentials (never values) as JSON-ready dicts."""
    return [
        {
            "org": row.org,
            "provider": row.provider,
            "field": row.field,
            "fingerprint": row.fingerprint,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
        for row in rows
    ]
