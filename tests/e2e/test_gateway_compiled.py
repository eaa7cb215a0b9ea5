"""The compiler → runtime contract end to end: `python -m compiler build` output served as is by
`python -m runtime serve`, exercised with the official openai SDK.

The repo's own gateway.yaml (dev) must serve with no provider key at all — its secrets are
optional there, so the mock provider answers and the others are recorded as skipped. A small
gateway.yaml of our own, pointing its openai provider at the fake OpenAI server, must carry a
request through to that provider.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from runtime.config import load_config
from tests.conftest import Fakes
from tests.gateway_env import FAKE_KEYS, ROOT, Gateway

PROVIDER_ENV = [*FAKE_KEYS, "DEV_BYOK_ENCRYPTION_KEY"]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def compile_env(config: Path, out: Path, env: str = "dev") -> Path:
    """`python -m compiler build ENV --config CONFIG --out OUT`; the runtime.json path."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "compiler",
            "build",
            env,
            "--config",
            str(config),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runtime_json = out / env / "runtime.json"
    assert runtime_json.is_file()
    return runtime_json


def serve_compiled(
    runtime_json: Path,
    workdir: Path,
    env: dict[str, str] | None = None,
    strip: list[str] | None = None,
) -> Gateway:
    """A Gateway serving the compiler's runtime.json itself (not a re-serialised copy)."""
    gw = Gateway(load_config(runtime_json), workdir, env=env)
    gw.config_path = runtime_json
    for name in strip or ():
        gw.env.pop(name, None)
    return gw


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def dev_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = Path(tmp_path_factory.mktemp("compiled-dev"))
    runtime_json = compile_env(ROOT / "gateway.yaml", tmp / "build")
    gw = serve_compiled(runtime_json, tmp, strip=PROVIDER_ENV)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def dev_client(dev_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=dev_gateway.url + "/v1", api_key=dev_gateway.key(), max_retries=0, timeout=15
    )


def _messages(text: str) -> Any:
    return [{"role": "user", "content": text}]


def test_dev_is_ready_without_any_provider_key(dev_gateway: Gateway) -> None:
    assert not any(name in dev_gateway.env for name in PROVIDER_ENV)
    status, detail = _get(dev_gateway.url + "/readyz")
    assert status == 200, detail
    assert detail["environment"] == "dev" and detail["problems"] == []
    assert detail["config_hash"] == json.loads(dev_gateway.config_path.read_text())["config_hash"]
    banner = dev_gateway.log.read_text()
    assert "openai (no credentials: skipped)" in banner
    assert "mock (no credentials" not in banner


def test_models_lists_the_compiled_routes(dev_client: openai.OpenAI) -> None:
    ids = [m.id for m in dev_client.models.list()]
    assert {"chat", "summarize", "assist", "extract"} <= set(ids)
    assert "mock/echo" in ids  # runtime.allow_explicit_models: true


def test_chat_is_answered_by_mock_and_the_rest_are_skipped(
    dev_gateway: Gateway, dev_client: openai.OpenAI
) -> None:
    raw = dev_client.chat.completions.with_raw_response.create(
        model="chat", messages=_messages("hello from the compiled config")
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello from the compiled config"
    assert (raw.headers["x-switchyard-provider"], raw.headers["x-switchyard-route"]) == (
        "mock",
        "chat",
    )
    assert raw.headers["x-switchyard-attempts"] == "1"
    rec = dev_gateway.record(raw.headers["x-request-id"])
    assert (rec["status"], rec["environment"], rec["provider"]) == (200, "dev", "mock")
    assert rec["skipped"] == [
        {"provider": "openai", "model": "gpt-4o", "reason": "credentials not set (OPENAI_API_KEY)"},
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "reason": "credentials not set (ANTHROPIC_API_KEY)",
        },
        {
            "provider": "gemini",
            "model": "gemini-2.5-pro",
            "reason": "credentials not set (GEMINI_API_KEY)",
        },
    ]
    compiled = json.loads(dev_gateway.config_path.read_text())
    assert (rec["config_hash"], rec["price_table_hash"]) == (
        compiled["config_hash"],
        compiled["price_table_hash"],
    )
    assert rec["cost_usd"] == 0.0  # mock is priced at 0 in gateway.yaml, so known and zero


def test_chat_streams_through_mock(dev_gateway: Gateway, dev_client: openai.OpenAI) -> None:
    raw = dev_client.chat.completions.with_raw_response.create(
        model="chat",
        messages=_messages("stream me please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in raw.parse():
        for choice in chunk.choices:
            text += choice.delta.content or ""
        usage = chunk.usage or usage
    assert text == "echo: stream me please"
    assert usage is not None and usage.completion_tokens > 0
    assert raw.headers["x-switchyard-provider"] == "mock"
    rec = dev_gateway.record(raw.headers["x-request-id"])
    assert rec["stream"] == 1 and rec["output_tokens"] == usage.completion_tokens


def test_chat_tool_calls_through_mock(dev_client: openai.OpenAI) -> None:
    completion = dev_client.chat.completions.create(
        model="chat", messages=_messages("weather in Oslo?"), tools=TOOLS
    )
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "example"}  # type: ignore[union-attr]
    name, args = None, ""
    for chunk in dev_client.chat.completions.create(
        model="chat", messages=_messages("weather in Oslo?"), tools=TOOLS, stream=True
    ):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                if tc.function is not None:
                    name = tc.function.name or name
                    args += tc.function.arguments or ""
    assert name == "get_weather" and json.loads(args) == {"city": "example"}


def test_required_secret_of_a_compiled_environment_gates_readiness(
    fakes: Fakes, tmp_path: Path
) -> None:
    runtime_json = compile_env(_write_own_yaml(tmp_path, fakes.openai.url), tmp_path / "build")
    gw = serve_compiled(runtime_json, tmp_path, strip=PROVIDER_ENV)
    gw.start(wait_ready=False)
    try:
        status, detail = _get(gw.url + "/readyz")
    finally:
        gw.stop()
    assert status == 503
    assert any("OPENAI_API_KEY" in p for p in detail["problems"]), detail


# --- a gateway.yaml of our own, over the fake OpenAI server ---------------------------------

OWN_YAML = """\
version: 1
project: fake-backed
providers:
  openai:
    adapter: openai
    base_url: {base_url}
    credentials:
      api_key: OPENAI_API_KEY
    timeout_s: 10
    models:
      gpt-4o:
        upstream: gpt-4o-2024-08-06
        context_window: 128000
        max_output_tokens: 16384
        capabilities: [streaming, tools, json_mode]
        price: {{input: 2.5, output: 10}}
routes:
  chat:
    candidates: [openai/gpt-4o]
    requires: [streaming]
orgs:
  acme: {{}}
environments:
  dev:
    target: local
    port: 8080
    secrets:
      OPENAI_API_KEY: {{env: OPENAI_API_KEY}}
"""


def _write_own_yaml(tmp: Path, openai_url: str) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(OWN_YAML.format(base_url=openai_url + "/v1"))
    return path


def test_own_gateway_yaml_reaches_the_fake_openai_server(
    clean_fakes: Fakes, tmp_path: Path
) -> None:
    runtime_json = compile_env(
        _write_own_yaml(tmp_path, clean_fakes.openai.url), tmp_path / "build"
    )
    gw = serve_compiled(
        runtime_json, tmp_path, strip=[n for n in PROVIDER_ENV if n != "OPENAI_API_KEY"]
    )
    with gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0, timeout=15)
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=_messages("through the compiled config")
        )
        completion = raw.parse()
        assert (completion.choices[0].message.content or "").startswith("Hello from fake-openai")
        assert (raw.headers["x-switchyard-provider"], raw.headers["x-switchyard-model"]) == (
            "openai",
            "gpt-4o-2024-08-06",
        )
        sent = clean_fakes.openai.requests[-1]
        assert sent.path == "/v1/chat/completions"
        assert sent.body["model"] == "gpt-4o-2024-08-06"
        assert sent.headers["Authorization"] == f"Bearer {FAKE_KEYS['OPENAI_API_KEY']}"
        rec = gw.record(raw.headers["x-request-id"])
        usage = completion.usage
        assert usage is not None
        assert rec["cost_usd"] == pytest.approx(
            (usage.prompt_tokens * 2.5 + usage.completion_tokens * 10) / 1_000_000
        )

        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="chat", messages=_messages("streamed"), stream=True
            )
            if c.choices
        )
        assert text.startswith("Hello from fake-openai")
        assert clean_fakes.openai.requests[-1].body["stream"] is True
