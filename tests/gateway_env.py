"""A running gateway for tests: fake providers on loopback, a runtime.json pointing at them,
`python -m runtime serve` as a real subprocess, and a key made with `python -m runtime keys`.

The runtime.json is written the way the compiler writes it (same fields; see
docs/runtime-config.md); `tests/test_gateway_compiled.py` covers the compiler's own output.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

FAKE_KEYS = {
    "OPENAI_API_KEY": "test-openai-key",
    "ANTHROPIC_API_KEY": "test-anthropic-key",
    "GEMINI_API_KEY": "test-gemini-key",
}

ALL_CLASSES = [
    "connect_error",
    "context_length",
    "overloaded",
    "rate_limited",
    "server_error",
    "timeout",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model(
    upstream: str,
    caps: list[str],
    window: int = 128000,
    price: tuple[float, float] | None = (1.0, 2.0),
    max_out: int | None = 16384,
) -> dict[str, Any]:
    return {
        "upstream": upstream,
        "context_window": window,
        "max_output_tokens": max_out,
        "capabilities": sorted(caps),
        "price": None if price is None else {"input": price[0], "output": price[1]},
    }


FULL = ["streaming", "tools", "vision", "json_mode", "json_schema", "parallel_tool_calls"]


def runtime_doc(
    openai_url: str,
    anthropic_url: str,
    gemini_url: str,
    *,
    environment: str = "test",
    timeout_s: float = 2.0,
    first_byte_timeout_s: float = 1.0,
) -> dict[str, Any]:
    """A runtime.json: three fake providers plus mock, and routes that exercise routing."""

    def provider(
        adapter: str, url: str | None, secret: str | None, models: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "adapter": adapter,
            "base_url": url,
            "credentials": {"api_key": secret} if secret else {},
            "credentials_optional": False,
            "timeout_s": timeout_s,
            "connect_timeout_s": 1.0,
            "models": models,
        }

    def route(
        cands: list[tuple[str, str]],
        *,
        strategy: str = "priority",
        on: list[str] | None = None,
        max_attempts: int = 3,
        cap: float | None = None,
        weights: list[float] | None = None,
    ) -> dict[str, Any]:
        return {
            "strategy": strategy,
            "requires": [],
            "min_context_window": None,
            "max_cost_per_request_usd": cap,
            "fallback": {
                "on": sorted(ALL_CLASSES if on is None else on),
                "max_attempts": max_attempts,
                "first_byte_timeout_s": first_byte_timeout_s,
            },
            "candidates": [
                {"provider": p, "model": m, "weight": None if weights is None else weights[i]}
                for i, (p, m) in enumerate(cands)
            ],
            "dropped": [],
        }

    doc: dict[str, Any] = {
        "schema_version": 1,
        "project": "switchyard-test",
        "environment": environment,
        "compose_project": f"switchyard-test-{environment}",
        "server": {
            "port": 8000,
            "workers": 1,
            "request_timeout_s": 30.0,
            "data_dir": "/nonexistent",
        },
        "allow_explicit_models": True,
        "keys": {"prefix": f"sy_{environment}_", "environment": environment},
        "providers": {
            "openai": provider(
                "openai",
                openai_url + "/v1",
                "OPENAI_API_KEY",
                {
                    "gpt": _model("gpt-4o-2024-08-06", FULL, 128000, (2.5, 10.0)),
                    "gpt-small": _model("gpt-4o-mini", FULL, 16000, (0.15, 0.6)),
                },
            ),
            "anthropic": provider(
                "anthropic",
                anthropic_url,
                "ANTHROPIC_API_KEY",
                {
                    "claude": _model(
                        "claude-sonnet-4-20250514",
                        ["streaming", "tools", "vision"],
                        200000,
                        (3.0, 15.0),
                    ),
                },
            ),
            "gemini": provider(
                "gemini",
                gemini_url + "/v1beta",
                "GEMINI_API_KEY",
                {
                    "gemini": _model("gemini-2.5-flash", FULL, 1048576, (0.3, 2.5)),
                },
            ),
            "mock": provider(
                "mock", None, None, {"echo": _model("echo", FULL, 1048576, (0.0, 0.0), 65536)}
            ),
        },
        "routes": {
            "chat": route([("openai", "gpt"), ("anthropic", "claude"), ("gemini", "gemini")]),
            "solo": route([("openai", "gpt")]),
            "to-anthropic": route([("openai", "gpt"), ("anthropic", "claude")]),
            "to-gemini": route([("openai", "gpt"), ("gemini", "gemini")]),
            "anthropic-first": route([("anthropic", "claude"), ("openai", "gpt")]),
            "gemini-first": route([("gemini", "gemini"), ("openai", "gpt")]),
            "no-fallback-on-429": route(
                [("openai", "gpt"), ("anthropic", "claude")], on=["server_error"]
            ),
            "small-then-large": route(
                [("openai", "gpt-small"), ("openai", "gpt"), ("anthropic", "claude")]
            ),
            "cheapest": route(
                [("anthropic", "claude"), ("openai", "gpt"), ("gemini", "gemini")],
                strategy="cheapest",
            ),
            "capped": route([("anthropic", "claude"), ("openai", "gpt-small")], cap=0.005),
            "weighted": route(
                [("openai", "gpt"), ("anthropic", "claude")],
                strategy="weighted",
                weights=[1.0, 3.0],
            ),
            "offline": route([("mock", "echo")]),
            "one-attempt": route([("openai", "gpt"), ("anthropic", "claude")], max_attempts=1),
        },
        "orgs": {
            "acme": {"routes": None, "allow_explicit_models": None, "byok": None},
            "limited": {"routes": ["offline"], "allow_explicit_models": False, "byok": None},
        },
        "limits": {
            "per_key": {
                "requests_per_minute": None,
                "tokens_per_minute": None,
                "usd_per_day": None,
                "usd_per_month": None,
            },
            "per_org": {"usd_per_day": None, "usd_per_month": None},
            "orgs": {},
        },
        "logging": {
            "sink": "sqlite",
            "url_secret": None,
            "retention_days": 30,
            "batch_size": 64,
            "flush_interval_ms": 20,
        },
        "cost_reference_request": {"input_tokens": 1000, "output_tokens": 1000},
        "price_table_hash": "sha256:" + "0" * 64,
        "secrets": {
            name: {
                "needed_by": f"providers.{name.split('_')[0].lower()}.credentials.api_key",
                "optional": False,
            }
            for name in FAKE_KEYS
        },
    }
    return with_hash(doc)


def with_hash(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc.pop("config_hash", None)
    text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    doc["config_hash"] = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return doc


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
            f"python -m runtime {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


class Gateway:
    """`python -m runtime serve` on a free loopback port, with its own data dir."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "runtime.json"
        self.config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
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
        return str(self.config["environment"])

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
            f"gateway did not become {'ready' if wait_ready else 'healthy'}:\n{self.log.read_text()}"
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

    def records(self, wait_for: int | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Rows of the request log, oldest first; waits until at least `wait_for` are there."""
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
            for r in self.records():
                if r["request_id"] == request_id:
                    return r
            time.sleep(0.02)
        raise AssertionError(f"no record for {request_id}")

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
