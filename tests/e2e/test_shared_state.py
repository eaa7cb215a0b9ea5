"""Two hosts, one truth: two gateway processes with separate data dirs (as two hosts would
run them) sharing one Redis (rate limits, budget reservations) and one PostgreSQL (records,
keys, BYOK), both real servers (tests/servers.py).

What the issue asks of shared state, end to end: the rate limit and the budget are exact
across the two; a key revoked through one is refused by the other within a second; N
requests in, N records out, SIGTERM included; and the `keys` / `requests` commands work
against the configured stores.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runtime.config import Budget, Limits, Price, RuntimeConfig, SecretSpec, StateConfig
from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, replace_model, run_cli, runtime_config
from tests.servers import RedisServer

REDIS_SECRET = "SY_TEST_REDIS_URL"
DATABASE_SECRET = "SY_TEST_DATABASE_URL"


def shared_config(fakes: Fakes, limits: Limits | None = None) -> RuntimeConfig:
    """The test config with its state in Redis and PostgreSQL (URLs from two secrets)."""
    config = runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url)
    config = replace(
        config,
        state=StateConfig(
            limits_store="redis",
            redis_url_secret=REDIS_SECRET,
            on_redis_unavailable="closed",
            keys_store="postgres",
            postgres_url_secret=DATABASE_SECRET,
        ),
        logging=replace(
            config.logging, sink="postgres", url_secret=DATABASE_SECRET, flush_interval_ms=50
        ),
        secrets={
            **config.secrets,
            REDIS_SECRET: SecretSpec(REDIS_SECRET, "state.redis", optional=False),
            DATABASE_SECRET: SecretSpec(DATABASE_SECRET, "state.postgres", optional=False),
        },
    )
    if limits is not None:
        config = replace(config, limits=limits)
    return config


class Hosts:
    """Two gateways over the same config and stores, each with its own data dir."""

    def __init__(
        self,
        config: RuntimeConfig,
        tmp: Path,
        redis_url: str,
        postgres_url: str,
        workers: int = 1,
    ) -> None:
        self.env = {REDIS_SECRET: redis_url, DATABASE_SECRET: postgres_url}
        self.a = Gateway(config, _dir(tmp / "host-a"), env=self.env, workers=workers)
        self.b = Gateway(config, _dir(tmp / "host-b"), env=self.env, workers=workers)

    def __enter__(self) -> Hosts:
        self.a.start()
        self.b.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for gw in (self.a, self.b):
            if gw.proc is not None:
                gw.stop()

    def cli(self, *args: str, check: bool = True) -> Any:
        return run_cli(*args, "--config", str(self.a.config_path), env={**self.a.env}, check=check)

    def key(self, org: str = "acme", name: str = "shared") -> str:
        out = self.cli("keys", "create", "--env", self.a.environment, "--org", org, "--name", name)
        key = str(out.stdout).strip().splitlines()[-1].strip()
        for gw in (self.a, self.b):
            gw.wait_for_key(key)
            # Each worker process refreshes its own key cache (every 0.25 s): one answer from
            # one of them does not say the others know the key yet. New connections land on
            # any worker; ten accepted in a row say all of them do.
            accepted, deadline = 0, time.monotonic() + 5
            while accepted < 10 and time.monotonic() < deadline:
                accepted = accepted + 1 if _get_as(gw.url + "/v1/models", key) == 200 else 0
        return key

    def records(self, wait_for: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The chat records in PostgreSQL, read with `python -m runtime requests --json`."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.cli("requests", "--env", self.a.environment, "--last", "100000", "--json")
            rows = [
                r
                for r in json.loads(out.stdout or "[]")
                if r.get("endpoint", "/v1/chat/completions") == "/v1/chat/completions"
            ]
            if len(rows) >= wait_for or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def _get_as(url: str, key: str) -> int:
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def chat(url: str, key: str, **body: Any) -> tuple[int, dict[str, Any]]:
    payload = {"model": "solo", "messages": [{"role": "user", "content": "hi"}], **body}
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_rate_limit_is_exact_across_two_hosts(
    fakes: Fakes, tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    limits = Limits(10, None, Budget(None, None), Budget(None, None), {})
    with Hosts(shared_config(fakes, limits), tmp_path, redis_url, postgres_url) as hosts:
        key = hosts.key()
        urls = [hosts.a.url, hosts.b.url] * 15
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = sorted(s for s, _ in pool.map(lambda u: chat(u, key), urls))
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20, statuses


@pytest.mark.parametrize("workers", [1, 2])
def test_budget_is_exact_across_two_hosts_under_concurrency(
    clean_fakes: Fakes, tmp_path: Path, redis_url: str, postgres_url: str, workers: int
) -> None:
    # Worst case of one request: 1,000 output tokens at $10 per million = $0.01, nothing for
    # input; a $0.05 daily key budget has room for exactly five.
    config = replace_model(
        shared_config(clean_fakes, Limits(None, None, Budget(0.05, None), Budget(None, None), {})),
        "openai",
        "gpt",
        price=Price(0.0, 10.0),
    )
    # Every admitted request waits upstream long enough for all 50 to have asked first.
    clean_fakes.openai.push(*[Fault("delay_headers", delay=1.5) for _ in range(50)])
    # With two workers each, four processes on two "hosts" share the one budget.
    with Hosts(config, tmp_path, redis_url, postgres_url, workers) as hosts:
        key = hosts.key()
        urls = [hosts.a.url, hosts.b.url] * 25
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda u: chat(u, key, max_tokens=1000), urls))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(200) == 5, statuses
    refused = [body for s, body in results if s == 429]
    assert len(refused) == 45
    assert {b["error"]["code"] for b in refused} == {"budget_exceeded"}


def test_a_key_revoked_on_one_host_is_refused_by_the_other_within_a_second(
    fakes: Fakes, tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    with Hosts(shared_config(fakes), tmp_path, redis_url, postgres_url) as hosts:
        key = hosts.key()
        assert chat(hosts.a.url, key)[0] == 200
        assert chat(hosts.b.url, key)[0] == 200
        key_id = key.split("_")[2]
        hosts.cli("keys", "revoke", "--env", hosts.a.environment, key_id)
        revoked_at = time.monotonic()
        refused: dict[str, float] = {}
        while len(refused) < 2 and time.monotonic() - revoked_at < 5:
            for name, gw in (("a", hosts.a), ("b", hosts.b)):
                if name not in refused:
                    status, body = chat(gw.url, key)
                    if status == 401:
                        assert body["error"]["code"] == "key_revoked"
                        refused[name] = time.monotonic() - revoked_at
            time.sleep(0.02)
    assert set(refused) == {"a", "b"}, refused
    assert max(refused.values()) < 1.0, refused


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_n_requests_in_n_records_out_sigterm_included(
    fakes: Fakes, tmp_path: Path, redis_url: str, postgres_url: str, sig: int
) -> None:
    n = 200
    with Hosts(shared_config(fakes), tmp_path, redis_url, postgres_url) as hosts:
        key = hosts.key()
        urls = [hosts.a.url, hosts.b.url] * (n // 2)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda u: chat(u, key), urls))
        assert [s for s, _ in statuses].count(200) == n
        # Stopped right after the last answer: what the writers hold must still arrive.
        assert hosts.a.stop(sig) == 0
        assert hosts.b.stop(sig) == 0
        rows = hosts.records(wait_for=n)
    ids = {r["request_id"] for r in rows}
    assert len(ids) == n == len(rows)
    assert {r["status"] for r in rows} == {200}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("on_unavailable", ["closed", "open"])
def test_redis_stopped_under_a_serving_gateway_does_what_the_config_says(
    fakes: Fakes, tmp_path: Path, postgres_url: str, on_unavailable: str
) -> None:
    redis = RedisServer.start(tmp_path / "redis")
    limits = Limits(1000, None, Budget(100.0, None), Budget(None, None), {})
    config = shared_config(fakes, limits)
    config = replace(config, state=replace(config.state, on_redis_unavailable=on_unavailable))
    try:
        with Hosts(config, tmp_path, redis.url, postgres_url) as hosts:
            gw = hosts.a
            key = hosts.key()
            assert chat(gw.url, key)[0] == 200
            redis.stop()
            time.sleep(1.5)  # the limiter's health check notices within a second
            status, body = chat(gw.url, key)
            ready, detail = _get(gw.url + "/readyz")
            metrics = _get(gw.url + "/metrics")[1]
            assert "switchyard_limits_store_up 0" in metrics
            if on_unavailable == "closed":
                assert status == 503 and body["error"]["code"] == "limits_unavailable"
                assert ready == 503 and "limits" in detail
            else:
                assert status == 200
                assert ready == 200 and "limits" in json.loads(detail)["warnings"][0]
                assert "switchyard_limits_fail_open_total 1" in metrics
            redis.resume()
            deadline = time.monotonic() + 10
            while chat(gw.url, key)[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert chat(gw.url, key)[0] == 200
            assert _get(gw.url + "/readyz")[0] == 200
    finally:
        redis.stop()
