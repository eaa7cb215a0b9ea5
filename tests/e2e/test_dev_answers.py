"""The dev gateway answers like production: the repository's gateway.yaml compiled for `dev`
and served by `python -m runtime serve` with no provider key set (only the mock has
credentials), driven by the official openai SDK as a user's code drives it.

- a request problem is a 400 the SDK does not retry, even when the other candidates were
  skipped for credentials (a 503 would be retried);
- `/v1/models` lists what the key can use now, and `models.retrieve` agrees;
- the mock honours `n` and `response_format` (parsed by the SDK's own `parse`);
- `serve` on a busy port: one line and exit code 1 before anything else is printed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pydantic
import pytest

from runtime.config import RuntimeConfig, load_config
from tests.e2e.test_gateway_compiled import PROVIDER_ENV, compile_env, serve_compiled
from tests.gateway_env import ROOT, Gateway


@pytest.fixture(scope="module")
def dev_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = Path(tmp_path_factory.mktemp("dev-answers"))
    runtime_json = compile_env(ROOT / "gateway.yaml", tmp / "build")
    gw = serve_compiled(runtime_json, tmp, strip=PROVIDER_ENV)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(dev_gateway: Gateway) -> str:
    return dev_gateway.key()


def _client(gw: Gateway, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=retries, timeout=15)


def _user(text: str) -> Any:
    return [{"role": "user", "content": text}]


# --- 1. a request problem is a 400 ---------------------------------------------------------


def test_an_impossible_max_tokens_is_a_400_the_sdk_does_not_retry(
    dev_gateway: Gateway, key: str
) -> None:
    seen: list[int] = []
    client = openai.OpenAI(
        base_url=dev_gateway.url + "/v1",
        api_key=key,
        max_retries=2,  # the SDK's default: it retries a 503, not a 400 with x-should-retry
        timeout=15,
        http_client=httpx.Client(event_hooks={"response": [lambda r: seen.append(r.status_code)]}),
    )
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chat", messages=_user("hi"), max_tokens=100_000_000)
    assert seen == [400]
    response = err.value.response
    assert response.headers["x-should-retry"] == "false"
    body = response.json()["error"]
    assert body["code"] == "no_candidate"
    message = body["message"]
    # The reason that makes it a 400 ...
    assert "mock/echo: max_tokens 100000000 is over the model's output limit of 65536" in message
    # ... and the credential skips listed beside it.
    assert "openai/gpt-4o: credentials not set (OPENAI_API_KEY)" in message
    assert "anthropic/claude-sonnet-4: credentials not set (ANTHROPIC_API_KEY)" in message
    record = dev_gateway.record(response.headers["x-request-id"])
    assert (record["status"], record["error_code"]) == (400, "no_candidate")


def test_a_route_whose_candidates_all_lack_credentials_is_still_a_503(
    dev_gateway: Gateway, key: str
) -> None:
    # Explicit ids are allowed in dev: openai/gpt-4o has no key, so the gateway's state,
    # not the request, is the problem (a retry may succeed once the key is set).
    with pytest.raises(openai.InternalServerError) as err:
        _client(dev_gateway, key).chat.completions.create(
            model="openai/gpt-4o", messages=_user("hi"), max_tokens=100_000_000
        )
    assert err.value.status_code == 503
    assert "x-should-retry" not in err.value.response.headers


# --- 2. /v1/models lists what the key can use now -----------------------------------------


def _usable(config: RuntimeConfig) -> list[str]:
    """From the compiled config: routes with a mock candidate, then the mock's models (the
    mock is the only provider without credentials to set)."""
    keyless = {pid for pid, p in config.providers.items() if not p.credentials}
    assert keyless == {"mock"}
    routes = [
        name
        for name, r in config.routes.items()
        if any(c.provider in keyless for c in r.candidates)
    ]
    return routes + [f"mock/{m}" for m in config.providers["mock"].models]


def test_models_lists_only_what_has_credentials(dev_gateway: Gateway, key: str) -> None:
    client = _client(dev_gateway, key)
    listed = [m.id for m in client.models.list()]
    expected = _usable(load_config(dev_gateway.config_path))
    assert listed == expected
    assert {"chat", "extract", "mock/echo"} <= set(listed)
    assert not any(m.startswith(("openai/", "anthropic/", "gemini/")) for m in listed)
    # GET /v1/models/{id} agrees with the list, both ways.
    for model_id in listed:
        assert client.models.retrieve(model_id).id == model_id
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("openai/gpt-4o")
    assert "GET /v1/models lists them" in err.value.message


# --- 3. the mock honours n and response_format ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_n_gives_n_choices(dev_gateway: Gateway, key: str, stream: bool) -> None:
    client = _client(dev_gateway, key)
    if not stream:
        done = client.chat.completions.create(model="mock/echo", messages=_user("hello"), n=3)
        assert [c.index for c in done.choices] == [0, 1, 2]
        assert [c.message.content for c in done.choices] == ["echo: hello"] * 3
        return
    texts: dict[int, str] = {}
    finished: dict[int, str] = {}
    with client.chat.completions.create(
        model="mock/echo", messages=_user("hello there"), n=2, stream=True
    ) as chunks:
        for chunk in chunks:
            for c in chunk.choices:
                texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
                if c.finish_reason:
                    finished[c.index] = c.finish_reason
    assert texts == {0: "echo: hello there", 1: "echo: hello there"}
    assert finished == {0: "stop", 1: "stop"}


class Line(pydantic.BaseModel):
    sku: str = pydantic.Field(min_length=8)
    quantity: int = pydantic.Field(ge=1)


class Invoice(pydantic.BaseModel):
    number: str
    currency: Literal["EUR", "USD"]
    lines: list[Line] = pydantic.Field(min_length=1)
    note: str | None


def test_structured_output_parses_with_the_sdk(dev_gateway: Gateway, key: str) -> None:
    # `parse` sends a strict json_schema of Invoice and validates the answer with pydantic.
    done = _client(dev_gateway, key).chat.completions.parse(
        model="extract", messages=_user("Invoice 7 for 2 widgets"), response_format=Invoice
    )
    invoice = done.choices[0].message.parsed
    assert isinstance(invoice, Invoice)
    assert invoice.currency == "EUR" and len(invoice.lines) == 1


def test_json_mode_answers_a_json_object(dev_gateway: Gateway, key: str) -> None:
    schema = Invoice.model_json_schema()
    system = f"Reply in JSON matching this schema:\n{json.dumps(schema)}"
    done = _client(dev_gateway, key).chat.completions.create(
        model="mock/echo",
        messages=[{"role": "system", "content": system}, *_user("Invoice 7")],
        response_format={"type": "json_object"},
        max_tokens=5,  # a JSON answer is never cut
    )
    content = done.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), schema)


def test_an_injected_error_names_the_provider_once(dev_gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        _client(dev_gateway, key).chat.completions.create(
            model="mock/echo", messages=_user("mock:error 429")
        )
    assert err.value.body["message"] == "mock: injected HTTP 429"  # type: ignore[index]


# --- 4. serve on a busy port ----------------------------------------------------------------


def test_serve_on_a_busy_port_says_so_in_one_line(dev_gateway: Gateway) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "runtime",
                "serve",
                "--config",
                str(dev_gateway.config_path),
                "--port",
                str(port),
                "--data-dir",
                str(dev_gateway.workdir / "busy"),
            ],
            cwd=ROOT,
            env=dev_gateway.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"error: port {port} on 127.0.0.1 is in use: Address already in use;"
        " pick another with --port\n"
    )
