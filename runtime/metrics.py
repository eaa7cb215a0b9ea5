"""Prometheus metrics, kept in plain dicts and rendered in the text exposition format.

Updating is a dict lookup and an add (no locks: one event loop per process). Each worker
process has its own numbers; `/metrics` of a process reports that process (see docs/runtime.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

Labels = tuple[str, ...]


class Counter:
    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n")
        for key, value in self.values.items():
            out.append(f"{self.name}{{{_labels(self.labels, key)}}} {_num(value)}\n")


class Histogram:
    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str],
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.buckets = tuple(buckets)
        self.values: dict[Labels, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, labels: Labels, value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} histogram\n")
        for key, row in self.values.items():
            base = _labels(self.labels, key)
            sep = "," if base else ""
            cumulative = 0.0
            for bound, count in zip((*self.buckets, float("inf")), row[:-1], strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'{self.name}_bucket{{{base}{sep}le="{le}"}} {_num(cumulative)}\n')
            out.append(f"{self.name}_count{{{base}}} {_num(cumulative)}\n")
            out.append(f"{self.name}_sum{{{base}}} {row[-1]!r}\n")


class Metrics:
    """The gateway's metrics; names are `switchyard_*`."""

    def __init__(self) -> None:
        self.requests = Counter(
            "switchyard_requests_total",
            "Requests by route, provider and HTTP status.",
            ("route", "provider", "status"),
        )
        self.latency = Histogram(
            "switchyard_request_duration_seconds",
            "Time from request to last byte.",
            ("route", "provider"),
        )
        self.ttfb = Histogram(
            "switchyard_time_to_first_byte_seconds",
            "Time from request to the first byte sent.",
            ("route", "provider"),
        )
        self.tokens = Counter(
            "switchyard_tokens_total",
            "Tokens by route, provider and direction (input/output).",
            ("route", "provider", "direction"),
        )
        self.cost = Counter(
            "switchyard_cost_usd_total",
            "Cost in USD from the config's price table (known costs only).",
            ("route", "provider"),
        )
        self.fallbacks = Counter(
            "switchyard_fallbacks_total",
            "Attempts that failed and moved on to the next candidate.",
            ("route", "provider", "error_class"),
        )
        self.attempts = Counter(
            "switchyard_upstream_attempts_total",
            "Upstream attempts by provider and outcome.",
            ("provider", "outcome"),
        )
        self.broken = Counter(
            "switchyard_streams_broken_total",
            "Streams that broke after the response was committed.",
            ("route", "provider"),
        )

    def render(self) -> str:
        out: list[str] = []
        for m in (
            self.requests,
            self.latency,
            self.ttfb,
            self.tokens,
            self.cost,
            self.fallbacks,
            self.attempts,
            self.broken,
        ):
            m.render(out)
        return "".join(out)


def _labels(names: Labels, values: Labels) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)
