"""The `anthropic` SDK against the gateway, as tools built on it run it (`base_url` at the
gateway, a gateway key as the API key): `messages.create` and `messages.stream` with text,
tools and a tool_result round trip, base64 images and extended thinking, `count_tokens`,
`models.retrieve`, and errors in Anthropic's shape. A route whose first candidate is Anthropic
passes the body through to the fake's own `/v1/messages`; OpenAI, Gemini and mock candidates
are translated; a failing Anthropic falls back to a translated OpenAI. Every answer is parsed
by the SDK into `anthropic.types.Message` / `RawMessageStreamEvent`s, so a shape it cannot
read fails here. Reference: https://docs.anthropic.com/en/api/messages, .../messages-streaming,
.../extended-thinking, .../messages-count-tokens, .../errors.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, replace_model, runtime_config

# A 1x1 PNG (the same pixel as tests/e2e/test_gateway.py's data URL).
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ"
    "GAhKmMIQAAAABJRU5ErkJggg=="
)
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
# (route, provider that answers, the start of its text); the first speaks Messages natively
ROUTES = [
    ("anthropic-first", "anthropic", "Hello from fake-anthropic"),
    ("chat", "openai", "Hello from fake-openai"),
    ("gemini-first", "gemini", "Hello from fake-gemini"),
    ("offline", "mock", "echo: "),
]
UPSTREAM_PATH = {
    "anthropic": "/v1/messages",
    "openai": "/v1/chat/completions",
}


@pytest.fixture(scope="module")
def gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The shared test config with the `reasoning` capability on claude, gpt and gemini, so
    requests with `thinking` are routed to them."""
    config = runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url)
    for pid, name in (("anthropic", "claude"), ("openai", "gpt"), ("gemini", "gemini")):
        caps = config.providers[pid].models[name].capabilities
        config = replace_model(config, pid, name, capabilities=caps | {"reasoning"})
    gw = Gateway(config, tmp_path_factory.mktemp("gateway"))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


@pytest.fixture(scope="module")
def client(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=15)


def _user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def _texts(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _paths(fake: Any) -> list[str]:
    return [r.path.split("?")[0] for r in fake.requests]


def _record(gateway: Gateway, request_id: str, provider: str, stream: bool) -> dict[str, Any]:
    rec = gateway.record(request_id)
    assert rec["endpoint"] == "/v1/messages"
    assert rec["provider"] == provider
    assert rec["status"] == 200
    assert rec["stream"] == stream
    assert rec["input_tokens"] > 0 and rec["output_tokens"] > 0
    if provider != "mock":
        assert rec["cost_usd"] > 0
    return rec


@pytest.mark.parametrize(("route", "provider", "greeting"), ROUTES)
def test_create(
    route: str,
    provider: str,
    greeting: str,
    gateway: Gateway,
    client: anthropic.Anthropic,
    clean_fakes: Fakes,
) -> None:
    raw = client.messages.with_raw_response.create(
        model=route, max_tokens=256, system="Be brief.", messages=_user("plain please")
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert _texts(msg).startswith(greeting) and "plain please" in _texts(msg)
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-switchyard-provider"] == provider
    assert raw.headers["x-switchyard-attempts"] == "1"
    rec = _record(gateway, raw.headers["x-request-id"], provider, stream=False)
    if provider == "anthropic":
        assert _paths(clean_fakes.anthropic) == ["/v1/messages"]
        sent = clean_fakes.anthropic.requests[0].body
        assert sent["model"] == "claude-sonnet-4-20250514" and sent["system"] == "Be brief."
        assert msg.id.startswith("msg_fake")  # the provider's own id, relayed
        assert rec["output_tokens"] == msg.usage.output_tokens
    else:
        assert clean_fakes.anthropic.requests == []
    if provider == "openai":
        assert _paths(clean_fakes.openai) == ["/v1/chat/completions"]


@pytest.mark.parametrize(("route", "provider", "greeting"), ROUTES)
def test_stream(
    route: str,
    provider: str,
    greeting: str,
    gateway: Gateway,
    client: anthropic.Anthropic,
    clean_fakes: Fakes,
) -> None:
    with client.messages.stream(
        model=route, max_tokens=256, messages=_user("stream please")
    ) as stream:
        headers = stream.response.headers
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 1
    assert "".join(pieces) == _texts(final)
    assert _texts(final).startswith(greeting) and "stream please" in _texts(final)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert headers["x-switchyard-provider"] == provider
    _record(gateway, headers["x-request-id"], provider, stream=True)
    if provider == "anthropic":
        assert _paths(clean_fakes.anthropic) == ["/v1/messages"]
        assert clean_fakes.anthropic.requests[0].body["stream"] is True


def test_the_raw_event_sequence_of_a_translated_stream(
    client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    events = list(
        client.messages.create(model="chat", max_tokens=256, messages=_user("hi"), stream=True)
    )
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types[-2] == "message_delta"
    assert types[1] == "content_block_start"
    assert "content_block_delta" in types and "content_block_stop" in types


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [500, 429])
def test_fallback_from_a_failing_anthropic_to_a_translated_openai(
    status: int,
    stream: bool,
    gateway: Gateway,
    client: anthropic.Anthropic,
    clean_fakes: Fakes,
) -> None:
    clean_fakes.anthropic.push(Fault("status", status=status))
    args: Any = {"model": "anthropic-first", "max_tokens": 256, "messages": _user("fall back")}
    if stream:
        with client.messages.stream(**args) as s:
            headers = s.response.headers
            msg = s.get_final_message()
    else:
        raw = client.messages.with_raw_response.create(**args)
        headers, msg = raw.headers, raw.parse()
    assert _texts(msg) == "Hello from fake-openai: fall back"
    assert headers["x-switchyard-attempts"] == "2"
    assert headers["x-switchyard-provider"] == "openai"
    assert _paths(clean_fakes.anthropic) == ["/v1/messages"]  # the passthrough was tried first
    assert _paths(clean_fakes.openai) == ["/v1/chat/completions"]
    rec = _record(gateway, headers["x-request-id"], "openai", stream=stream)
    assert rec["fell_back"]
    outcome = "server_error" if status == 500 else "rate_limited"
    assert [(a["provider"], a["outcome"]) for a in rec["attempts"]] == [
        ("anthropic", outcome),
        ("openai", "ok"),
    ]


@pytest.mark.parametrize("route", ["anthropic-first", "chat", "gemini-first", "offline"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_use_and_tool_result_round_trip(
    route: str, stream: bool, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    args: Any = {"model": route, "max_tokens": 256, "tools": TOOLS}
    question = {"role": "user", "content": "Weather in Paris?"}
    if stream:
        with client.messages.stream(messages=[question], **args) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(messages=[question], **args)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and isinstance(use.input["city"], str)
    assert use.id
    followup = [
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"}],
        },
    ]
    if stream:
        with client.messages.stream(messages=followup, **args) as s:
            second = s.get_final_message()
    else:
        second = client.messages.create(messages=followup, **args)
    assert second.stop_reason == "end_turn"
    assert _texts(second)
    assert not [b for b in second.content if b.type == "tool_use"]
    if route == "chat":  # translated: the tool result is a `tool` message for OpenAI
        sent = clean_fakes.openai.requests[-1].body["messages"]
        assert sent[-1] == {"role": "tool", "tool_call_id": use.id, "content": "sunny, 21C"}
    if route == "anthropic-first":
        sent = clean_fakes.anthropic.requests[-1].body["messages"]
        assert sent[-1]["content"][0]["tool_use_id"] == use.id


def test_a_tool_use_after_a_fallback(
    gateway: Gateway, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    clean_fakes.anthropic.push(Fault("status", status=529, message="Overloaded"))
    with client.messages.stream(
        model="anthropic-first", max_tokens=256, tools=TOOLS, messages=_user("Weather?")
    ) as s:
        headers = s.response.headers
        msg = s.get_final_message()
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather"
    assert headers["x-switchyard-provider"] == "openai"


def _image_message() -> Any:
    return [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                },
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]


@pytest.mark.parametrize("route", ["anthropic-first", "chat", "gemini-first"])
def test_a_base64_image(route: str, client: anthropic.Anthropic, clean_fakes: Fakes) -> None:
    msg = client.messages.create(model=route, max_tokens=256, messages=_image_message())
    assert "What is this?" in _texts(msg)
    if route == "anthropic-first":  # passed through as sent
        block = clean_fakes.anthropic.requests[0].body["messages"][0]["content"][0]
        assert block["source"]["data"] == PNG_B64
    elif route == "chat":
        part = clean_fakes.openai.requests[0].body["messages"][0]["content"][0]
        assert part["image_url"]["url"] == "data:image/png;base64," + PNG_B64
    else:
        parts = clean_fakes.gemini.requests[0].body["contents"][0]["parts"]
        inline = next(p["inlineData"] for p in parts if "inlineData" in p)
        assert base64.b64decode(inline["data"]) == base64.b64decode(PNG_B64)


def test_an_image_after_a_fallback_streamed(
    client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    clean_fakes.anthropic.push(Fault("status", status=500))
    with client.messages.stream(
        model="anthropic-first", max_tokens=256, messages=_image_message()
    ) as s:
        msg = s.get_final_message()
    assert _texts(msg).startswith("Hello from fake-openai")
    part = clean_fakes.openai.requests[0].body["messages"][0]["content"][0]
    assert part["image_url"]["url"].endswith(PNG_B64)


THINKING: Any = {"type": "enabled", "budget_tokens": 2048}


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_passed_through_to_anthropic(
    stream: bool, gateway: Gateway, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    args: Any = {
        "model": "anthropic-first",
        "max_tokens": 4096,
        "thinking": THINKING,
        "messages": _user("think first"),
    }
    if stream:
        with client.messages.stream(**args) as s:
            kinds = [e.type for e in s]
            msg = s.get_final_message()
        assert "thinking" in kinds  # the SDK's accumulated thinking_delta events
    else:
        msg = client.messages.create(**args)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    thinking = msg.content[0]
    assert thinking.type == "thinking"
    assert thinking.thinking == "Thinking about: think first"
    assert thinking.signature  # Anthropic's signature, relayed for the next turn
    assert clean_fakes.anthropic.requests[0].body["thinking"] == THINKING
    # the signed block goes back in the next turn as it came
    again = client.messages.create(
        model="anthropic-first",
        max_tokens=4096,
        thinking=THINKING,
        messages=[
            *_user("think first"),
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            *_user("and again"),
        ],
    )
    assert _texts(again).endswith("and again")
    sent = clean_fakes.anthropic.requests[-1].body["messages"][1]["content"][0]
    assert sent["signature"] == thinking.signature


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_translated_for_gemini(
    stream: bool, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    args: Any = {
        "model": "gemini-first",
        "max_tokens": 4096,
        "thinking": THINKING,
        "messages": _user("think first"),
    }
    if stream:
        with client.messages.stream(**args) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**args)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].type == "thinking" and msg.content[0].thinking
    assert _texts(msg).startswith("Hello from fake-gemini")
    config = clean_fakes.gemini.requests[0].body["generationConfig"]
    assert config["thinkingConfig"]["includeThoughts"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_after_a_fallback_to_openai(
    stream: bool, gateway: Gateway, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    clean_fakes.anthropic.push(Fault("status", status=500))
    args: Any = {
        "model": "anthropic-first",
        "max_tokens": 4096,
        "thinking": THINKING,
        "messages": _user("think first"),
    }
    if stream:
        with client.messages.stream(**args) as s:
            headers = s.response.headers
            msg = s.get_final_message()
    else:
        raw = client.messages.with_raw_response.create(**args)
        headers, msg = raw.headers, raw.parse()
    assert _texts(msg).startswith("Hello from fake-openai")
    assert headers["x-switchyard-provider"] == "openai"
    sent = clean_fakes.openai.requests[0].body
    assert sent["reasoning_effort"] in ("low", "medium", "high")
    rec = gateway.record(headers["x-request-id"])
    assert rec["fell_back"] and rec["reasoning_tokens"] > 0


def test_count_tokens_is_an_estimate_flagged_as_one(
    client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="anthropic-first", messages=_user("count these words please"), tools=TOOLS
    )
    counted = raw.parse()
    assert counted.input_tokens > 0
    assert raw.headers["x-switchyard-token-estimate"] == "chars/4"
    assert (counted.model_extra or {}).get("estimated") is True
    longer = client.messages.count_tokens(
        model="anthropic-first", messages=_user("count these words please " * 20), tools=TOOLS
    )
    assert longer.input_tokens > counted.input_tokens
    assert clean_fakes.anthropic.requests == []  # counted by the gateway


def test_models_retrieve(client: anthropic.Anthropic) -> None:
    info = client.models.retrieve("anthropic-first")
    assert info.id == "anthropic-first" and info.type == "model"
    by_provider = client.models.retrieve("anthropic/claude")
    assert by_provider.id == "anthropic/claude"


def test_a_bad_key_is_an_authentication_error(gateway: Gateway, clean_fakes: Fakes) -> None:
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="sy_test_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(model="anthropic-first", max_tokens=16, messages=_user("hi"))
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert clean_fakes.anthropic.requests == []


def test_a_bad_request_is_a_bad_request_error_in_anthropics_shape(
    client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="anthropic-first",
            max_tokens=1024,
            thinking={"type": "enabled", "budget_tokens": 2048},  # over max_tokens
            messages=_user("hi"),
        )
    body: Any = err.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "budget_tokens" in body["error"]["message"]
    assert err.value.response.headers["x-request-id"].startswith("req_")
    assert clean_fakes.anthropic.requests == []


def test_an_unknown_model_is_a_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="no-such-route", max_tokens=16, messages=_user("hi"))
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"


def test_a_passthrough_stream_that_breaks_after_its_first_text_raises_in_the_sdk(
    gateway: Gateway, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    # Committed at the first text delta: no fallback; Anthropic's own error event is relayed
    # and the SDK raises it.
    clean_fakes.anthropic.push(Fault("error_event"))
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        client.messages.stream(
            model="anthropic-first", max_tokens=256, messages=_user("break please")
        ) as s,
    ):
        for _ in s.text_stream:
            pass
    assert "Overloaded" in str(err.value)
    assert clean_fakes.openai.requests == []


def test_a_translated_stream_cut_after_commit_ends_in_anthropics_error_event(
    gateway: Gateway, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    clean_fakes.openai.push(Fault("drop_mid_stream"))
    pieces: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        client.messages.stream(model="chat", max_tokens=256, messages=_user("break please")) as s,
    ):
        request_id = s.response.headers["x-request-id"]
        for text in s.text_stream:
            pieces.append(text)
    assert pieces  # it had committed: the text so far reached the client
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] in ("api_error", "overloaded_error")
    rec = gateway.record(request_id)
    assert rec["broke_after_commit"] and rec["endpoint"] == "/v1/messages"
    assert clean_fakes.anthropic.requests == []  # no fallback after the commit


@pytest.mark.parametrize("variable", ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"])
def test_a_client_configured_from_the_environment(
    variable: str, gateway: Gateway, key: str, monkeypatch: pytest.MonkeyPatch, clean_fakes: Fakes
) -> None:
    # How tools built on the SDK (Claude Code) are pointed at a gateway.
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", gateway.url)
    monkeypatch.setenv(variable, key)
    msg = anthropic.Anthropic(max_retries=0).messages.create(
        model="anthropic-first", max_tokens=64, messages=_user("from the env")
    )
    assert _texts(msg) == "Hello from fake-anthropic: from the env"
    # the gateway's key stays at the gateway: the provider gets the configured one
    assert clean_fakes.anthropic.requests[0].headers["x-api-key"] == "test-anthropic-key"


def test_the_documented_x_api_key_header(gateway: Gateway, key: str, clean_fakes: Fakes) -> None:
    # Anthropic's documented header (older SDKs and raw HTTP clients send it).
    resp = httpx.post(
        gateway.url + "/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={"model": "chat", "max_tokens": 64, "messages": _user("raw http")},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    msg = anthropic.types.Message.model_validate(resp.json())
    assert _texts(msg) == "Hello from fake-openai: raw http"


def test_the_clients_beta_header_reaches_anthropic_on_a_passthrough_only(
    gateway: Gateway, client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}
    client.messages.create(
        model="anthropic-first", max_tokens=64, messages=_user("beta"), extra_headers=beta
    )
    (sent,) = clean_fakes.anthropic.requests
    assert {k.lower(): v for k, v in sent.headers.items()}["anthropic-beta"] == beta[
        "anthropic-beta"
    ]
    client.messages.create(model="chat", max_tokens=64, messages=_user("beta"), extra_headers=beta)
    (translated,) = clean_fakes.openai.requests
    assert "anthropic-beta" not in {k.lower() for k in translated.headers}
