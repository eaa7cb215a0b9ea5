"""Gateway benchmark: the gateway (one worker) against the same mock upstream called directly.

    python bench/gateway_bench.py          # 10 s per wrk run, about 4 minutes (6 with --floor)
    python bench/gateway_bench.py --quick         # 2 s runs, fewer TTFB samples
    python bench/gateway_bench.py --json out.json
    python bench/gateway_bench.py --floor         # also the floor proxy as a third target
    python bench/gateway_bench.py --proxy         # also the gateway through HAProxy, as deployed
    python bench/gateway_bench.py --endpoints     # also /v1/responses, /v1/messages, /v1/embeddings

For each upstream delay (0 and 20 ms) it starts `bench/mock_upstream.py` and
`python -m runtime serve --workers 1` (temporary data dir, the real SQLite request log on),
creates a key, warms up, and runs `wrk` for {non-stream, stream} × {1, 16 connections} ×
{direct to the mock, through the gateway}. Time to first byte of streams is measured apart
by a small asyncio client: sequential streamed requests over one keep-alive connection,
timed from sending the request to the first `data:` line with content.

With `--floor`, each phase also starts `bench/floor_proxy.py` in front of the mock (uvicorn
relaying bytes through the gateway's transport, nothing else) and measures it as a third
target, "floor": the same wrk cases and TTFB series. Verdicts stay gateway vs direct; a
context block after them shows how the gateway compares with the floor. If the floor fails,
its phase goes on without it, the failure is printed with the report, and the exit code is 1.

With `--shared`, the run also starts a private Redis and PostgreSQL (Debian's redis-server
and PostgreSQL, as tests/servers.py does), and each phase a second gateway, "shared", whose
environment keeps its state there: rate limits and budget reservations in Redis, request
records, keys and BYOK in PostgreSQL. Both gateways then carry the same limits (a
requests-per-minute limit and key and org budgets, all far above what the run spends), so
the only difference is where the state lives. A table and verdicts compare "shared" with
"gateway" at 16 connections: throughput and median latency within 15 % (issue 12), and the
rows the shared gateway's records reached PostgreSQL.

With `--proxy`, each phase also starts HAProxy (`haproxy`, as deploy runs it) with the
configuration the compiler renders (bench/local_haproxy.py) in front of the gateway, and
measures "proxy" (client -> HAProxy -> gateway -> mock) beside "gateway" (client -> gateway ->
mock) in the same run: the same wrk cases and TTFB series. A table and verdicts give what the
proxy adds: median latency at 1 connection (target +0.3 ms at most) and throughput at 16
connections (target at most 10 % less). A proxy that cannot start stops the run (exit 1).

With `--endpoints`, each phase also runs wrk through the gateway against the other APIs it
serves, beside chat completions: `POST /v1/responses` (`{"model", "instructions", "input",
"stream"}`, bearer key) and `POST /v1/messages` (`{"model", "max_tokens": 64, "system",
"messages", "stream"}`, with `x-api-key` and `anthropic-version: 2023-06-01` as the anthropic
SDK sends them), non-stream and stream, and `POST /v1/embeddings` (`{"model": EMBED_ROUTE,
"input": [EMBED_INPUT]}`, non-stream) through the gateway and direct to the mock, each at 1
and 16 connections. The bench's config then also has an embedding model (EMBED_DIMENSIONS
dimensions, an input price only) on the same openai-compatible provider and an embeddings
route, EMBED_ROUTE. The candidate is openai-compatible, so responses and messages are
translated (chat completions upstream): their added figures, against chat completions
through the gateway run again just before them, are the translation's cost; embeddings are compared
with the mock called directly. The TTFB series then also covers chat completions, responses
and messages through the gateway, alternating in blocks, timed to the first text delta
(`response.output_text.delta`, `content_block_delta`). A table "Endpoints" (context, no
verdicts) and, in --json, `endpoint_runs`, `endpoint_rows` and `endpoint_ttfb` hold them. An
endpoint that does not answer 200 stops the run (exit 1). Without `--endpoints`, the config,
the runs and the output are what they were.

It is a report, not a test: it prints a table and a PASS/FAIL verdict per target, and exits 0
either way (1 only if something could not be run). All traffic is on 127.0.0.1. Every process
it starts is stopped by pid, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import local_haproxy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.config import (
    SCHEMA_VERSION,
    Budget,
    CandidateRef,
    CostReference,
    FallbackPolicy,
    Limits,
    LoggingConfig,
    ModelConfig,
    OrgConfig,
    Price,
    ProviderConfig,
    RouteConfig,
    RuntimeConfig,
    SecretSpec,
    StateConfig,
)

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ENVIRONMENT = "bench"
ROUTE = "bench"
UPSTREAM_MODEL = "mock-model"
# --endpoints: the embeddings route and model (the mock answers any dimensions asked for).
EMBED_ROUTE = "bench-embed"
EMBED_UPSTREAM_MODEL = "mock-embed"
EMBED_DIMENSIONS = 256
EMBED_INPUT = [
    "The quick brown fox jumps over the lazy dog.",
    "Switchyard routes embeddings like chat completions.",
    "A short third passage to embed.",
    "And a fourth, so that the batch is a batch.",
]
ANTHROPIC_VERSION = "2023-06-01"
UPSTREAM_SECRET = "BENCH_UPSTREAM_KEY"
FLOOR_SCRIPT = ROOT / "bench" / "floor_proxy.py"
REQUEST_TIMEOUT_S = 30.0
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello in one short sentence."},
]
# The endpoints --endpoints measures, and which of them stream; "chat" is the baseline.
ENDPOINT_PATHS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
    "embeddings": "/v1/embeddings",
}
ENDPOINT_CASES = (
    ("responses", False),
    ("responses", True),
    ("messages", False),
    ("messages", True),
    ("embeddings", False),
)
STREAMED_ENDPOINTS = ("chat", "responses", "messages")  # the TTFB series with --endpoints

# The targets.
MIN_GATEWAY_RPS = 1000.0  # through the gateway, 16 connections, 0 ms delay
MIN_RATIO_20MS = 0.90  # gateway / direct throughput with 20 ms upstream delay
MAX_ADDED_P50_MS = 1.5  # added median latency at one connection
MAX_ADDED_TTFB_MS = 1.0  # added time to first byte of a stream
# What HAProxy in front of the gateway may cost (--proxy): proxy vs gateway called directly.
MAX_PROXY_ADDED_P50_MS = 0.3  # added median latency at one connection
MIN_PROXY_RATIO = 0.90  # throughput at 16 connections
# What shared state costs (--shared): Redis limits + PostgreSQL records/keys vs the embedded
# defaults, at 16 connections (issue 12: within 15 %).
MIN_SHARED_RATIO = 0.85
MAX_SHARED_P50_RATIO = 1.15
REDIS_SECRET = "BENCH_REDIS_URL"
DATABASE_SECRET = "BENCH_DATABASE_URL"


# --------------------------------------------------------------------------- results


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket errors


@dataclass
class Run:
    delay_ms: int
    stream: bool
    connections: int
    target: str  # "direct", "gateway", "proxy" (HAProxy in front of the gateway) or "floor"
    wrk: WrkResult
    gateway_cpu: (
        float | None
    )  # gateway CPU use during a gateway or proxy run, in cores (1.0 = one core busy)
    mock_cpu: float
    floor_cpu: float | None = None  # the floor proxy's CPU use during a floor run
    proxy_cpu: float | None = None  # HAProxy's (master + worker) CPU use during a proxy run


@dataclass
class Ttfb:
    delay_ms: int
    target: str
    samples: int
    median_ms: float
    p90_ms: float


@dataclass
class Verdict:
    target: str
    detail: str
    ok: bool


@dataclass
class FloorRow:
    """One wrk case with the floor beside direct and the gateway."""

    delay_ms: int
    stream: bool
    connections: int
    direct_rps: float
    gateway_rps: float
    floor_rps: float
    floor_ratio: float  # floor / direct
    gateway_over_floor: float  # gateway / floor
    floor_p50_ms: float
    floor_added_p50_ms: float  # floor p50 - direct p50


@dataclass
class ProxyRow:
    """One wrk case through HAProxy beside the same case against the gateway directly."""

    delay_ms: int
    stream: bool
    connections: int
    gateway_rps: float
    proxy_rps: float
    ratio: float  # proxy / gateway
    gateway_p50_ms: float
    gateway_p99_ms: float
    proxy_p50_ms: float
    proxy_p99_ms: float
    added_p50_ms: float  # proxy p50 - gateway p50
    proxy_cpu: float
    gateway_cpu: float  # the gateway's CPU during the proxy run
    errors: int  # wrk errors through the proxy


@dataclass
class SharedRow:
    """One wrk case against the shared-state gateway beside the embedded one."""

    delay_ms: int
    stream: bool
    connections: int
    gateway_rps: float
    shared_rps: float
    ratio: float  # shared / gateway
    gateway_p50_ms: float
    gateway_p99_ms: float
    shared_p50_ms: float
    shared_p99_ms: float
    p50_ratio: float  # shared p50 / gateway p50
    errors: int  # wrk errors against the shared gateway


@dataclass
class EndpointRun:
    """One wrk case of --endpoints: an endpoint through the gateway, or embeddings direct."""

    delay_ms: int
    endpoint: str  # "chat" (the baseline, run next to the others), "responses", "messages", ...
    stream: bool
    connections: int
    target: str  # "gateway", or "direct" (the mock's own /v1/embeddings)
    wrk: WrkResult
    gateway_cpu: float | None  # cores busy in the gateway during a gateway run
    mock_cpu: float


@dataclass
class EndpointRow:
    """One endpoint case beside its baseline: chat completions through the gateway (same
    delay, mode and connections) or, for embeddings, the mock called directly."""

    delay_ms: int
    endpoint: str
    stream: bool
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    baseline: str  # "chat via gateway" or "mock direct"
    baseline_rps: float
    baseline_p50_ms: float
    ratio: float  # rps / baseline rps
    added_p50_ms: float  # p50 - baseline p50
    gateway_cpu: float
    errors: int


@dataclass
class Report:
    started: str
    machine: dict[str, Any]
    duration_s: float
    runs: list[Run] = field(default_factory=list)
    ttfb: list[Ttfb] = field(default_factory=list)
    gateway_rss_mb: dict[str, float] = field(default_factory=dict)
    records_written: dict[str, int] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    floor: bool = False  # --floor was given
    floor_rows: list[FloorRow] = field(default_factory=list)
    floor_ttfb_added_ms: dict[str, float] = field(
        default_factory=dict
    )  # floor median - direct median
    floor_errors: dict[str, str] = field(
        default_factory=dict
    )  # per phase, why the floor is missing
    context: list[str] = field(default_factory=list)
    proxy: bool = False  # --proxy was given
    proxy_rows: list[ProxyRow] = field(default_factory=list)
    proxy_ttfb_added_ms: dict[str, float] = field(
        default_factory=dict
    )  # proxy median - gateway median
    proxy_verdicts: list[Verdict] = field(default_factory=list)
    shared: bool = False  # --shared was given
    shared_rows: list[SharedRow] = field(default_factory=list)
    shared_verdicts: list[Verdict] = field(default_factory=list)
    shared_records: dict[str, int] = field(default_factory=dict)  # rows in PostgreSQL
    endpoints: bool = False  # --endpoints was given
    endpoint_runs: list[EndpointRun] = field(default_factory=list)
    endpoint_rows: list[EndpointRow] = field(default_factory=list)
    # TTFB through the gateway per streamed endpoint ("chat" included, as Ttfb.target).
    endpoint_ttfb: list[Ttfb] = field(default_factory=list)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Processes:
    """Every child process the benchmark starts; `stop_all` ends them by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(
        self,
        args: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        self.logs.append(out)
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.procs[:]):
            self.stop(proc)
        for out in self.logs:
            out.close()
        self.logs.clear()


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> None:
    """Until GET `url` answers 200; fail early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with "
                f"{proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers or {}), timeout=1
            ) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"{url} did not answer 200 within {timeout:g} s:\n{log.read_text(errors='replace')[-3000:]}"
    )


def start_gateway(
    procs: Processes,
    root: Path,
    config: Path,
    port: int,
    data_dir: Path,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Serve `config` with the runtime/ of checkout `root` (one worker) and create a bench key
    in its key store (`data_dir`, or the PostgreSQL the config names); returns the process and
    the key once the gateway accepts it."""
    env = {
        **os.environ,
        UPSTREAM_SECRET: "bench-upstream-key",
        "PYTHONPATH": str(root),
        **(extra_env or {}),
    }
    env.pop("SWITCHYARD_DATA_DIR", None)
    gateway = procs.start(
        [
            sys.executable,
            "-m",
            "runtime",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        log,
        env,
        cwd=root,
    )
    wait_http(f"http://{HOST}:{port}/readyz", gateway, log)
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "keys",
            "create",
            "--env",
            ENVIRONMENT,
            "--org",
            "bench",
            "--name",
            "bench",
            "--data-dir",
            str(data_dir),
            # Where the keys live is the config's to say (PostgreSQL for --shared); a checkout
            # from before shared state (bench/gateway_ab.py --before) has no --config there.
            *(["--config", str(config)] if extra_env else []),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1].strip()
    # The gateway reloads its key cache about once a second.
    wait_http(
        f"http://{HOST}:{port}/v1/models",
        gateway,
        log,
        timeout=10,
        headers={"authorization": f"Bearer {key}"},
    )
    return gateway, key


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def runtime_config(
    upstream_port: int, limits: bool = False, shared: bool = False, endpoints: bool = False
) -> RuntimeConfig:
    """A minimal runtime config: one openai-compatible provider (the mock), one route, one org.

    `limits`: a requests-per-minute limit and key and org budgets, far above what a run
    spends (so every request does the limits' work and none is refused). `shared`: the state
    in Redis and PostgreSQL (secrets REDIS_SECRET, DATABASE_SECRET). `endpoints`: also an
    embedding model on the same provider and the embeddings route EMBED_ROUTE over it."""
    model = ModelConfig(
        name="model",
        upstream=UPSTREAM_MODEL,
        context_window=128000,
        max_output_tokens=16384,
        capabilities=frozenset({"json_mode", "streaming", "tools"}),
        price=Price(1.0, 2.0),
    )
    embed = ModelConfig(
        name="embed",
        upstream=EMBED_UPSTREAM_MODEL,
        context_window=8192,
        max_output_tokens=None,
        capabilities=frozenset({"embeddings"}),
        price=Price(0.02, 0.0),  # embeddings bill input tokens only
        dimensions=EMBED_DIMENSIONS,
    )
    models = {model.name: model, **({embed.name: embed} if endpoints else {})}
    upstream = ProviderConfig(
        id="upstream",
        adapter="openai-compatible",
        base_url=f"http://{HOST}:{upstream_port}/v1",
        credentials={"api_key": UPSTREAM_SECRET},
        credentials_optional=False,
        timeout_s=30.0,
        connect_timeout_s=2.0,
        models=models,
    )
    fallback = FallbackPolicy(
        on=frozenset({"connect_error", "overloaded", "rate_limited", "server_error", "timeout"}),
        max_attempts=2,
        first_byte_timeout_s=10.0,
    )
    route = RouteConfig(
        name=ROUTE,
        strategy="priority",
        requires=frozenset(),
        min_context_window=None,
        max_cost_per_request_usd=None,
        fallback=fallback,
        candidates=(CandidateRef(upstream.id, model.name, None),),
        dropped=(),
    )
    routes = {route.name: route}
    if endpoints:
        routes[EMBED_ROUTE] = RouteConfig(
            name=EMBED_ROUTE,
            strategy="priority",
            requires=frozenset(),
            min_context_window=None,
            max_cost_per_request_usd=None,
            fallback=fallback,
            candidates=(CandidateRef(upstream.id, embed.name, None),),
            dropped=(),
            kind="embeddings",
        )
    no_budget = Budget(None, None)
    budget = Budget(1_000_000.0, 10_000_000.0) if limits else no_budget
    secrets = {
        UPSTREAM_SECRET: SecretSpec(
            UPSTREAM_SECRET, "providers.upstream.credentials.api_key", optional=False
        )
    }
    if shared:
        secrets[REDIS_SECRET] = SecretSpec(REDIS_SECRET, "state.redis", optional=False)
        secrets[DATABASE_SECRET] = SecretSpec(DATABASE_SECRET, "state.postgres", optional=False)
    return RuntimeConfig(
        schema_version=SCHEMA_VERSION,
        config_hash="",
        project="switchyard-bench",
        environment=ENVIRONMENT,
        compose_project=f"switchyard-bench-{ENVIRONMENT}",
        port=8000,
        workers=1,
        request_timeout_s=REQUEST_TIMEOUT_S,
        data_dir="/nonexistent",
        allow_explicit_models=False,
        key_prefix=f"sy_{ENVIRONMENT}_",
        key_environment=ENVIRONMENT,
        providers={upstream.id: upstream},
        routes=routes,
        orgs={"bench": OrgConfig("bench", None, None, frozenset(), None)},
        limits=Limits(100_000_000 if limits else None, None, budget, budget, {}),
        logging=LoggingConfig(
            sink="postgres" if shared else "sqlite",
            url_secret=DATABASE_SECRET if shared else None,
            retention_days=30,
            batch_size=64 if not shared else 256,
            flush_interval_ms=20 if not shared else 100,
        ),
        state=StateConfig(
            limits_store="redis",
            redis_url_secret=REDIS_SECRET,
            on_redis_unavailable="closed",
            keys_store="postgres",
            postgres_url_secret=DATABASE_SECRET,
        )
        if shared
        else StateConfig(),
        cost_reference_request=CostReference(1000, 1000),
        price_table_hash="sha256:" + "0" * 64,
        secrets=secrets,
    ).with_hash()  # config_hash as the compiler computes it (docs/runtime-config.md)


class SharedServers:
    """A private Redis and PostgreSQL for --shared (tests/servers.py starts them), and a fresh
    database per phase so that its row count is that phase's records."""

    def __init__(self, work: Path) -> None:
        from tests.servers import PostgresServer, RedisServer, fresh_database

        self._fresh = fresh_database
        self.redis = RedisServer.start(work / "redis")
        self.postgres = PostgresServer.start()
        self.databases: dict[int, str] = {}

    def env(self, delay_ms: int) -> dict[str, str]:
        """The shared gateway's URL secrets for one phase."""
        self.databases[delay_ms] = self._fresh(self.postgres.url)
        return {REDIS_SECRET: self.redis.url, DATABASE_SECRET: self.databases[delay_ms]}

    def record_count(self, delay_ms: int) -> int:
        """Rows in the phase's request-record table (whatever the writer named it)."""
        import psycopg

        with psycopg.connect(self.databases[delay_ms]) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_name LIKE '%request%'"
                )
            ]
            if not tables:
                return 0
            row = conn.execute(f'SELECT count(*) FROM "{tables[0]}"').fetchone()
            return int(row[0]) if row else 0

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.remove()


@dataclass
class Phase:
    """One upstream delay: the mock, the gateway in front of it and, with --floor, the floor."""

    delay_ms: int
    mock: subprocess.Popen[bytes]
    mock_port: int
    gateway: subprocess.Popen[bytes]
    gateway_port: int
    gateway_key: str
    data_dir: Path
    floor: subprocess.Popen[bytes] | None = None  # None when not asked for or after it failed
    floor_port: int = 0
    floor_log: Path | None = None
    floor_error: str | None = None
    proxy: subprocess.Popen[bytes] | None = None  # HAProxy in front of the gateway (--proxy)
    proxy_port: int = 0
    shared: subprocess.Popen[bytes] | None = None  # the shared-state gateway (--shared)
    shared_port: int = 0
    shared_key: str = ""

    @property
    def targets(self) -> tuple[str, ...]:
        # The proxy (and the shared gateway) right after the gateway, so that the runs
        # compared are back to back.
        return (
            "direct",
            "gateway",
            *(("shared",) if self.shared is not None else ()),
            *(("proxy",) if self.proxy is not None else ()),
            *(("floor",) if self.floor is not None else ()),
        )

    def port(self, target: str) -> int:
        return {
            "direct": self.mock_port,
            "gateway": self.gateway_port,
            "proxy": self.proxy_port,
            "floor": self.floor_port,
            "shared": self.shared_port,
        }[target]

    def key(self, target: str) -> str:
        """The gateway key a target's requests carry (the shared gateway has its own store)."""
        return self.shared_key if target == "shared" else self.gateway_key

    def url(self, target: str, endpoint: str = "chat") -> str:
        return f"http://{HOST}:{self.port(target)}{ENDPOINT_PATHS[endpoint]}"


def start_floor(
    procs: Processes, work: Path, delay_ms: int, mock_port: int
) -> tuple[subprocess.Popen[bytes] | None, int, Path, str | None]:
    """Start the floor proxy in front of the mock: (process or None, port, log, error or None)."""
    port = free_port()
    log = work / f"floor-{delay_ms}ms.log"
    upstream = f"http://{HOST}:{mock_port}/v1/chat/completions"
    try:
        proc = procs.start(
            [sys.executable, str(FLOOR_SCRIPT), "--port", str(port), "--upstream", upstream], log
        )
    except OSError as exc:
        return None, port, log, f"the floor proxy could not be started: {exc}"
    try:
        # GET /health is relayed to the mock as an empty POST, so a 200 proves the whole path.
        wait_http(f"http://{HOST}:{port}/health", proc, log)
    except RuntimeError:
        exited = proc.poll()
        procs.stop(proc)
        tail = log.read_text(errors="replace").strip() if log.exists() else ""
        last = tail.splitlines()[-1] if tail else "no output"
        how = (
            f"exited with code {exited}"
            if exited is not None
            else "did not answer GET /health within 30 s"
        )
        return (
            None,
            port,
            log,
            f"the floor proxy {how} at start: {last}"
            + (f"\nfloor proxy log (end):\n{tail[-2000:]}" if tail else ""),
        )
    return proc, port, log, None


def drop_floor(ph: Phase, procs: Processes, reason: str, log: Callable[[str], None]) -> None:
    """Give up on the floor for the rest of the phase: stop it by pid, keep the reason."""
    if ph.floor is not None:
        procs.stop(ph.floor)
        ph.floor = None
    if ph.floor_log is not None and ph.floor_log.exists():
        tail = ph.floor_log.read_text(errors="replace")[-2000:].strip()
        if tail:
            reason += f"\nfloor proxy log (end):\n{tail}"
    ph.floor_error = reason
    log(f"  floor FAILED at {ph.delay_ms} ms, going on without it: {reason}")


def start_proxy(
    procs: Processes, work: Path, delay_ms: int, gateway_port: int
) -> tuple[subprocess.Popen[bytes], int]:
    """HAProxy with the compiler's configuration in front of the gateway: (process, port).

    Raises RuntimeError (with HAProxy's words) if the configuration is refused or the proxy
    does not pass a request through to the gateway's /readyz.
    """
    port = free_port()
    cfg = work / f"haproxy-{delay_ms}ms.cfg"
    cfg.write_text(local_haproxy.render(gateway_port, port, REQUEST_TIMEOUT_S))
    local_haproxy.check(cfg)
    log = work / f"haproxy-{delay_ms}ms.log"
    proc = procs.start(local_haproxy.command(cfg), log)
    wait_http(f"http://{HOST}:{port}/readyz", proc, log)
    return proc, port


@contextlib.contextmanager
def phase(
    procs: Processes,
    work: Path,
    delay_ms: int,
    floor: bool = False,
    with_proxy: bool = False,
    shared: SharedServers | None = None,
    jitter_pct: float = 0.0,
    endpoints: bool = False,
) -> Iterator[Phase]:
    """Start the mock, the gateway and (if asked) the floor and HAProxy for one delay; stop them
    afterwards.

    A floor that does not start is no error here: the Phase says why in `floor_error`.
    A proxy that does not start is (RuntimeError).
    """
    mock_port, gw_port = free_port(), free_port()
    mock_log = work / f"mock-{delay_ms}ms.log"
    mock = procs.start(
        [
            sys.executable,
            str(ROOT / "bench" / "mock_upstream.py"),
            "--port",
            str(mock_port),
            "--delay-ms",
            str(delay_ms),
            "--jitter-pct",
            str(jitter_pct),
        ],
        mock_log,
    )
    gateway: subprocess.Popen[bytes] | None = None
    floor_proc: subprocess.Popen[bytes] | None = None
    floor_port, floor_log, floor_error = 0, None, None
    haproxy: subprocess.Popen[bytes] | None = None
    proxy_port = 0
    shared_gw: subprocess.Popen[bytes] | None = None
    shared_port, shared_key = 0, ""
    try:
        wait_http(f"http://{HOST}:{mock_port}/health", mock, mock_log)
        if floor:
            floor_proc, floor_port, floor_log, floor_error = start_floor(
                procs, work, delay_ms, mock_port
            )
        config = work / f"runtime-{delay_ms}ms.json"
        config.write_text(
            runtime_config(mock_port, limits=shared is not None, endpoints=endpoints).to_json()
        )
        data_dir = work / f"data-{delay_ms}ms"
        gateway, key = start_gateway(
            procs, ROOT, config, gw_port, data_dir, work / f"gateway-{delay_ms}ms.log"
        )
        if shared is not None:
            shared_config = work / f"runtime-shared-{delay_ms}ms.json"
            shared_config.write_text(runtime_config(mock_port, limits=True, shared=True).to_json())
            shared_port = free_port()
            shared_gw, shared_key = start_gateway(
                procs,
                ROOT,
                shared_config,
                shared_port,
                work / f"data-shared-{delay_ms}ms",
                work / f"gateway-shared-{delay_ms}ms.log",
                shared.env(delay_ms),
            )
        if with_proxy:
            haproxy, proxy_port = start_proxy(procs, work, delay_ms, gw_port)
        yield Phase(
            delay_ms,
            mock,
            mock_port,
            gateway,
            gw_port,
            key,
            data_dir,
            floor_proc,
            floor_port,
            floor_log,
            floor_error,
            haproxy,
            proxy_port,
            shared_gw,
            shared_port,
            shared_key,
        )
    finally:
        if haproxy is not None:
            procs.stop(haproxy)
        if shared_gw is not None:
            procs.stop(shared_gw)
        if gateway is not None:
            procs.stop(gateway)
        if floor_proc is not None:
            procs.stop(floor_proc)
        procs.stop(mock)


# --------------------------------------------------------------------------- wrk


def request_body(stream: bool, endpoint: str = "chat") -> bytes:
    """The body of a benchmark request to `endpoint` (ENDPOINT_PATHS): the same conversation
    (a terse system prompt, one user message) in each API's own shape."""
    doc: dict[str, Any]
    if endpoint == "chat":
        doc = {"model": ROUTE, "messages": MESSAGES, "stream": stream}
    elif endpoint == "responses":
        doc = {
            "model": ROUTE,
            "instructions": MESSAGES[0]["content"],
            "input": MESSAGES[1]["content"],
            "stream": stream,
        }
    elif endpoint == "messages":
        doc = {
            "model": ROUTE,
            "max_tokens": 64,
            "system": MESSAGES[0]["content"],
            "messages": [MESSAGES[1]],
            "stream": stream,
        }
    elif endpoint == "embeddings":
        doc = {"model": EMBED_ROUTE, "input": EMBED_INPUT}
    else:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    return json.dumps(doc, separators=(",", ":")).encode()


def request_headers(key: str, endpoint: str = "chat") -> dict[str, str]:
    """The headers of a benchmark request besides Host and Content-Length: the key as the
    API's official SDK sends it (x-api-key and anthropic-version for the Messages API)."""
    if endpoint == "messages":
        return {
            "Content-Type": "application/json",
            "x-api-key": key,
            "anthropic-version": ANTHROPIC_VERSION,
        }
    return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}


def wrk_script(path: Path, stream: bool, key: str, endpoint: str = "chat") -> Path:
    body = request_body(stream, endpoint).decode()
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        + "".join(
            f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n"
            for k, v in request_headers(key, endpoint).items()
        )
    )
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """Requests/s, latency percentiles and errors from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return WrkResult(
        float(rps.group(1)),
        pct.get("50", 0.0),
        pct.get("90", 0.0),
        pct.get("99", 0.0),
        int(total.group(1)),
        errors,
    )


def run_wrk(url: str, script: Path, connections: int, duration: float) -> WrkResult:
    threads = 1  # one wrk thread keeps up easily and leaves the second core to the servers
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------- time to first byte


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def _body_pieces(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> Any:
    """The body as it arrives (chunked or content-length)."""
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    else:
        yield await reader.readexactly(int(headers.get(b"content-length", b"0")))


def _has_content(line: bytes, endpoint: str = "chat") -> bool:
    """Whether an SSE line carries output text: a chat chunk's delta content, a Responses
    `response.output_text.delta`, a Messages `content_block_delta` with text."""
    if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
        return False
    doc = json.loads(line[5:])
    if endpoint == "responses":
        return doc.get("type") == "response.output_text.delta" and bool(doc.get("delta"))
    if endpoint == "messages":
        return doc.get("type") == "content_block_delta" and bool(
            (doc.get("delta") or {}).get("text")
        )
    return any((c.get("delta") or {}).get("content") for c in doc.get("choices") or [])


def ttfb_request(port: int, key: str, endpoint: str = "chat") -> bytes:
    """The bytes of one streamed request to `endpoint`, for the TTFB client."""
    body = request_body(True, endpoint)
    head = f"POST {ENDPOINT_PATHS[endpoint]} HTTP/1.1\r\nhost: {HOST}:{port}\r\n" + "".join(
        f"{k.lower()}: {v}\r\n" for k, v in request_headers(key, endpoint).items()
    )
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


async def _ttfb_series(port: int, key: str, n: int, endpoint: str = "chat") -> list[float]:
    """ms from sending each streamed request to its first content line, over one connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    request = ttfb_request(port, key, endpoint)
    times: list[float] = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            writer.write(request)
            status, headers = await _read_head(reader)
            if status != 200:
                raise RuntimeError(f"streamed request answered {status}")
            first: float | None = None
            buf = b""
            async for piece in _body_pieces(reader, headers):
                if first is None:
                    buf += piece
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if _has_content(line, endpoint):
                            first = time.perf_counter()
                            break
            if first is None:
                raise RuntimeError("a stream had no content line")
            times.append((first - start) * 1000)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return times


# What a TTFB series raises when its target misbehaves (asyncio.IncompleteReadError is an EOFError).
_TTFB_ERRORS = (OSError, EOFError, RuntimeError, ValueError, asyncio.LimitOverrunError)


def measure_ttfb(
    ph: Phase, procs: Processes, samples: int, log: Callable[[str], None]
) -> list[Ttfb]:
    """TTFB of every target, alternating in blocks so that drift hits all alike.

    A failing floor is dropped (with its samples) and the others go on; any other failure raises.
    """
    results: dict[str, list[float]] = {target: [] for target in ph.targets}

    def series(target: str, n: int) -> list[float]:
        if target != "floor":
            return asyncio.run(_ttfb_series(ph.port(target), ph.key(target), n))
        try:
            return asyncio.run(_ttfb_series(ph.port(target), ph.key(target), n))
        except _TTFB_ERRORS as exc:
            drop_floor(
                ph, procs, f"TTFB against the floor failed: {type(exc).__name__}: {exc}", log
            )
            del results["floor"]
            return []

    for target in list(results):
        series(target, 10)  # warm up
    blocks = 4
    for _ in range(blocks):
        for target in list(results):
            times = series(target, max(1, samples // blocks))
            if target in results:
                results[target] += times
    out = []
    for target, times in results.items():
        times.sort()
        out.append(
            Ttfb(
                ph.delay_ms,
                target,
                len(times),
                statistics.median(times),
                times[min(len(times) - 1, int(len(times) * 0.9))],
            )
        )
    return out


# --------------------------------------------------------------------------- the benchmark


def record_count(data_dir: Path) -> int:
    db = data_dir / "requests.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        .stdout.split("\n")[0]
        .strip()
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "system": platform.platform(),
        "wrk": wrk,
        "loadavg_1m_at_start": round(load, 2),
    }


def _wrk(
    ph: Phase,
    procs: Processes,
    target: str,
    script: Path,
    conns: int,
    duration: float,
    log: Callable[[str], None],
) -> WrkResult | None:
    """`run_wrk` against a target. For the floor, a failure drops the floor (None) instead of the
    phase."""
    if target != "floor":
        result = run_wrk(ph.url(target), script, conns, duration)
        if target == "proxy" and ph.proxy is not None and ph.proxy.poll() is not None:
            raise RuntimeError(f"HAProxy exited with code {ph.proxy.returncode} during a wrk run")
        return result
    try:
        result = run_wrk(ph.url(target), script, conns, duration)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        exited = ph.floor.poll() if ph.floor is not None else None
        how = f"the floor proxy exited with code {exited}; " if exited is not None else ""
        drop_floor(ph, procs, f"{how}wrk against the floor failed: {exc}", log)
        return None
    if ph.floor is not None and ph.floor.poll() is not None:
        drop_floor(
            ph,
            procs,
            f"the floor proxy exited with code {ph.floor.returncode} during a wrk run",
            log,
        )
        return None
    return result


def run_phase(
    ph: Phase,
    procs: Processes,
    work: Path,
    report: Report,
    duration: float,
    warmup: float,
    ttfb_samples: int,
    log: Callable[[str], None],
    shared: SharedServers | None = None,
) -> None:
    """Every wrk case and the TTFB series against every target of one phase, into `report`."""
    if ph.floor_error is not None:
        log(f"  floor FAILED at {ph.delay_ms} ms, going on without it: {ph.floor_error}")
    scripts = {
        (stream, target): wrk_script(
            work / f"{'stream' if stream else 'plain'}-{target}.lua", stream, ph.key(target)
        )
        for stream in (False, True)
        for target in ph.targets
    }
    for stream in (False, True):
        for target in ph.targets:
            _wrk(ph, procs, target, scripts[(stream, target)], 16, warmup, log)
    for stream in (False, True):
        for conns in (1, 16):
            for target in ph.targets:
                floor_pid = ph.floor.pid if target == "floor" and ph.floor is not None else None
                proxy_pids = (
                    local_haproxy.process_tree(ph.proxy.pid)
                    if target == "proxy" and ph.proxy is not None
                    else []
                )
                gw0, mock0, t0 = (
                    cpu_seconds(ph.gateway.pid),
                    cpu_seconds(ph.mock.pid),
                    time.monotonic(),
                )
                fl0 = cpu_seconds(floor_pid) if floor_pid is not None else 0.0
                sh0 = cpu_seconds(ph.shared.pid) if ph.shared is not None else 0.0
                px0 = sum(cpu_seconds(pid) for pid in proxy_pids)
                result = _wrk(ph, procs, target, scripts[(stream, target)], conns, duration, log)
                if result is None:
                    continue
                wall = time.monotonic() - t0
                gw_cpu = (
                    (cpu_seconds(ph.gateway.pid) - gw0) / wall
                    if target in ("gateway", "proxy")
                    else None
                )
                if target == "shared" and ph.shared is not None:
                    gw_cpu = (cpu_seconds(ph.shared.pid) - sh0) / wall
                fl_cpu = (cpu_seconds(floor_pid) - fl0) / wall if floor_pid is not None else None
                px_cpu = (
                    (sum(cpu_seconds(pid) for pid in proxy_pids) - px0) / wall
                    if proxy_pids
                    else None
                )
                run = Run(
                    ph.delay_ms,
                    stream,
                    conns,
                    target,
                    result,
                    gw_cpu,
                    (cpu_seconds(ph.mock.pid) - mock0) / wall,
                    fl_cpu,
                    px_cpu,
                )
                report.runs.append(run)
                log(
                    f"  {ph.delay_ms:>2} ms  {'stream' if stream else 'plain '}  c={conns:<2}  "
                    f"{target:<7}  {result.rps:>9.0f} req/s  p50 {result.p50_ms:6.2f} ms  p99 "
                    f"{result.p99_ms:6.2f} ms  errors {result.errors}"
                )
    report.ttfb += measure_ttfb(ph, procs, ttfb_samples, log)
    report.gateway_rss_mb[f"{ph.delay_ms}ms"] = round(rss_mb(ph.gateway.pid), 1)
    time.sleep(0.3)  # let the writer thread flush its last batch
    report.records_written[f"{ph.delay_ms}ms"] = record_count(ph.data_dir)
    if ph.shared is not None and shared is not None:
        time.sleep(0.5)  # the PostgreSQL writer's last batch
        report.shared_records[f"{ph.delay_ms}ms"] = shared.record_count(ph.delay_ms)
    if ph.floor_error is not None:
        report.floor_errors[f"{ph.delay_ms}ms"] = ph.floor_error


def check_endpoints(ph: Phase) -> None:
    """One request per --endpoints case (and chat completions) through the gateway, and the
    embeddings direct to the mock: each must answer 200, or the run stops with what it said
    (wrk would only count errors)."""
    cases = [("gateway", "chat", False), ("direct", "embeddings", False)]
    cases += [("gateway", endpoint, stream) for endpoint, stream in ENDPOINT_CASES]
    for target, endpoint, stream in cases:
        req = urllib.request.Request(
            ph.url(target, endpoint),
            data=request_body(stream, endpoint),
            headers=request_headers(ph.key(target), endpoint),
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            kind = "stream" if stream else "non-stream"
            raise RuntimeError(
                f"{target}: POST {ENDPOINT_PATHS[endpoint]} ({kind}) answered {exc.code}: {detail}"
            ) from None


def run_endpoints(
    ph: Phase,
    work: Path,
    report: Report,
    duration: float,
    warmup: float,
    ttfb_samples: int,
    log: Callable[[str], None],
) -> None:
    """--endpoints: the wrk cases of the other APIs (through the gateway; embeddings also
    direct to the mock) and the TTFB series of the streamed ones, into `report`.

    Each mode's responses and messages runs come right after a chat completions run through
    the gateway (endpoint "chat"), their baseline, so that drift hits them alike."""
    check_endpoints(ph)
    cases = [
        (endpoint, stream, "gateway")
        for stream in (False, True)
        for endpoint in ("chat", "responses", "messages")
    ]
    cases += [("embeddings", False, "direct"), ("embeddings", False, "gateway")]
    scripts = {
        (endpoint, stream, target): wrk_script(
            work / f"{endpoint}-{'stream' if stream else 'plain'}-{target}.lua",
            stream,
            ph.key(target),
            endpoint,
        )
        for endpoint, stream, target in cases
    }
    for endpoint, stream, target in cases:
        if endpoint != "chat":  # chat completions were warmed up by run_phase
            run_wrk(ph.url(target, endpoint), scripts[(endpoint, stream, target)], 16, warmup)
    for conns in (1, 16):
        for endpoint, stream, target in cases:
            gw0, mock0, t0 = cpu_seconds(ph.gateway.pid), cpu_seconds(ph.mock.pid), time.monotonic()
            result = run_wrk(
                ph.url(target, endpoint), scripts[(endpoint, stream, target)], conns, duration
            )
            wall = time.monotonic() - t0
            report.endpoint_runs.append(
                EndpointRun(
                    ph.delay_ms,
                    endpoint,
                    stream,
                    conns,
                    target,
                    result,
                    (cpu_seconds(ph.gateway.pid) - gw0) / wall if target == "gateway" else None,
                    (cpu_seconds(ph.mock.pid) - mock0) / wall,
                )
            )
            log(
                f"  {ph.delay_ms:>2} ms  {endpoint:<10}  {'stream' if stream else 'plain '}  "
                f"c={conns:<2}  {target:<7}  {result.rps:>9.0f} req/s  p50 "
                f"{result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
            )
    report.endpoint_ttfb += measure_endpoint_ttfb(ph, ttfb_samples)


def measure_endpoint_ttfb(ph: Phase, samples: int) -> list[Ttfb]:
    """TTFB through the gateway of each streamed endpoint (chat completions the baseline),
    alternating in blocks so that drift hits all alike. `Ttfb.target` is the endpoint."""
    results: dict[str, list[float]] = {endpoint: [] for endpoint in STREAMED_ENDPOINTS}

    def series(endpoint: str, n: int) -> list[float]:
        return asyncio.run(
            _ttfb_series(ph.port("gateway"), ph.key("gateway"), n, endpoint=endpoint)
        )

    for endpoint in results:
        series(endpoint, 10)  # warm up
    blocks = 4
    for _ in range(blocks):
        for endpoint in results:
            results[endpoint] += series(endpoint, max(1, samples // blocks))
    out = []
    for endpoint, times in results.items():
        times.sort()
        out.append(
            Ttfb(
                ph.delay_ms,
                endpoint,
                len(times),
                statistics.median(times),
                times[min(len(times) - 1, int(len(times) * 0.9))],
            )
        )
    return out


def endpoint_rows(report: Report) -> list[EndpointRow]:
    """Every --endpoints case through the gateway beside its baseline: chat completions
    through the gateway run next to it (else the main table's), or the mock's embeddings
    called directly."""

    def other(e: EndpointRun, endpoint: str, target: str) -> WrkResult | None:
        return next(
            (
                b.wrk
                for b in report.endpoint_runs
                if (b.delay_ms, b.endpoint, b.stream, b.connections, b.target)
                == (e.delay_ms, endpoint, e.stream, e.connections, target)
            ),
            None,
        )

    rows = []
    for e in report.endpoint_runs:
        if e.target != "gateway" or e.endpoint == "chat":
            continue
        if e.endpoint == "embeddings":
            base, baseline = other(e, "embeddings", "direct"), "mock direct"
        else:
            base = other(e, "chat", "gateway") or _find(
                report, e.delay_ms, e.stream, e.connections, "gateway"
            )
            baseline = "chat via gateway"
        if base is None:
            continue
        rows.append(
            EndpointRow(
                e.delay_ms,
                e.endpoint,
                e.stream,
                e.connections,
                e.wrk.rps,
                e.wrk.p50_ms,
                e.wrk.p99_ms,
                baseline,
                base.rps,
                base.p50_ms,
                round(e.wrk.rps / base.rps, 4) if base.rps else 0.0,
                round(e.wrk.p50_ms - base.p50_ms, 3),
                round(e.gateway_cpu or 0.0, 3),
                e.wrk.errors,
            )
        )
    rows.sort(
        key=lambda r: (r.delay_ms, ENDPOINT_CASES.index((r.endpoint, r.stream)), r.connections)
    )
    return rows


def _find(report: Report, delay: int, stream: bool, conns: int, target: str) -> WrkResult | None:
    for r in report.runs:
        if (r.delay_ms, r.stream, r.connections, r.target) == (delay, stream, conns, target):
            return r.wrk
    return None


def verdicts(report: Report) -> list[Verdict]:
    out: list[Verdict] = []
    for stream in (False, True):
        kind = "stream" if stream else "non-stream"
        gw = _find(report, 0, stream, 16, "gateway")
        if gw is not None:
            out.append(
                Verdict(
                    f"≥ {MIN_GATEWAY_RPS:,.0f} req/s via gateway, 16 conn, 0 ms, {kind}",
                    f"{gw.rps:,.0f} req/s",
                    gw.rps >= MIN_GATEWAY_RPS and gw.errors == 0,
                )
            )
    for stream in (False, True):
        for conns in (1, 16):
            kind = "stream" if stream else "non-stream"
            d, g = (
                _find(report, 20, stream, conns, "direct"),
                _find(report, 20, stream, conns, "gateway"),
            )
            if d is not None and g is not None and d.rps > 0:
                ratio = g.rps / d.rps
                out.append(
                    Verdict(
                        f"≥ {MIN_RATIO_20MS:.0%} of direct, 20 ms, {conns} conn, {kind}",
                        f"{ratio:.1%} ({g.rps:,.0f} / {d.rps:,.0f})",
                        ratio >= MIN_RATIO_20MS and g.errors == 0,
                    )
                )
    for delay in (0, 20):
        for stream in (False, True):
            kind = "stream" if stream else "non-stream"
            d, g = (
                _find(report, delay, stream, 1, "direct"),
                _find(report, delay, stream, 1, "gateway"),
            )
            if d is not None and g is not None:
                added = g.p50_ms - d.p50_ms
                out.append(
                    Verdict(
                        f"added p50 ≤ {MAX_ADDED_P50_MS} ms, 1 conn, {delay} ms, {kind}",
                        f"+{added:.2f} ms ({g.p50_ms:.2f} vs {d.p50_ms:.2f})",
                        added <= MAX_ADDED_P50_MS,
                    )
                )
    for delay in (0, 20):
        by = {t.target: t for t in report.ttfb if t.delay_ms == delay}
        if "direct" in by and "gateway" in by:
            added = by["gateway"].median_ms - by["direct"].median_ms
            out.append(
                Verdict(
                    f"added TTFB ≤ {MAX_ADDED_TTFB_MS} ms (median), stream, {delay} ms",
                    f"+{added:.2f} ms ({by['gateway'].median_ms:.2f} vs "
                    f"{by['direct'].median_ms:.2f})",
                    added <= MAX_ADDED_TTFB_MS,
                )
            )
    return out


def _run(report: Report, delay: int, stream: bool, conns: int, target: str) -> Run | None:
    return next(
        (
            r
            for r in report.runs
            if (r.delay_ms, r.stream, r.connections, r.target) == (delay, stream, conns, target)
        ),
        None,
    )


def floor_rows(report: Report) -> list[FloorRow]:
    """The floor beside direct and the gateway, for every wrk case that has all three."""
    rows = []
    for delay in sorted({r.delay_ms for r in report.runs}):
        for stream in (False, True):
            for conns in (1, 16):
                d, g, f = (
                    _find(report, delay, stream, conns, t) for t in ("direct", "gateway", "floor")
                )
                if d is None or g is None or f is None:
                    continue
                rows.append(
                    FloorRow(
                        delay,
                        stream,
                        conns,
                        d.rps,
                        g.rps,
                        f.rps,
                        round(f.rps / d.rps, 4) if d.rps else 0.0,
                        round(g.rps / f.rps, 4) if f.rps else 0.0,
                        f.p50_ms,
                        round(f.p50_ms - d.p50_ms, 3),
                    )
                )
    return rows


def floor_ttfb_added(report: Report) -> dict[str, float]:
    """Per delay, the floor's TTFB median minus direct's."""
    out = {}
    for delay in sorted({t.delay_ms for t in report.ttfb}):
        by = {t.target: t for t in report.ttfb if t.delay_ms == delay}
        if "direct" in by and "floor" in by:
            out[f"{delay}ms"] = round(by["floor"].median_ms - by["direct"].median_ms, 3)
    return out


def proxy_rows(report: Report) -> list[ProxyRow]:
    """Every wrk case through HAProxy beside the same case against the gateway."""
    rows = []
    for delay in sorted({r.delay_ms for r in report.runs}):
        for stream in (False, True):
            for conns in (1, 16):
                g, p = (
                    _run(report, delay, stream, conns, "gateway"),
                    _run(report, delay, stream, conns, "proxy"),
                )
                if g is None or p is None:
                    continue
                rows.append(
                    ProxyRow(
                        delay,
                        stream,
                        conns,
                        g.wrk.rps,
                        p.wrk.rps,
                        round(p.wrk.rps / g.wrk.rps, 4) if g.wrk.rps else 0.0,
                        g.wrk.p50_ms,
                        g.wrk.p99_ms,
                        p.wrk.p50_ms,
                        p.wrk.p99_ms,
                        round(p.wrk.p50_ms - g.wrk.p50_ms, 3),
                        round(p.proxy_cpu or 0.0, 3),
                        round(p.gateway_cpu or 0.0, 3),
                        p.wrk.errors,
                    )
                )
    return rows


def proxy_ttfb_added(report: Report) -> dict[str, float]:
    """Per delay, the TTFB median through HAProxy minus the gateway's own."""
    out = {}
    for delay in sorted({t.delay_ms for t in report.ttfb}):
        by = {t.target: t for t in report.ttfb if t.delay_ms == delay}
        if "gateway" in by and "proxy" in by:
            out[f"{delay}ms"] = round(by["proxy"].median_ms - by["gateway"].median_ms, 3)
    return out


def proxy_verdicts(report: Report) -> list[Verdict]:
    """What HAProxy adds to the gateway: median latency at 1 connection, throughput at 16."""
    out = []
    for row in report.proxy_rows:
        kind = "stream" if row.stream else "non-stream"
        if row.connections == 1:
            out.append(
                Verdict(
                    f"proxy adds ≤ {MAX_PROXY_ADDED_P50_MS} ms p50, 1 conn, {row.delay_ms} ms, "
                    f"{kind}",
                    f"{row.added_p50_ms:+.2f} ms ({row.proxy_p50_ms:.2f} vs "
                    f"{row.gateway_p50_ms:.2f})",
                    row.added_p50_ms <= MAX_PROXY_ADDED_P50_MS and row.errors == 0,
                )
            )
        else:
            out.append(
                Verdict(
                    f"proxy keeps ≥ {MIN_PROXY_RATIO:.0%} of throughput, 16 conn, {row.delay_ms} "
                    f"ms, {kind}",
                    f"{row.ratio:.1%} ({row.proxy_rps:,.0f} / {row.gateway_rps:,.0f} req/s)",
                    row.ratio >= MIN_PROXY_RATIO and row.errors == 0,
                )
            )
    return out


def shared_rows(report: Report) -> list[SharedRow]:
    """Every wrk case against the shared-state gateway beside the embedded one."""
    rows = []
    for delay in sorted({r.delay_ms for r in report.runs}):
        for stream in (False, True):
            for conns in (1, 16):
                g, s = (
                    _run(report, delay, stream, conns, "gateway"),
                    _run(report, delay, stream, conns, "shared"),
                )
                if g is None or s is None:
                    continue
                rows.append(
                    SharedRow(
                        delay,
                        stream,
                        conns,
                        g.wrk.rps,
                        s.wrk.rps,
                        round(s.wrk.rps / g.wrk.rps, 4) if g.wrk.rps else 0.0,
                        g.wrk.p50_ms,
                        g.wrk.p99_ms,
                        s.wrk.p50_ms,
                        s.wrk.p99_ms,
                        round(s.wrk.p50_ms / g.wrk.p50_ms, 4) if g.wrk.p50_ms else 0.0,
                        s.wrk.errors,
                    )
                )
    return rows


def shared_verdicts(report: Report) -> list[Verdict]:
    """Shared state vs the embedded defaults at 16 connections: throughput and median latency
    within 15 % (issue 12)."""
    out = []
    for row in report.shared_rows:
        if row.connections != 16:
            continue
        kind = "stream" if row.stream else "non-stream"
        out.append(
            Verdict(
                f"shared keeps ≥ {MIN_SHARED_RATIO:.0%} of throughput, 16 conn, {row.delay_ms} "
                f"ms, {kind}",
                f"{row.ratio:.1%} ({row.shared_rps:,.0f} / {row.gateway_rps:,.0f} req/s)",
                row.ratio >= MIN_SHARED_RATIO and row.errors == 0,
            )
        )
        out.append(
            Verdict(
                f"shared p50 ≤ {MAX_SHARED_P50_RATIO:.0%} of embedded, 16 conn, {row.delay_ms} "
                f"ms, {kind}",
                f"{row.p50_ratio:.1%} ({row.shared_p50_ms:.2f} vs {row.gateway_p50_ms:.2f} ms)",
                row.p50_ratio <= MAX_SHARED_P50_RATIO,
            )
        )
    return out


def render_shared(report: Report) -> list[str]:
    """The shared-state table and verdicts."""
    lines = [
        "",
        "Shared state (Redis limits, PostgreSQL records and keys) against the embedded defaults "
        "(in-process limits, SQLite), the same limits configured on both. ratio = shared / "
        "embedded.",
        "",
        "| delay | mode | conn | embedded req/s | shared req/s | ratio | embedded p50 / p99 ms | "
        "shared p50 / p99 ms | p50 ratio |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.shared_rows:
        lines.append(
            f"| {row.delay_ms} ms | {'stream' if row.stream else 'non-stream'} | "
            f"{row.connections} | {row.gateway_rps:,.0f} | {row.shared_rps:,.0f} | "
            f"{row.ratio:.1%} | {row.gateway_p50_ms:.2f} / {row.gateway_p99_ms:.2f} | "
            f"{row.shared_p50_ms:.2f} / {row.shared_p99_ms:.2f} | {row.p50_ratio:.1%} |"
        )
    errors = sum(r.wrk.errors for r in report.runs if r.target == "shared")
    lines += [
        "",
        "Records in PostgreSQL after each phase: "
        + ", ".join(f"{k}: {v:,}" for k, v in report.shared_records.items())
        + f"; wrk errors against the shared gateway: {errors}",
        "",
        "Shared-state targets:",
    ]
    lines += [
        f"  {'PASS' if v.ok else 'FAIL'}  {v.target}: {v.detail}" for v in report.shared_verdicts
    ]
    return lines


def render_proxy(report: Report) -> list[str]:
    """The through-HAProxy table, its TTFB line and its verdicts."""
    lines = [
        "",
        f"Through HAProxy ({report.machine.get('haproxy', 'haproxy')}; the compiler's haproxy.cfg, "
        "bench/local_haproxy.py): "
        "client -> HAProxy -> gateway -> mock, against client -> gateway -> mock. ratio = proxy / "
        "gateway.",
        "",
        "| delay | mode | conn | gateway req/s | via proxy req/s | ratio | gateway p50 / p99 ms | "
        "via proxy p50 / p99 ms | added p50 ms | HAProxy CPU | gateway CPU (proxy run) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.proxy_rows:
        lines.append(
            f"| {row.delay_ms} ms | {'stream' if row.stream else 'non-stream'} | {row.connections} "
            f"| {row.gateway_rps:,.0f} | {row.proxy_rps:,.0f} | "
            f"{row.ratio:.1%} | {row.gateway_p50_ms:.2f} / {row.gateway_p99_ms:.2f} | "
            f"{row.proxy_p50_ms:.2f} / {row.proxy_p99_ms:.2f} | "
            f"{row.added_p50_ms:+.2f} | {row.proxy_cpu:.2f} | {row.gateway_cpu:.2f} |"
        )
    if report.proxy_ttfb_added_ms:
        by = {(t.delay_ms, t.target): t for t in report.ttfb}
        parts = []
        for key, added in report.proxy_ttfb_added_ms.items():
            delay = int(key.removesuffix("ms"))
            p = by[(delay, "proxy")]
            parts.append(
                f"{delay} ms: {p.median_ms:.2f} / {p.p90_ms:.2f} ms median / p90, {added:+.2f} ms "
                "over the gateway"
            )
        lines += ["", "TTFB through HAProxy: " + "; ".join(parts)]
    errors = sum(r.wrk.errors for r in report.runs if r.target == "proxy")
    lines += [
        f"wrk errors through the proxy (non-2xx + socket): {errors}",
        "",
        "Proxy targets (HAProxy vs the gateway called directly):",
    ]
    lines += [
        f"  {'PASS' if v.ok else 'FAIL'}  {v.target}: {v.detail}" for v in report.proxy_verdicts
    ]
    return lines


def render_endpoints(report: Report) -> list[str]:
    """The --endpoints table and its TTFB lines (context: the issue sets no targets here)."""
    lines = [
        "",
        "Endpoints through the gateway. The candidate is openai-compatible, so /v1/responses and "
        "/v1/messages are translated (chat completions upstream): added = the endpoint's p50 - "
        "chat completions' through the gateway (same delay, mode, connections, run just before), "
        "the translation's cost. /v1/embeddings "
        f"({len(EMBED_INPUT)} inputs, {EMBED_DIMENSIONS} dimensions, float): added = through "
        "the gateway - the mock called directly. ratio = req/s / baseline req/s.",
        "",
        "| delay | endpoint | mode | conn | req/s | p50 / p99 ms | baseline | baseline req/s | "
        "ratio | baseline p50 ms | added p50 ms | gateway CPU | errors |",
        "| ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.endpoint_rows:
        lines.append(
            f"| {row.delay_ms} ms | {ENDPOINT_PATHS[row.endpoint]} | "
            f"{'stream' if row.stream else 'non-stream'} | {row.connections} | {row.rps:,.0f} | "
            f"{row.p50_ms:.2f} / {row.p99_ms:.2f} | {row.baseline} | {row.baseline_rps:,.0f} | "
            f"{row.ratio:.1%} | {row.baseline_p50_ms:.2f} | {row.added_p50_ms:+.2f} | "
            f"{row.gateway_cpu:.2f} | {row.errors} |"
        )
    if report.endpoint_ttfb:
        lines += [
            "",
            "Time to first text delta through the gateway (sequential streamed requests, one "
            "keep-alive connection; added = minus chat completions' in the same series):",
            "",
            "| delay | endpoint | median / p90 ms | added median ms | samples |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        for delay in sorted({t.delay_ms for t in report.endpoint_ttfb}):
            by = {t.target: t for t in report.endpoint_ttfb if t.delay_ms == delay}
            chat = by.get("chat")
            for endpoint in STREAMED_ENDPOINTS:
                t = by.get(endpoint)
                if t is None:
                    continue
                added = (
                    "–"
                    if chat is None or endpoint == "chat"
                    else f"{t.median_ms - chat.median_ms:+.2f}"
                )
                lines.append(
                    f"| {delay} ms | {ENDPOINT_PATHS[endpoint]} | {t.median_ms:.2f} / "
                    f"{t.p90_ms:.2f} | {added} | {t.samples} |"
                )
    errors = sum(e.wrk.errors for e in report.endpoint_runs)
    lines += ["", f"wrk errors in the endpoint runs (non-2xx + socket): {errors}"]
    return lines


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "?"


def floor_context(report: Report) -> list[str]:
    """How the gateway compares with the floor at 20 ms: throughput per case, and added TTFB."""
    delay = 20
    if not any(r.delay_ms == delay for r in report.runs):
        return [f"  (no {delay} ms phase in this run)"]
    if f"{delay}ms" in report.floor_errors and not any(
        r.delay_ms == delay and r.target == "floor" for r in report.runs
    ):
        return [
            f"  the floor was not measured at {delay} ms: "
            f"{_first_line(report.floor_errors[f'{delay}ms'])}"
        ]
    out = []
    for row in report.floor_rows:
        if row.delay_ms == delay:
            kind = "stream" if row.stream else "non-stream"
            out.append(
                f"  {delay} ms, {kind}, {row.connections} conn: gateway / floor "
                f"{row.gateway_over_floor:.1%} "
                f"({row.gateway_rps:,.0f} / {row.floor_rps:,.0f} req/s); floor / direct "
                f"{row.floor_ratio:.1%}"
            )
    by = {t.target: t for t in report.ttfb if t.delay_ms == delay}
    if "direct" in by and "gateway" in by and "floor" in by:
        fl = by["floor"].median_ms - by["direct"].median_ms
        gw = by["gateway"].median_ms - by["direct"].median_ms
        out.append(
            f"  TTFB, {delay} ms: the floor adds {fl:+.2f} ms (median) over direct, the gateway "
            f"{gw:+.2f} ms, so {gw - fl:+.2f} ms is the gateway's own"
        )
    elif f"{delay}ms" in report.floor_errors:
        out.append(
            f"  TTFB, {delay} ms: no floor figure: {_first_line(report.floor_errors[f'{delay}ms'])}"
        )
    return out


def _na(value: str | None) -> str:
    return "–" if value is None else value


def render(report: Report) -> str:
    """The report as text: the wrk table, the TTFB table, the verdicts and (with --floor)
    context."""
    fl = report.floor
    lines = [
        f"Gateway benchmark, {report.started}; {report.machine['cpus']} CPUs "
        f"({report.machine['cpu']}), Python {report.machine['python']}, "
        f"{report.machine['wrk'].split(' Copyright')[0]}, load average "
        f"{report.machine['loadavg_1m_at_start']} at start",
        f"wrk -t1, {report.duration_s:g} s per run; the gateway: 1 worker, SQLite request log on. "
        "CPU = cores busy during the run.",
    ]
    if fl:
        lines.append(
            "floor = bench/floor_proxy.py (uvicorn relaying bytes through the gateway's transport; "
            "no gateway work); floor ratio = floor / direct."
        )
    lines += [
        "",
        "| delay | mode | conn | direct req/s | gateway req/s | ratio |"
        + (" floor req/s | floor ratio |" if fl else "")
        + " direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | gateway CPU |"
        + " mock CPU (gw run) |",
        "| ---: | --- | ---: | ---: | ---: | ---: |"
        + (" ---: | ---: |" if fl else "")
        + " ---: | ---: | ---: | ---: | ---: |",
    ]
    for delay in sorted({r.delay_ms for r in report.runs}):
        for stream in (False, True):
            for conns in (1, 16):
                d, g, f = (
                    _run(report, delay, stream, conns, t) for t in ("direct", "gateway", "floor")
                )
                if d is None or g is None:
                    continue
                ratio = g.wrk.rps / d.wrk.rps if d.wrk.rps else 0.0
                floor_cells = ""
                if fl:
                    f_rps = None if f is None else f"{f.wrk.rps:,.0f}"
                    f_ratio = (
                        None if f is None else f"{f.wrk.rps / d.wrk.rps if d.wrk.rps else 0.0:.1%}"
                    )
                    floor_cells = f" {_na(f_rps)} | {_na(f_ratio)} |"
                lines.append(
                    f"| {delay} ms | {'stream' if stream else 'non-stream'} | {conns} | "
                    f"{d.wrk.rps:,.0f} | {g.wrk.rps:,.0f} | {ratio:.1%} |{floor_cells} "
                    f"{d.wrk.p50_ms:.2f} / {d.wrk.p99_ms:.2f} | {g.wrk.p50_ms:.2f} / "
                    f"{g.wrk.p99_ms:.2f} | {g.wrk.p50_ms - d.wrk.p50_ms:+.2f} | "
                    f"{g.gateway_cpu or 0:.2f} | {g.mock_cpu:.2f} |"
                )
    lines += [
        "",
        "Time to first content byte of a stream (sequential requests, one keep-alive connection):",
        "",
        "| delay | direct median / p90 ms | gateway median / p90 ms | added median ms |"
        + (" floor median / p90 ms | floor added ms |" if fl else "")
        + " samples |",
        "| ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if fl else "") + " ---: |",
    ]
    for delay in sorted({t.delay_ms for t in report.ttfb}):
        by = {t.target: t for t in report.ttfb if t.delay_ms == delay}
        td, tg, tf = by["direct"], by["gateway"], by.get("floor")
        floor_cells = ""
        if fl:
            floor_cells = (
                f" {tf.median_ms:.2f} / {tf.p90_ms:.2f} | {tf.median_ms - td.median_ms:+.2f} |"
                if tf is not None
                else " – | – |"
            )
        lines.append(
            f"| {delay} ms | {td.median_ms:.2f} / {td.p90_ms:.2f} | {tg.median_ms:.2f} / "
            f"{tg.p90_ms:.2f} | {tg.median_ms - td.median_ms:+.2f} |{floor_cells} {tg.samples} |"
        )
    errors = sum(r.wrk.errors for r in report.runs if r.target in ("direct", "gateway"))
    lines += [
        "",
        "Gateway RSS after each phase: "
        f"{', '.join(f'{k}: {v:.1f} MiB' for k, v in report.gateway_rss_mb.items())}; "
        "request records written: "
        f"{', '.join(f'{k}: {v:,}' for k, v in report.records_written.items())}; wrk errors "
        f"(non-2xx + socket): {errors}",
    ]
    if fl:
        floor_errors = sum(r.wrk.errors for r in report.runs if r.target == "floor")
        lines.append(f"Floor wrk errors (non-2xx + socket): {floor_errors}")
        lines += [
            f"FLOOR FAILED at {k}, that phase has no (or partial) floor figures: {_first_line(v)}"
            for k, v in report.floor_errors.items()
        ]
    lines += ["", "Targets:"]
    lines += [f"  {'PASS' if v.ok else 'FAIL'}  {v.target}: {v.detail}" for v in report.verdicts]
    if fl:
        lines += [
            "",
            "Context (not targets): gateway / floor is what the gateway's own work costs; floor / "
            "direct is what uvicorn and one more hop cost.",
        ]
        lines += report.context
    if report.proxy:
        lines += render_proxy(report)
    if report.shared:
        lines += render_shared(report)
    if report.endpoints:
        lines += render_endpoints(report)
    return "\n".join(lines)


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON; without --endpoints, without its (empty) endpoint fields, as before
    the option existed."""
    doc = asdict(report)
    if not report.endpoints:
        for name in ("endpoints", "endpoint_runs", "endpoint_rows", "endpoint_ttfb"):
            del doc[name]
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark the gateway against the mock upstream called directly (a report, not a "
            "test)."
        )
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per wrk run (default 10)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 s runs, 1 s warm-up, 80 TTFB samples"
    )
    parser.add_argument(
        "--delays", default="0,20", help="upstream delays in ms, comma-separated (default 0,20)"
    )
    parser.add_argument(
        "--ttfb-samples",
        type=int,
        default=400,
        help="streamed requests per target for TTFB (default 400)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (logs, runtime.json, request log)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure bench/floor_proxy.py (uvicorn relaying bytes) as a third target",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="also measure the gateway through HAProxy with the compiler's haproxy.cfg",
    )
    parser.add_argument(
        "--shared",
        action="store_true",
        help="also measure a gateway whose limits are in Redis and records and keys in "
        "PostgreSQL (both started privately), against the embedded defaults",
    )
    parser.add_argument(
        "--jitter-pct",
        type=float,
        default=0.0,
        help="vary the mock's delay by up to this many percent either way, as a real "
        "provider's latency varies (default 0: every answer exactly --delays)",
    )
    parser.add_argument(
        "--endpoints",
        action="store_true",
        help="also measure /v1/responses, /v1/messages (non-stream and stream) and "
        "/v1/embeddings through the gateway beside chat completions",
    )
    args = parser.parse_args(argv)
    duration = 2.0 if args.quick else args.duration
    warmup = 1.0 if args.quick else 3.0
    samples = 80 if args.quick else args.ttfb_samples
    delays = [int(d) for d in args.delays.split(",") if d.strip()]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = Report(
        time.strftime("%Y-%m-%d %H:%M"),
        machine(),
        duration,
        floor=args.floor,
        proxy=args.proxy,
        shared=args.shared,
        endpoints=args.endpoints,
    )
    if args.proxy:
        report.machine["haproxy"] = local_haproxy.version()
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    servers: SharedServers | None = None
    try:
        if args.shared:
            log("starting a private Redis and PostgreSQL for the shared-state gateway")
            servers = SharedServers(work)
        for delay in delays:
            extras = [
                name
                for name, on in (
                    ("the floor", args.floor),
                    ("HAProxy", args.proxy),
                    ("the shared-state gateway", args.shared),
                )
                if on
            ]
            log(
                f"upstream delay {delay} ms: starting the mock, the "
                f"gateway{''.join(f', {e}' for e in extras)}"
            )
            with phase(
                procs,
                work,
                delay,
                args.floor,
                args.proxy,
                servers,
                args.jitter_pct,
                args.endpoints,
            ) as ph:
                floor_pid = f", floor pid {ph.floor.pid}" if ph.floor is not None else ""
                proxy_pid = (
                    f", HAProxy pid {ph.proxy.pid} (master), port {ph.proxy_port}"
                    if ph.proxy is not None
                    else ""
                )
                log(f"  gateway pid {ph.gateway.pid}, mock pid {ph.mock.pid}{floor_pid}{proxy_pid}")
                run_phase(ph, procs, work, report, duration, warmup, samples, log, servers)
                if args.endpoints:
                    log(f"  {delay} ms: the other endpoints through the gateway")
                    run_endpoints(ph, work, report, duration, warmup, samples, log)
    except (RuntimeError, subprocess.SubprocessError, OSError, EOFError) as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        procs.stop_all()
        if servers is not None:
            servers.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    report.verdicts = verdicts(report)
    if report.floor:
        report.floor_rows = floor_rows(report)
        report.floor_ttfb_added_ms = floor_ttfb_added(report)
        report.context = floor_context(report)
    if report.shared:
        report.shared_rows = shared_rows(report)
        report.shared_verdicts = shared_verdicts(report)
    if report.proxy:
        report.proxy_rows = proxy_rows(report)
        report.proxy_ttfb_added_ms = proxy_ttfb_added(report)
        report.proxy_verdicts = proxy_verdicts(report)
    if report.endpoints:
        report.endpoint_rows = endpoint_rows(report)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report_json(report), indent=2) + "\n")
    # The gateway's figures above stand; exit 1 says the floor asked for was not (fully) measured.
    return 1 if report.floor_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
