"""The gateway under operational conditions: concurrency, worker processes, SIGTERM, limits and
budgets, missing secrets, refused configs, secrets in every output, clients that go away, the
`requests` report and the response headers.

Each test that needs its own configuration starts its own `python -m runtime serve` over the
shared fake providers (tests/gateway_env.py), so record counts are exact.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import openai
import pytest

from runtime.config import Budget, CandidateRef, Price, RuntimeConfig
from tests.conftest import Fakes
from tests.fakes.anthropic_fake import anthropic_fake
from tests.fakes.base import FakeProvider, Fault
from tests.fakes.gemini_fake import gemini_fake
from tests.fakes.openai_fake import openai_fake
from tests.gateway_env import (
    ROOT,
    Gateway,
    free_port,
    replace_model,
    replace_provider,
    replace_secret,
    run_cli,
    runtime_config,
)

USAGE: Any = {"include_usage": True}
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
            },
        },
    }
]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        err = self.json().get("error")
        return None if err is None else err.get("code")


def _config(fakes: Fakes, **kwargs: Any) -> RuntimeConfig:
    return runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url, **kwargs)


def _messages(text: str) -> Any:
    return [{"role": "user", "content": text}]


def _post(gw: Gateway, body: dict[str, Any] | bytes, key: str | None, timeout: float = 20) -> Reply:
    """POST /v1/chat/completions with urllib; the whole body is read."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        gw.url + "/v1/chat/completions",
        data=data,
        method="POST",
        headers={"content-type": "application/json"},
    )
    if key is not None:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def _get(url: str) -> Reply:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def _client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture
def own_gateways() -> Iterator[list[Gateway]]:
    """Gateways a test starts; stopped (killed if need be) when it ends."""
    started: list[Gateway] = []
    yield started
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.stop()


# --- 1. records are never lost ------------------------------------------------------------


def _sdk(call: Callable[[], Any]) -> tuple[str, int]:
    """(request id, status) of an SDK call made with `with_raw_response`; streams are drained."""
    try:
        raw = call()
    except openai.APIStatusError as exc:
        return exc.response.headers["x-request-id"], exc.status_code
    result = raw.parse()
    if isinstance(result, openai.Stream):
        try:
            for _ in result:
                pass
        except openai.APIError:
            pass  # broke after commit: the client still got a 200 and a record says so
    return raw.headers["x-request-id"], raw.status_code


def _mixed_request(gw: Gateway, key: str, client: openai.OpenAI, i: int) -> tuple[str, int]:
    """Request number i of a mix: served, streamed, refused, unauthenticated, failed upstream."""
    chat = client.chat.completions.with_raw_response.create
    kind = i % 12
    if kind == 0:
        return _sdk(lambda: chat(model="offline", messages=_messages(f"plain {i}")))
    if kind == 1:
        return _sdk(lambda: chat(model="offline", messages=_messages(f"stream {i}"), stream=True))
    if kind == 2:
        return _sdk(lambda: chat(model="chat", messages=_messages(f"openai {i}")))
    if kind == 3:
        return _sdk(
            lambda: chat(
                model="chat",
                messages=_messages(f"openai stream {i}"),
                stream=True,
                stream_options=USAGE,
            )
        )
    if kind == 4:
        r = _post(gw, b"{broken", key)
        return r.headers["x-request-id"], r.status
    if kind == 5:
        return _sdk(lambda: chat(model="no-such-route", messages=_messages("x")))
    if kind == 6:
        r = _post(
            gw, {"model": "offline", "messages": _messages("x")}, "sy_test_aaaaaaaaaaaa_" + "b" * 40
        )
        return r.headers["x-request-id"], r.status
    if kind == 7:
        return _sdk(lambda: chat(model="offline", messages=_messages("mock:error 529")))
    if kind == 8:
        return _sdk(lambda: chat(model="solo", messages=_messages(f"solo {i}")))
    if kind == 9:
        return _sdk(lambda: chat(model="offline", messages=_messages("mock:drop"), stream=True))
    if kind == 10:
        return _sdk(
            lambda: chat(model="anthropic-first", messages=_messages(f"tools {i}"), tools=TOOLS)
        )
    r = _post(
        gw, {"model": "gemini-first", "messages": _messages(f"gemini {i}"), "stream": True}, key
    )
    return r.headers["x-request-id"], r.status


@pytest.mark.parametrize("workers", [1, 2])
def test_every_request_gets_exactly_one_record_under_concurrency(
    workers: int, clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    n = 300
    gw = Gateway(_config(clean_fakes), tmp_path, workers=workers)
    key = gw.key()  # before start: every worker loads it
    own_gateways.append(gw.start())
    # Upstream failures for whichever OpenAI-bound requests come first (fallback or error).
    clean_fakes.openai.push(
        *([Fault("status", status=500)] * 10),
        *([Fault("status", status=429)] * 5),
        *([Fault("reset")] * 5),
    )
    client = _client(gw, key)
    with ThreadPoolExecutor(16) as pool:
        sent = list(pool.map(lambda i: _mixed_request(gw, key, client, i), range(n)))
    ids = [rid for rid, _ in sent]
    assert len(set(ids)) == n, "request ids must be unique"
    assert {s for _, s in sent} >= {200, 400, 401, 404, 502, 503}

    gw.records(wait_for=n, timeout=15)
    assert gw.stop() == 0
    records = gw.records()
    per_id = collections.Counter(r["request_id"] for r in records)
    assert len(records) == n
    assert set(per_id) == set(ids)
    assert max(per_id.values()) == 1
    status_of = {r["request_id"]: r["status"] for r in records}
    assert {rid: status_of[rid] for rid in ids} == dict(sent), (
        "each record has the status the client saw"
    )


def test_sigterm_finishes_in_flight_requests_and_flushes_their_records(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    gw = Gateway(_config(clean_fakes, first_byte_timeout_s=5.0), tmp_path)
    key = gw.key()
    own_gateways.append(gw.start())
    assert gw.proc is not None

    def call(i: int) -> tuple[str, int] | None:
        slow = i % 3 != 2
        body: dict[str, Any] = {
            "model": "offline",
            "messages": _messages("mock:slow 1500" if slow else f"fast {i}"),
            "stream": i % 2 == 0,
        }
        try:
            r = _post(gw, body, key, timeout=30)
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException):
            return None  # refused or cut while shutting down: no response, nothing promised
        return r.headers["x-request-id"], r.status

    with ThreadPoolExecutor(40) as pool:
        in_flight = [pool.submit(call, i) for i in range(24)]
        time.sleep(0.5)  # every request is sent and the slow ones are waiting on the mock
        gw.proc.send_signal(signal.SIGTERM)
        during = [pool.submit(call, i) for i in range(100, 116)]  # race the shutdown
        rc = gw.proc.wait(30)
        answered = [f.result() for f in in_flight]
        raced = [f.result() for f in during]

    assert rc == 0, gw.log.read_text()
    assert "Traceback" not in gw.log.read_text()
    # Graceful: everything in flight when the signal came was answered, not cut.
    assert all(a is not None and a[1] == 200 for a in answered), answered
    got = [a for a in answered + raced if a is not None]
    records = gw.records()
    per_id = collections.Counter(r["request_id"] for r in records)
    assert max(per_id.values()) == 1
    assert len(records) <= len(answered) + len(raced)
    for rid, _ in got:
        assert per_id[rid] == 1, f"{rid} got a response but has no record"
    status_of = {r["request_id"]: r["status"] for r in records}
    assert all(status_of[rid] == status for rid, status in got)


# --- 2. rate limits and budgets -------------------------------------------------------------


def test_requests_and_tokens_per_minute_are_429_with_retry_after(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    config = _config(clean_fakes)
    limits = replace(config.limits, requests_per_minute=3, tokens_per_minute=200)
    gw = Gateway(replace(config, limits=limits), tmp_path)
    own_gateways.append(gw.start())
    key, other = gw.key(name="rpm"), gw.key(name="tpm")
    body = {"model": "offline", "messages": _messages("hi")}

    assert [_post(gw, body, key).status for _ in range(3)] == [200, 200, 200]
    refused = _post(gw, body, key)
    assert (refused.status, refused.code) == (429, "rate_limit_exceeded")
    assert "3 requests per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    rec = gw.record(refused.headers["x-request-id"])
    assert (rec["status"], rec["error_code"], rec["attempts"]) == (429, "rate_limit_exceeded", [])
    # Per key: another key of the same org is not affected.
    assert _post(gw, body, other).status == 200

    tokens_key = gw.key(name="tokens")
    big = {"model": "offline", "messages": _messages("hi"), "max_tokens": 150}
    assert _post(gw, big, tokens_key).status == 200  # ~160 of the 200 tokens
    refused = _post(gw, big, tokens_key)
    assert (refused.status, refused.code) == (429, "token_rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert gw.record(refused.headers["x-request-id"])["status"] == 429
    # The SDK sees its usual exception class.
    with pytest.raises(openai.RateLimitError) as exc:
        _client(gw, key).chat.completions.create(model="offline", messages=_messages("again"))
    assert exc.value.code == "rate_limit_exceeded"


def test_key_and_org_budgets_refuse_after_spend_and_survive_a_restart(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    config = replace_model(
        _config(clean_fakes), "mock", "echo", price=Price(1000.0, 1000.0)
    )  # ~$0.01 a request
    # Room for one request's worst case (its prompt and 5 output tokens, ~$0.015), not two.
    limits = replace(
        config.limits,
        key_budget=replace(config.limits.key_budget, usd_per_day=0.02),
        org_budgets={"acme": Budget(usd_per_day=0.02, usd_per_month=None)},
    )
    gw = Gateway(replace(config, limits=limits), tmp_path)
    spender, colleague, outsider = (
        gw.key(name="spender"),
        gw.key(name="colleague"),
        gw.key(org="limited", name="outsider"),
    )
    own_gateways.append(gw.start())
    body = {"model": "offline", "messages": _messages("spend a little"), "max_tokens": 5}

    first = _post(gw, body, spender)
    assert first.status == 200
    assert gw.record(first.headers["x-request-id"])["cost_usd"] > 0.006
    # The local charge makes it immediate, without waiting for the spend refresh.
    refused = _post(gw, body, spender)
    assert (refused.status, refused.code) == (429, "budget_exceeded")
    assert (
        "key" in refused.json()["error"]["message"]
        and "daily budget" in refused.json()["error"]["message"]
    )
    assert int(refused.headers["retry-after"]) >= 1
    assert gw.record(refused.headers["x-request-id"])["status"] == 429
    # A colleague's key has spent nothing, but the org has.
    refused = _post(gw, body, colleague)
    assert (refused.status, refused.code) == (429, "budget_exceeded")
    assert "org 'acme'" in refused.json()["error"]["message"]
    # Another org has its own (unlimited) budget.
    assert _post(gw, body, outsider).status == 200

    # A restart reads the spend back from the request log.
    assert gw.stop() == 0
    gw.start()
    assert _post(gw, body, spender).code == "budget_exceeded"
    assert _post(gw, body, colleague).code == "budget_exceeded"
    assert _post(gw, body, outsider).code == "budget_exceeded"  # its key spent, too
    assert _post(gw, body, gw.key(org="limited", name="fresh")).status == 200


# --- 3. readiness and missing credentials -----------------------------------------------------


def test_missing_required_secret_is_not_ready_and_names_it(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    config = _config(clean_fakes)
    only_anthropic = replace(
        config.routes["solo"],
        name="only-anthropic",
        candidates=(CandidateRef(provider="anthropic", model="claude", weight=None),),
    )
    gw = Gateway(
        replace(config, routes={**config.routes, "only-anthropic": only_anthropic}), tmp_path
    )
    gw.env.pop("ANTHROPIC_API_KEY")
    key = gw.key()
    own_gateways.append(gw.start(wait_ready=False))

    ready = _get(gw.url + "/readyz")
    assert ready.status == 503
    detail = ready.json()
    assert detail["ready"] is False
    assert any("ANTHROPIC_API_KEY" in p for p in detail["problems"]), detail
    assert (
        "test-openai-key" not in ready.body.decode()
        and "test-gemini-key" not in ready.body.decode()
    )
    assert _get(gw.url + "/healthz").status == 200
    assert "ANTHROPIC_API_KEY" in gw.log.read_text()  # the banner says what is missing

    # Routes with another provider still work; the skip is recorded with its reason.
    served = _post(gw, {"model": "anthropic-first", "messages": _messages("x")}, key)
    assert served.status == 200 and served.headers["x-switchyard-provider"] == "openai"
    assert gw.record(served.headers["x-request-id"])["skipped"] == [
        {
            "provider": "anthropic",
            "model": "claude",
            "reason": "credentials not set (ANTHROPIC_API_KEY)",
        }
    ]
    # A route with no usable candidate is a clear 503 naming the credential.
    for model in ("only-anthropic", "anthropic/claude"):
        r = _post(gw, {"model": model, "messages": _messages("x")}, key)
        assert (r.status, r.code) == (503, "no_candidate"), r.body
        assert "ANTHROPIC_API_KEY" in r.json()["error"]["message"]
        assert gw.record(r.headers["x-request-id"])["status"] == 503
    assert clean_fakes.anthropic.requests == []


def test_missing_optional_secret_skips_the_provider_and_is_ready(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    config = replace_secret(_config(clean_fakes), "ANTHROPIC_API_KEY", optional=True)
    config = replace_provider(config, "anthropic", credentials_optional=True)
    gw = Gateway(config, tmp_path)
    gw.env.pop("ANTHROPIC_API_KEY")
    key = gw.key()
    own_gateways.append(gw.start())

    ready = _get(gw.url + "/readyz")
    assert ready.status == 200 and ready.json()["problems"] == []
    r = _post(gw, {"model": "anthropic-first", "messages": _messages("x")}, key)
    assert r.status == 200 and r.headers["x-switchyard-provider"] == "openai"
    rec = gw.record(r.headers["x-request-id"])
    assert rec["skipped"] == [
        {
            "provider": "anthropic",
            "model": "claude",
            "reason": "credentials not set (ANTHROPIC_API_KEY)",
        }
    ]
    assert [a["provider"] for a in rec["attempts"]] == ["openai"]


def test_no_provider_with_credentials_is_not_ready(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    config = _config(clean_fakes)
    config = replace(config, routes={"solo": config.routes["solo"]})
    config = replace_secret(config, "OPENAI_API_KEY", optional=True)
    gw = Gateway(config, tmp_path)
    gw.env.pop("OPENAI_API_KEY")
    own_gateways.append(gw.start(wait_ready=False))
    ready = _get(gw.url + "/readyz")
    assert ready.status == 503
    assert ready.json()["routes_usable"] == 0
    assert "no route has a provider with credentials" in ready.json()["problems"]


# --- 4. configs the gateway refuses ----------------------------------------------------------


def _serve(config: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _refusals(fakes: Fakes, tmp: Path) -> Iterator[tuple[str, Path, Path, str]]:
    """(case, config path, data dir, what stderr must name)."""
    good = tmp / "good.json"
    good.write_text(_config(fakes).to_json())
    v2 = replace(_config(fakes), schema_version=2).with_hash()
    (tmp / "v2.json").write_text(v2.to_json())
    (tmp / "broken.json").write_text('{"schema_version": 1,')
    blocker = tmp / "a-file"
    blocker.write_text("")
    # A file the compiler cannot write (the types do not allow it): its JSON, edited.
    bad_field = _config(fakes).to_dict()
    openai_spec = bad_field["providers"]["openai"]
    openai_spec["timeout_s"] = "soon"
    (tmp / "bad-field.json").write_text(json.dumps(bad_field))
    yield "schema_version 2", tmp / "v2.json", tmp / "data", "schema_version"
    yield "invalid JSON", tmp / "broken.json", tmp / "data", "broken.json"
    yield "missing file", tmp / "absent.json", tmp / "data", "absent.json"
    yield "malformed field", tmp / "bad-field.json", tmp / "data", "timeout_s"
    yield "unwritable data dir", good, blocker / "data", "data directory"


def test_serve_refuses_bad_configs_with_one_clear_line(clean_fakes: Fakes, tmp_path: Path) -> None:
    for case, config, data_dir, named in _refusals(clean_fakes, tmp_path):
        proc = _serve(config, data_dir)
        assert proc.returncode == 1, (case, proc.stderr)
        assert "Traceback" not in proc.stderr, (case, proc.stderr)
        assert proc.stderr.startswith("error: "), (case, proc.stderr)
        assert named in proc.stderr, (case, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (case, proc.stderr)


# --- 5. secrets never leak -------------------------------------------------------------------

OPENAI_SECRET = "sk-proj-OPENAIsecretValue7f3a9c21d4e8b6"
ANTHROPIC_SECRET = "sk-ant-api03-ANTHROPICsecretValue5b2e8d1"
GEMINI_SECRET = "AIzaSyGEMINIsecretValue9c4f1a7e3b2d6"
WRONG_ANTHROPIC_SECRET = "sk-ant-api03-WRONGanthropicValue0a9b8c7"


@pytest.fixture
def keyed_fakes() -> Iterator[dict[str, FakeProvider]]:
    fakes = {
        "openai": openai_fake(OPENAI_SECRET).start(),
        "anthropic": anthropic_fake(ANTHROPIC_SECRET).start(),
        "gemini": gemini_fake(GEMINI_SECRET).start(),
    }
    yield fakes
    for f in fakes.values():
        f.stop()


def test_provider_and_gateway_secrets_never_appear_anywhere(
    keyed_fakes: dict[str, FakeProvider], tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    config = runtime_config(
        keyed_fakes["openai"].url, keyed_fakes["anthropic"].url, keyed_fakes["gemini"].url
    )
    # Anthropic gets a wrong key: its fake answers 401, which the gateway must report without it.
    gw = Gateway(
        config,
        tmp_path,
        env={
            "OPENAI_API_KEY": OPENAI_SECRET,
            "ANTHROPIC_API_KEY": WRONG_ANTHROPIC_SECRET,
            "GEMINI_API_KEY": GEMINI_SECRET,
        },
    )
    key = gw.key()
    own_gateways.append(gw.start())
    seen: list[bytes] = []

    def post(body: dict[str, Any] | bytes, token: str | None = key) -> Reply:
        r = _post(gw, body, token)
        seen.append(r.body)
        seen.append(json.dumps(r.headers).encode())
        return r

    assert post({"model": "chat", "messages": _messages("hello")}).status == 200
    assert (
        post({"model": "gemini-first", "messages": _messages("hello"), "stream": True}).status
        == 200
    )
    # Alone (an explicit model): with a next candidate, a refused credential falls back.
    upstream_401 = post({"model": "anthropic/claude", "messages": _messages("hello")})
    assert (upstream_401.status, upstream_401.code) == (502, "upstream_auth_failed")
    assert keyed_fakes["anthropic"].requests, "the wrong key did reach the provider"
    keyed_fakes["openai"].push(Fault("reset"), Fault("status", status=500), Fault("malformed"))
    for _ in range(3):
        assert post({"model": "solo", "messages": _messages("hello")}).status == 502
    keyed_fakes["gemini"].push(Fault("drop_mid_stream"))
    post({"model": "gemini-first", "messages": _messages("hello"), "stream": True})
    post(
        {"model": "chat", "messages": _messages("hello")}, token=key[:-3] + "xyz"
    )  # a bad gateway key
    post(b"{", token=key)
    for path in ("/readyz", "/healthz", "/metrics", "/v1/models"):
        r = _get(gw.url + path)
        seen.extend([r.body, json.dumps(r.headers).encode()])

    gw.records(wait_for=9)
    assert gw.stop() == 0
    report = run_cli("requests", "--env", "test", "--data-dir", str(gw.data_dir), "--json").stdout
    table = run_cli(
        "requests", "--env", "test", "--data-dir", str(gw.data_dir), "--last", "50"
    ).stdout
    by_provider = run_cli(
        "requests", "--env", "test", "--data-dir", str(gw.data_dir), "--by", "provider"
    ).stdout
    # The 9 chat requests, and the unauthenticated GET /v1/models (recorded too).
    assert [r["endpoint"] for r in json.loads(report)].count("/v1/chat/completions") == 9

    secret_part = key.split("_")[-1]
    haystacks: dict[str, bytes] = {
        "gateway log": gw.log.read_bytes(),
        "responses": b"\n".join(seen),
        "requests --json": report.encode(),
        "requests table": (table + by_provider).encode(),
    }
    for f in gw.data_dir.iterdir():
        haystacks[f"data dir: {f.name}"] = f.read_bytes()
    for needle in (
        OPENAI_SECRET,
        ANTHROPIC_SECRET,
        WRONG_ANTHROPIC_SECRET,
        GEMINI_SECRET,
        key,
        secret_part,
    ):
        for where, hay in haystacks.items():
            assert needle.encode() not in hay, f"a secret ({needle[:8]}...) appears in {where}"
    # The provider keys did travel where they belong: to the providers.
    assert keyed_fakes["openai"].requests[0].headers["Authorization"] == f"Bearer {OPENAI_SECRET}"


# --- 6. clients that go away ---------------------------------------------------------------


@pytest.mark.parametrize("route", ["offline", "solo"])
def test_client_closing_mid_stream_is_recorded_as_499(
    route: str, clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    gw = Gateway(_config(clean_fakes, timeout_s=30.0), tmp_path)
    key = gw.key()
    own_gateways.append(gw.start())
    client = _client(gw, key)
    long_prompt = " ".join(["word"] * 60_000)  # the reply echoes it word by word: a long stream

    raw = client.chat.completions.with_raw_response.create(
        model=route, messages=_messages(long_prompt), stream=True
    )
    stream: Any = raw.parse()
    first = next(iter(stream))
    assert first.choices
    stream.close()  # the connection goes away with most of the answer unsent

    rec = gw.record(raw.headers["x-request-id"], timeout=10)
    assert (rec["status"], rec["error_code"]) == (499, "client_closed_request")
    assert rec["provider"] == ("mock" if route == "offline" else "openai")
    assert rec["broke_after_commit"] == 0
    assert rec["output_tokens"] is not None and rec["usage_estimated"] == 1
    # The gateway keeps serving.
    after = client.chat.completions.create(model=route, messages=_messages("still there?"))
    assert "still there?" in (after.choices[0].message.content or "")


def test_client_gone_before_a_slow_answer_is_recorded_as_499(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    gw = Gateway(_config(clean_fakes, first_byte_timeout_s=5.0), tmp_path)
    key = gw.key()
    own_gateways.append(gw.start())
    ids: list[str] = []
    for stream in (False, True):
        body = json.dumps(
            {"model": "offline", "messages": _messages("mock:slow 1500"), "stream": stream}
        ).encode()
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        time.sleep(0.3)
        conn.close()  # before any byte of the answer
        time.sleep(1.8)
        recs = [r for r in gw.records() if r["request_id"] not in ids]
        assert len(recs) == 1, recs
        ids.append(recs[0]["request_id"])
        assert (recs[0]["status"], recs[0]["error_code"]) == (499, "client_closed_request"), recs[0]
        assert recs[0]["stream"] == int(stream)
        assert recs[0]["latency_ms"] < 1500, "the gateway stopped waiting for the upstream"
    assert _post(gw, {"model": "offline", "messages": _messages("x")}, key).status == 200


# --- 7. the `requests` report ----------------------------------------------------------------


def _table(text: str) -> list[dict[str, str]]:
    """Rows of a `requests --by` table (columns split on runs of 2+ spaces); notes dropped."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    headers = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for ln in lines[1:]:
        cells = re.split(r"\s{2,}", ln.strip())
        if len(cells) != len(headers):
            continue  # a footnote
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def test_requests_report_counts_match_what_was_sent(
    clean_fakes: Fakes, tmp_path: Path, own_gateways: list[Gateway]
) -> None:
    gw = Gateway(_config(clean_fakes), tmp_path)
    key = gw.key()
    own_gateways.append(gw.start())
    sent = [
        ("offline", key, 200), ("offline", key, 200), ("offline", key, 200),
        ("chat", key, 200), ("chat", key, 200),
        ("anthropic-first", key, 200),
        ("nope", key, 404), ("offline", "sy_test_bad", 401),
    ]  # fmt: skip
    for model, token, status in sent:
        assert (
            _post(gw, {"model": model, "messages": _messages("count me")}, token).status == status
        )
    clean_fakes.openai.push(Fault("status", status=500))
    assert _post(gw, {"model": "solo", "messages": _messages("fail")}, key).status == 502
    gw.records(wait_for=len(sent) + 1)

    base = ["requests", "--env", "test", "--data-dir", str(gw.data_dir)]
    rows = {r["provider"]: r for r in _table(run_cli(*base, "--by", "provider").stdout)}
    assert {p: int(r["count"]) for p, r in rows.items()} == {
        "mock": 3,
        "openai": 3,
        "anthropic": 1,
        "-": 2,
    }
    assert {p: int(r["errors"]) for p, r in rows.items()} == {
        "mock": 0,
        "openai": 1,
        "anthropic": 0,
        "-": 2,
    }
    assert rows["-"]["error %"] == "100.0"

    grouped = json.loads(run_cli(*base, "--by", "provider", "--json").stdout)
    assert {g["provider"]: g["count"] for g in grouped} == {
        "mock": 3,
        "openai": 3,
        "anthropic": 1,
        "-": 2,
    }
    assert all(g["latency_p50_ms"] is not None for g in grouped)
    by_status = json.loads(run_cli(*base, "--by", "status", "--json").stdout)
    assert {g["status"]: g["count"] for g in by_status} == {"200": 6, "404": 1, "401": 1, "502": 1}

    records = json.loads(run_cli(*base, "--json").stdout)
    assert len(records) == len(sent) + 1
    assert [r["route"] or r["requested_model"] for r in records][-1] == "solo"
    assert len(json.loads(run_cli(*base, "--json", "--last", "2").stdout)) == 2
    table = run_cli(*base).stdout
    assert all(r["request_id"] in table for r in records)


# --- 8. response headers ---------------------------------------------------------------------

_TRAIL_ITEM = re.compile(r"^[a-z0-9-]+/[A-Za-z0-9._-]+=[a-z_]+:\d+ms$")


def _trail(value: str) -> list[tuple[str, str]]:
    items = value.split(", ")
    assert all(_TRAIL_ITEM.match(i) for i in items), value
    return [(i.split("=")[0], i.split("=")[1].split(":")[0]) for i in items]


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


@pytest.mark.parametrize("stream", [False, True])
def test_success_headers_name_request_provider_model_and_attempts(
    stream: bool, gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    r = _post(gateway, {"model": "chat", "messages": _messages("x"), "stream": stream}, key)
    assert r.status == 200
    h = r.headers
    assert re.fullmatch(r"req_[0-9a-f]{24}", h["x-request-id"])
    assert (h["x-switchyard-provider"], h["x-switchyard-model"], h["x-switchyard-route"]) == (
        "openai",
        "gpt-4o-2024-08-06",
        "chat",
    )
    assert h["x-switchyard-attempts"] == "1"
    assert "x-switchyard-attempt-trail" not in h  # one clean attempt: nothing to trail
    assert gateway.record(h["x-request-id"])["provider"] == "openai"

    clean_fakes.openai.push(
        Fault(
            "status",
            status=503,
            message="The engine is currently overloaded, please try again later.",
        )
    )
    r = _post(gateway, {"model": "to-anthropic", "messages": _messages("x"), "stream": stream}, key)
    assert r.status == 200
    assert (r.headers["x-switchyard-provider"], r.headers["x-switchyard-model"]) == (
        "anthropic",
        "claude-sonnet-4-20250514",
    )
    assert r.headers["x-switchyard-attempts"] == "2"
    trail = _trail(r.headers["x-switchyard-attempt-trail"])
    assert (
        trail[1] == ("anthropic/claude", "ok")
        and trail[0][0] == "openai/gpt"
        and trail[0][1] in ("overloaded", "server_error")
    )


def test_error_headers_carry_request_id_and_attempts(
    gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    cases = [
        (b'{"model": "offline", "messages": [{"role": "user", "content": "x"}]}', None, 401, "0"),
        (b"{nope", key, 400, "0"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', key, 404, "0"),
    ]
    for body, token, status, attempts in cases:
        r = _post(gateway, body, token)
        assert r.status == status
        assert re.fullmatch(r"req_[0-9a-f]{24}", r.headers["x-request-id"])
        assert r.headers["x-switchyard-attempts"] == attempts
        assert "x-switchyard-provider" not in r.headers
        assert gateway.record(r.headers["x-request-id"])["status"] == status

    clean_fakes.openai.push(Fault("status", status=500), Fault("status", status=500))
    for stream in (False, True):
        r = _post(gateway, {"model": "solo", "messages": _messages("x"), "stream": stream}, key)
        assert (r.status, r.code) == (502, "upstream_error")
        assert r.headers["x-switchyard-attempts"] == "1"
        assert _trail(r.headers["x-switchyard-attempt-trail"]) == [("openai/gpt", "server_error")]
        assert gateway.record(r.headers["x-request-id"])["attempts"][0]["status"] == 500


def test_headers_on_a_gateway_refusal_before_any_attempt(gateway: Gateway, key: str) -> None:
    r = _post(gateway, {"model": "solo", "messages": _messages("x"), "max_tokens": 10_000_000}, key)
    assert (r.status, r.code) == (400, "no_candidate")
    assert r.headers["x-switchyard-attempts"] == "0"
    assert "x-switchyard-attempt-trail" not in r.headers
    assert gateway.record(r.headers["x-request-id"])["error_code"] == "no_candidate"
