"""Prometheus metrics, kept in plain dicts and rendered in the text exposition format; the
label values they may take; and the sum of a replica's worker processes.

Updating is a dict lookup and an add (no locks: one event loop per process). Label values
come only from the config (`RouteLabels`), so no client can add series. With `--workers N`
each worker writes a snapshot of its counters to the data dir every second
(`WorkerSnapshots`) and `/metrics` of any worker answers for the whole replica: its own live
numbers plus every other worker's last snapshot (`merge`). See docs/runtime.md "Metrics".
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.metadata
import os
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

from runtime.config import RuntimeConfig

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
        for key, value in list(self.values.items()):
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
        for key, row in list(self.values.items()):
            row = row[:]
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
        self.build_info = ""

    def set_build_info(
        self, environment: str, config_hash: str, version: str | None = None
    ) -> None:
        """Set `switchyard_build_info{version,config_hash,environment} 1` (version: the
        installed package's, see `package_version`)."""
        labels = _labels(
            ("version", "config_hash", "environment"),
            (version or package_version(), config_hash, environment),
        )
        self.build_info = (
            "# HELP switchyard_build_info The gateway's version, config hash and environment.\n"
            "# TYPE switchyard_build_info gauge\n"
            f"switchyard_build_info{{{labels}}} 1\n"
        )

    def render(self) -> str:
        """The counters and histograms in Prometheus text (not the build info)."""
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


UNKNOWN = "unknown"  # the route label of a request whose model is not configured (or absent)
STATUS_OTHER = "other"  # the status label of a status outside 100-599 (none is sent)


class RouteLabels:
    """The label values a request may produce, all from the config: `route` is a configured
    route name, a configured `provider/model`, or `unknown`; `status` an HTTP status."""

    __slots__ = ("known",)

    def __init__(self, config: RuntimeConfig) -> None:
        known = set(config.routes)
        for pid, p in config.providers.items():
            known.update(f"{pid}/{name}" for name in p.models)
        self.known = frozenset(known)

    def route(self, route: str | None, requested_model: str | None) -> str:
        """The route label: the planned route, else the model the client named if the config
        has it (a refused route, an explicit provider/model), else `unknown`."""
        if route is not None:
            return route
        if requested_model is not None and requested_model in self.known:
            return requested_model
        return UNKNOWN


def status_label(status: int) -> str:
    """An HTTP status as a label value: one of at most 500 values, never the client's text."""
    return _STATUS[status] if 100 <= status <= 599 else STATUS_OTHER


_STATUS = {code: str(code) for code in range(100, 600)}


def package_version() -> str:
    """The installed `switchyard` package's version, else the project's (pyproject.toml next
    to the runtime, in a source checkout), else `unknown`."""
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return UNKNOWN


# --- a replica's workers --------------------------------------------------------------------

SNAPSHOT_INTERVAL_S = 1.0
STALE_AFTER_S = 3600.0  # a session directory nobody wrote to for this long is removed
METRICS_DIR = "metrics"
_SUMMED = frozenset({"counter", "histogram", "summary"})


class WorkerSnapshots:
    """The snapshot files of one `serve` process's workers, in
    `<data_dir>/metrics/<host>-<serve pid>-<serve start>/<worker pid>.prom`.

    The directory names the host (a container's hostname: replicas may share the data
    volume) and the supervisor's pid and start time (a restarted container reuses its
    hostname and pids). Each worker writes only its own file, atomically (temporary file,
    rename); an exited worker's file stays, so the replica's counters never go down while
    its `serve` process lives. Files are plain Prometheus text. Blocking: call from a thread.
    """

    def __init__(self, data_dir: Path, supervisor_pid: int, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.root = data_dir / METRICS_DIR
        self.session = f"{self.host}-{supervisor_pid}-{_start_time(supervisor_pid)}"
        self.dir = self.root / self.session
        self.pid = os.getpid()
        self.path = self.dir / f"{self.pid}.prom"
        self._lock = threading.Lock()
        self._written = 0  # the sequence number of the newest text on disk

    def prepare(self) -> None:
        """Create this session's directory; remove those of this host's `serve` processes
        that are gone (an earlier life of the container) and any directory nobody wrote to
        for STALE_AFTER_S (replicas long gone)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = time.time()
        with contextlib.suppress(OSError):
            for entry in self.root.iterdir():
                if entry.name == self.session or not entry.is_dir():
                    continue
                try:
                    stale = now - entry.stat().st_mtime > STALE_AFTER_S
                except OSError:
                    continue
                if stale or self._gone(entry.name):
                    shutil.rmtree(entry, ignore_errors=True)

    def _gone(self, session: str) -> bool:
        """A session of this host whose `serve` process no longer runs (another `serve` on
        the same data dir keeps its own)."""
        parts = session.rsplit("-", 2)
        if len(parts) != 3 or parts[0] != self.host:
            return False
        pid, start = parts[1], parts[2]
        return not pid.isdigit() or _start_time(int(pid)) != start

    def write(self, text: str, seq: int) -> None:
        """Replace this worker's snapshot by `text` (taken as number `seq`; an older one
        arriving late is not written over a newer one)."""
        with self._lock:
            if seq <= self._written:
                return
            tmp = self.dir / f".{self.pid}.tmp"
            try:
                tmp.write_text(text)
            except FileNotFoundError:  # removed from outside: start over
                self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                tmp.write_text(text)
            os.replace(tmp, self.path)
            self._written = seq

    def others(self) -> list[str]:
        """The last snapshot of every other worker of this session, live or exited."""
        out = []
        with contextlib.suppress(OSError):
            for entry in self.dir.iterdir():
                if entry.suffix != ".prom" or entry.name == self.path.name:
                    continue
                with contextlib.suppress(OSError):
                    out.append(entry.read_text())
        return out


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot (/proc), "0" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def merge(own: str, others: Iterable[str]) -> str:
    """One Prometheus text from this process's `own` and other processes' texts: counters
    and histograms are summed sample by sample; gauges are `own`'s (the answering worker's
    state, not a sum)."""
    families: dict[str, tuple[list[str], str, dict[str, float]]] = {}
    _parse(own, families, first=True)
    for text in others:
        _parse(text, families, first=False)
    out: list[str] = []
    for meta, _, samples in families.values():
        if not samples:
            continue
        out.extend(meta)
        out.extend(f"{key} {_num(value)}\n" for key, value in samples.items())
    return "".join(out)


def _parse(
    text: str, families: dict[str, tuple[list[str], str, dict[str, float]]], first: bool
) -> None:
    family: tuple[list[str], str, dict[str, float]] | None = None
    meta: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                meta.append(line + "\n")
                name = parts[2]
                family = families.get(name)
                if family is None:
                    family = families[name] = (meta, parts[3].strip(), {})
                meta = []
            elif len(parts) >= 3 and parts[1] == "HELP":
                meta = [line + "\n"]
            continue
        key, _, raw = line.rpartition(" ")
        if family is None or not key:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if first or family[1] in _SUMMED:
            samples = family[2]
            samples[key] = samples.get(key, 0.0) + value


def _labels(names: Labels, values: Labels) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)
