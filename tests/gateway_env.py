"""A running gateway for tests: fake providers on loopback, a runtime.json pointing at them,
`python -m runtime serve` as a real subprocess, and a key made with `python -m runtime keys`.

The runtime.json is built from the runtime's own typed classes (runtime/config.py) and
written with their serialisation, as the compiler writes it; tests change it with
`dataclasses.replace`. `tests/e2e/test_gateway_compiled.py` covers the compiler's own output.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

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
)
from runtime.vocabulary import FALLBACK_ERROR_CLASSES, Adapter, Strategy

ROOT = Path(__file__).resolve().parent.parent

FAKE_KEYS = {
    "OPENAI_API_KEY": "test-openai-key",
    "ANTHROPIC_API_KEY": "test-anthropic-key",
    "GEMINI_API_KEY": "test-gemini-key",
}

ALL_CLASSES = sorted(FALLBACK_ERROR_CLASSES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_config(
    name: str,
    upstream: str,
    caps: list[str],
    window: int = 128000,
    price: tuple[float, float] | None = (1.0, 2.0),
    max_out: int | None = 16384,
) -> ModelConfig:
    """A model of a test provider."""
    return ModelConfig(
        name=name,
        upstream=upstream,
        context_window=window,
        max_output_tokens=max_out,
        capabilities=frozenset(caps),
        price=None if price is None else Price(*price),
    )


FULL = ["streaming", "tools", "vision", "json_mode", "json_schema", "parallel_tool_calls"]


def route_config(
    name: str,
    cands: list[tuple[str, str]],
    *,
    strategy: Strategy = "priority",
    on: list[str] | None = None,
    max_attempts: int = 3,
    cap: float | None = None,
    weights: list[float | None] | None = None,
    first_byte_timeout_s: float = 1.0,
) -> RouteConfig:
    """A route over `cands` ((provider, model) pairs), falling back on every class by default."""
    return RouteConfig(
        name=name,
        strategy=strategy,
        requires=frozenset(),
        min_context_window=None,
        max_cost_per_request_usd=cap,
        fallback=FallbackPolicy(
            on=frozenset(ALL_CLASSES if on is None else on),
            max_attempts=max_attempts,
            first_byte_timeout_s=first_byte_timeout_s,
        ),
        candidates=tuple(
            CandidateRef(p, m, None if weights is None else weights[i])
            for i, (p, m) in enumerate(cands)
        ),
        dropped=(),
    )


def runtime_config(
    openai_url: str,
    anthropic_url: str,
    gemini_url: str,
    *,
    environment: str = "test",
    timeout_s: float = 2.0,
    first_byte_timeout_s: float = 1.0,
) -> RuntimeConfig:
    """A runtime config: three fake providers plus mock, and routes that exercise routing.

    Change it with `dataclasses.replace` (and the `replace_*` helpers below); `Gateway`
    writes it with its content hash.
    """

    def provider(
        pid: Adapter, url: str | None, secret: str | None, models: list[ModelConfig]
    ) -> ProviderConfig:
        return ProviderConfig(
            id=pid,
            adapter=pid,
            base_url=url,
            credentials={"api_key": secret} if secret else {},
            credentials_optional=False,
            timeout_s=timeout_s,
            connect_timeout_s=1.0,
            models={m.name: m for m in models},
        )

    def route(name: str, cands: list[tuple[str, str]], **kwargs: Any) -> tuple[str, RouteConfig]:
        return name, route_config(name, cands, first_byte_timeout_s=first_byte_timeout_s, **kwargs)

    providers = [
        provider(
            "openai",
            openai_url + "/v1",
            "OPENAI_API_KEY",
            [
                model_config("gpt", "gpt-4o-2024-08-06", FULL, 128000, (2.5, 10.0)),
                model_config("gpt-small", "gpt-4o-mini", FULL, 16000, (0.15, 0.6)),
            ],
        ),
        provider(
            "anthropic",
            anthropic_url,
            "ANTHROPIC_API_KEY",
            [
                model_config(
                    "claude",
                    "claude-sonnet-4-20250514",
                    ["streaming", "tools", "vision"],
                    200000,
                    (3.0, 15.0),
                )
            ],
        ),
        provider(
            "gemini",
            gemini_url + "/v1beta",
            "GEMINI_API_KEY",
            [model_config("gemini", "gemini-2.5-flash", FULL, 1048576, (0.3, 2.5))],
        ),
        provider(
            "mock",
            None,
            None,
            [model_config("echo", "echo", FULL, 1048576, (0.0, 0.0), 65536)],
        ),
    ]
    routes = dict(
        [
            route("chat", [("openai", "gpt"), ("anthropic", "claude"), ("gemini", "gemini")]),
            route("solo", [("openai", "gpt")]),
            route("to-anthropic", [("openai", "gpt"), ("anthropic", "claude")]),
            route("to-gemini", [("openai", "gpt"), ("gemini", "gemini")]),
            route("anthropic-first", [("anthropic", "claude"), ("openai", "gpt")]),
            route("gemini-first", [("gemini", "gemini"), ("openai", "gpt")]),
            route(
                "no-fallback-on-429",
                [("openai", "gpt"), ("anthropic", "claude")],
                on=["server_error"],
            ),
            route(
                "small-then-large",
                [("openai", "gpt-small"), ("openai", "gpt"), ("anthropic", "claude")],
            ),
            route(
                "cheapest",
                [("anthropic", "claude"), ("openai", "gpt"), ("gemini", "gemini")],
                strategy="cheapest",
            ),
            route("capped", [("anthropic", "claude"), ("openai", "gpt-small")], cap=0.005),
            route(
                "weighted",
                [("openai", "gpt"), ("anthropic", "claude")],
                strategy="weighted",
                weights=[1.0, 3.0],
            ),
            route("offline", [("mock", "echo")]),
            route("one-attempt", [("openai", "gpt"), ("anthropic", "claude")], max_attempts=1),
        ]
    )
    no_budget = Budget(None, None)
    return RuntimeConfig(
        schema_version=SCHEMA_VERSION,
        config_hash="",
        project="switchyard-test",
        environment=environment,
        compose_project=f"switchyard-test-{environment}",
        port=8000,
        workers=1,
        request_timeout_s=30.0,
        data_dir="/nonexistent",
        allow_explicit_models=True,
        key_prefix=f"sy_{environment}_",
        key_environment=environment,
        providers={p.id: p for p in providers},
        routes=routes,
        orgs={
            "acme": OrgConfig("acme", None, None, frozenset(), None),
            "limited": OrgConfig("limited", frozenset({"offline"}), False, frozenset(), None),
        },
        limits=Limits(None, None, no_budget, no_budget, {}),
        logging=LoggingConfig(
            sink="sqlite",
            url_secret=None,
            retention_days=30,
            batch_size=64,
            flush_interval_ms=20,
        ),
        cost_reference_request=CostReference(1000, 1000),
        price_table_hash="sha256:" + "0" * 64,
        secrets={
            name: SecretSpec(
                name=name,
                needed_by=f"providers.{name.split('_')[0].lower()}.credentials.api_key",
                optional=False,
            )
            for name in FAKE_KEYS
        },
    ).with_hash()


def replace_provider(config: RuntimeConfig, pid: str, **changes: Any) -> RuntimeConfig:
    """`config` with `dataclasses.replace(provider, **changes)` for provider `pid`."""
    providers = {**config.providers, pid: replace(config.providers[pid], **changes)}
    return replace(config, providers=providers)


def replace_model(config: RuntimeConfig, pid: str, name: str, **changes: Any) -> RuntimeConfig:
    """`config` with `dataclasses.replace(model, **changes)` for model `pid/name`."""
    provider = config.providers[pid]
    models = {**provider.models, name: replace(provider.models[name], **changes)}
    return replace_provider(config, pid, models=models)


def replace_secret(config: RuntimeConfig, name: str, **changes: Any) -> RuntimeConfig:
    """`config` with `dataclasses.replace(secret, **changes)` for the secret `name`."""
    return replace(
        config, secrets={**config.secrets, name: replace(config.secrets[name], **changes)}
    )


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"python -m runtime {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


class Gateway:
    """`python -m runtime serve` on a free loopback port, with its own data dir."""

    def __init__(
        self,
        config: RuntimeConfig,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        self.config = config.with_hash()
        self.serve_args = serve_args  # more `serve` options
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "runtime.json"
        self.config_path.write_text(self.config.to_json())
        self.port = free_port()
        self.env = {**os.environ, **FAKE_KEYS, **(env or {})}
        self.env.pop("SWITCHYARD_DATA_DIR", None)
        self.workers = workers
        self.proc: subprocess.Popen[str] | None = None
        self.log = workdir / "gateway.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def environment(self) -> str:
        return self.config.environment

    def start(self, wait_ready: bool = True) -> Gateway:
        logf = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
                "--log-level",
                "warning",
                *self.serve_args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 20
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"gateway did not become {'ready' if wait_ready else 'healthy'}:\n"
            f"{self.log.read_text()}"
        )

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def key(self, org: str = "acme", name: str = "test", environment: str | None = None) -> str:
        env = environment or self.environment
        proc = run_cli(
            "keys",
            "create",
            "--env",
            env,
            "--org",
            org,
            "--name",
            name,
            "--data-dir",
            str(self.data_dir),
        )
        key = proc.stdout.strip().splitlines()[-1].strip()
        assert key.startswith(f"sy_{env}_"), proc.stdout
        if env == self.environment and self.proc is not None:
            self.wait_for_key(key)
        return key

    def wait_for_key(self, key: str, timeout: float = 5.0) -> None:
        """Until the gateway knows the key (it reloads its key cache every second)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            req = urllib.request.Request(
                self.url + "/v1/models", headers={"authorization": f"Bearer {key}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=2):
                    return
            except urllib.error.HTTPError:
                time.sleep(0.05)
        raise AssertionError("the gateway did not pick up the new key")

    def records(
        self,
        wait_for: int | None = None,
        timeout: float = 5.0,
        endpoint: str | None = "/v1/chat/completions",
    ) -> list[dict[str, Any]]:
        """Rows of the request log, oldest first; waits until at least `wait_for` are there.
        Only chat requests' by default (`wait_for_key` polls `/v1/models`, which is recorded
        too); `endpoint=None` for every row."""
        db = self.data_dir / "requests.db"
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while True:
            if db.exists():
                conn = sqlite3.connect(db, timeout=5)
                conn.row_factory = sqlite3.Row
                try:
                    rows = [
                        dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY ts, rowid")
                    ]
                    if endpoint is not None:
                        rows = [r for r in rows if r.get("endpoint", endpoint) == endpoint]
                except sqlite3.OperationalError:
                    rows = []
                finally:
                    conn.close()
            if wait_for is None or len(rows) >= wait_for or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for r in rows:
            for col in ("attempts", "skipped"):
                if isinstance(r.get(col), str):
                    r[col] = json.loads(r[col])
        return rows

    def record(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.records(endpoint=None):
                if r["request_id"] == request_id:
                    return r
            time.sleep(0.02)
        raise AssertionError(f"no record for {request_id}")

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
