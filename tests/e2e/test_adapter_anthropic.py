"""AnthropicAdapter against the fake Anthropic server: request mapping, answers, streams, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from runtime.adapters.anthropic import (
    AnthropicAdapter,
    AnthropicStream,
    build_request,
    parse_completion,
    stream_error,
)
from runtime.adapters.base import Call, Chunk, Completion, Usage
from runtime.adapters.transport import Transport
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError
from tests.conformance.anthropic_types import validate
from tests.fakes.anthropic_fake import (
    CONTEXT_LENGTH_MESSAGE,
    DEFAULT_API_KEY,
    TOOL_INPUT,
    anthropic_fake,
    signature_of,
    tokens,
)
from tests.fakes.base import FakeProvider, Fault
from tests.gateway_env import Gateway, replace_model, runtime_config

UPSTREAM = "claude-fake-1"
REPLY = "Hello from fake-anthropic: ping"
HELLO: list[dict[str, Any]] = [{"role": "user", "content": "ping"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PNG_B64 = "iVBORw0KGgo="


def model(max_output_tokens: int | None = 8192) -> ModelConfig:
    return ModelConfig(
        name="claude",
        upstream=UPSTREAM,
        context_window=200_000,
        max_output_tokens=max_output_tokens,
        capabilities=frozenset({"streaming", "tools", "vision"}),
        price=None,
    )


def provider(url: str, timeout_s: float = 2.0) -> ProviderConfig:
    return ProviderConfig(
        id="anthropic",
        adapter="anthropic",
        base_url=url,
        credentials={"api_key": "ANTHROPIC_API_KEY"},
        credentials_optional=False,
        timeout_s=timeout_s,
        connect_timeout_s=1.0,
        models={"claude": model()},
    )


@dataclass
class Outcome:
    """What one adapter call produced: a completion, or stream chunks, and/or an error."""

    completion: Completion | None = None
    chunks: list[Chunk] = field(default_factory=list)
    usage: Usage | None = None
    model: str | None = None
    error: UpstreamError | None = None
    failed_while_iterating: bool = False

    def text(self) -> str:
        return "".join(c["delta"].get("content") or "" for ch in self.chunks for c in ch.choices)

    def tool_deltas(self) -> list[dict[str, Any]]:
        return [
            tc
            for ch in self.chunks
            for c in ch.choices
            for tc in c["delta"].get("tool_calls") or ()
        ]

    def finish_reasons(self) -> list[str]:
        return [
            c["finish_reason"] for ch in self.chunks for c in ch.choices if c.get("finish_reason")
        ]


async def _run(
    fake: FakeProvider,
    request: dict[str, Any],
    stream: bool,
    api_key: str,
    timeout_s: float,
    cfg: ModelConfig,
) -> Outcome:
    out = Outcome()
    async with Transport() as session:
        adapter = AnthropicAdapter(provider(fake.url, timeout_s), session)
        call = Call(
            request=request,
            model=cfg,
            credentials={"api_key": api_key},
            request_id="req-1",
        )
        try:
            result: Completion | AnthropicStream = await (
                adapter.open_stream(call) if stream else adapter.complete(call)
            )
        except UpstreamError as exc:
            out.error = exc
            return out
        if isinstance(result, Completion):
            out.completion = result
            return out
        try:
            async for chunk in result:
                out.chunks.append(chunk)
        except UpstreamError as exc:
            out.error, out.failed_while_iterating = exc, True
        finally:
            await result.aclose()
        out.usage, out.model = result.usage, result.model
    return out


def run(
    fake: FakeProvider,
    request: dict[str, Any] | None = None,
    *,
    stream: bool = False,
    api_key: str = DEFAULT_API_KEY,
    timeout_s: float = 2.0,
    cfg: ModelConfig | None = None,
) -> Outcome:
    body = request if request is not None else {"model": "claude", "messages": HELLO}
    return asyncio.run(_run(fake, body, stream, api_key, timeout_s, cfg or model()))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with anthropic_fake() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeProvider) -> Iterator[FakeProvider]:
    """The fake, reset; every Messages request it received is then validated against the
    official SDK's request type (extra keys forbidden)."""
    server.reset()
    yield server
    for received in server.requests:
        if received.path == "/v1/messages" and isinstance(received.body, dict):
            validate(received.body, received.body.get("stream") is True)


# --- request mapping -------------------------------------------------------------------------


def test_request_maps_to_the_messages_api(fake: FakeProvider) -> None:
    request = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "user", "content": [{"type": "text", "text": "And Rome?"}]},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "rainy"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "stop": "END",
        "temperature": 0.3,
        "top_p": 0.9,
        "user": "user-42",
    }
    assert run(fake, request).error is None
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == DEFAULT_API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": UPSTREAM,
        "max_tokens": 8192,
        "system": "You are terse.\n\nUse metric units.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "text", "text": "And Rome?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "rainy"}],
                    },
                    {"type": "text", "text": "What is in these?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                    },
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather at a place",
                "input_schema": WEATHER_TOOL["function"]["parameters"],
            }
        ],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }


@pytest.mark.parametrize(
    ("request_fields", "max_output_tokens", "expected"),
    [
        ({}, 8192, 8192),
        ({}, None, 4096),
        ({"max_tokens": 300}, 8192, 300),
        ({"max_completion_tokens": 50}, None, 50),
    ],
)
def test_max_tokens_is_always_sent(
    fake: FakeProvider, request_fields: dict[str, Any], max_output_tokens: int | None, expected: int
) -> None:
    run(
        fake, {"model": "claude", "messages": HELLO, **request_fields}, cfg=model(max_output_tokens)
    )
    assert fake.requests[-1].body["max_tokens"] == expected


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_mapping(
    tool_choice: Any, parallel: Any, expected: dict[str, Any] | None
) -> None:
    request: dict[str, Any] = {"model": "claude", "messages": HELLO, "tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        request["tool_choice"] = tool_choice
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    body = build_request(Call(request, model(), {}, "r"))
    assert body.get("tool_choice") == expected


def test_response_format_becomes_a_system_instruction() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = {
        "model": "claude",
        "messages": [{"role": "system", "content": "Be exact."}, *HELLO],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    body = build_request(Call(request, model(), {}, "r"))
    assert body["system"].startswith("Be exact.\n\n")
    assert "JSON" in body["system"] and json.dumps(schema, separators=(",", ":")) in body["system"]
    json_object = build_request(
        Call({**request, "response_format": {"type": "json_object"}}, model(), {}, "r")
    )
    assert "JSON object" in json_object["system"]


def test_temperature_is_not_sent() -> None:
    call = Call({"model": "claude", "messages": HELLO, "temperature": 1.7}, model(), {}, "r")
    body = build_request(call)
    assert "temperature" not in body
    assert call.notes == [
        "dropped `temperature`: Anthropic's Messages API takes no sampling parameters "
        "(Claude Opus 4.7 and later refuse them)"
    ]


def test_unmappable_request_is_bad_request_before_any_network(fake: FakeProvider) -> None:
    out = run(fake, {"model": "claude", "messages": HELLO, "n": 2})
    assert out.error is not None and out.error.error_class == "bad_request"
    bad_call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    bad_args = [{"role": "assistant", "tool_calls": [bad_call]}]
    out = run(fake, {"model": "claude", "messages": [*HELLO, *bad_args]})
    assert out.error is not None and out.error.error_class == "bad_request"
    out = run(fake, {"model": "claude", "messages": ["not a message"]})
    assert out.error is not None and out.error.error_class == "bad_request"
    assert fake.requests == []


# --- non-streamed answers ----------------------------------------------------------------------


def test_completion_has_text_finish_reason_and_usage(fake: FakeProvider) -> None:
    out = run(fake)
    assert out.completion is not None
    assert out.completion.message == {"role": "assistant", "content": REPLY}
    assert out.completion.finish_reason == "stop"
    assert out.completion.usage == Usage(tokens("ping"), tokens(REPLY))
    assert out.completion.model == UPSTREAM


def test_completion_tool_use_becomes_tool_calls(fake: FakeProvider) -> None:
    out = run(fake, {"model": "claude", "messages": HELLO, "tools": [WEATHER_TOOL]})
    assert out.completion is not None
    msg = out.completion.message
    assert msg["content"] is None
    [call] = msg["tool_calls"]
    assert call["id"].startswith("toolu_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == TOOL_INPUT
    assert out.completion.finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_effort_on_claude_4_7_is_adaptive_thinking_and_reaches_the_client(
    fake: FakeProvider, stream: bool
) -> None:
    cfg = ModelConfig(
        "claude", "claude-opus-4-7", 200_000, 8192, frozenset({"streaming", "reasoning"}), None
    )
    request = {"model": "claude", "messages": HELLO, "reasoning_effort": "xhigh", "top_p": 0.9}
    out = run(fake, request, stream=stream, cfg=cfg)
    assert out.error is None
    sent = fake.requests[-1].body
    assert sent["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert sent["output_config"] == {"effort": "xhigh"} and "top_p" not in sent
    if stream:
        reasoning = "".join(
            c["delta"].get("reasoning_content") or "" for ch in out.chunks for c in ch.choices
        )
        assert reasoning == "Thinking about: ping" and out.text() == REPLY
    else:
        assert out.completion is not None
        assert out.completion.message["reasoning_content"] == "Thinking about: ping"
        assert out.completion.message["content"] == REPLY


def test_max_tokens_stop_is_length(fake: FakeProvider) -> None:
    out = run(fake, {"model": "claude", "messages": HELLO, "max_tokens": 2})
    assert out.completion is not None and out.completion.finish_reason == "length"


def test_cache_tokens_count_as_input() -> None:
    doc = {
        "type": "message",
        "model": UPSTREAM,
        "content": [
            {"type": "text", "text": "a"},
            {"type": "thinking", "thinking": "hm", "signature": "c2ln"},
            {"type": "text", "text": "b"},
        ],
        "stop_reason": "stop_sequence",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 5,
        },
    }
    completion = parse_completion(doc)
    assert completion.usage == Usage(1110, 5, cached_input_tokens=1000, cache_write_tokens=100)
    assert completion.message["content"] == "ab"
    assert completion.finish_reason == "stop"


# --- streams -------------------------------------------------------------------------------


def test_stream_yields_role_then_text_then_finish_and_usage(fake: FakeProvider) -> None:
    out = run(fake, stream=True)
    assert out.error is None
    first = out.chunks[0]
    assert not first.content
    assert first.choices == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    content = [c for c in out.chunks if c.content]
    assert len(content) >= 3
    assert out.text() == REPLY
    assert out.finish_reasons() == ["stop"]
    expected = Usage(tokens("ping"), tokens(REPLY))
    assert out.usage == expected
    assert [c.usage for c in out.chunks if c.usage is not None] == [expected]
    assert out.model == UPSTREAM
    assert fake.requests[-1].body["stream"] is True


def test_stream_tool_use_becomes_tool_call_deltas(fake: FakeProvider) -> None:
    out = run(fake, {"model": "claude", "messages": HELLO, "tools": [WEATHER_TOOL]}, stream=True)
    assert out.error is None
    deltas = out.tool_deltas()
    head, rest = deltas[0], deltas[1:]
    assert head["index"] == 0 and head["id"].startswith("toolu_") and head["type"] == "function"
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    assert rest and all(d["index"] == 0 and set(d) == {"index", "function"} for d in rest)
    assert json.loads("".join(d["function"]["arguments"] for d in rest)) == TOOL_INPUT
    assert all(
        c.content for c in out.chunks if any(ch["delta"].get("tool_calls") for ch in c.choices)
    )
    assert out.finish_reasons() == ["tool_calls"]


def test_delayed_first_chunk_still_streams_everything(fake: FakeProvider) -> None:
    fake.push(Fault("delay_first_chunk", delay=0.2))
    out = run(fake, stream=True)
    assert out.error is None and out.text() == REPLY


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "error_class", "code"),
    [
        (429, "rate limited", "rate_limited", "rate_limit_error"),
        (529, "Overloaded", "overloaded", "overloaded_error"),
        (500, "Internal server error", "server_error", "api_error"),
        (400, CONTEXT_LENGTH_MESSAGE, "context_length", "invalid_request_error"),
        (
            400,
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000,"
            " decrease input length or `max_tokens` and try again",
            "context_length",
            "invalid_request_error",
        ),
        (
            400,
            "messages: text content blocks must be non-empty",
            "bad_request",
            "invalid_request_error",
        ),
        (
            413,
            "Request exceeds the maximum allowed number of bytes.",
            "bad_request",
            "request_too_large",
        ),
        (404, "model: claude-nope", "not_found", "not_found_error"),
        (403, "Your API key does not have permission", "auth", "permission_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_error_status_is_classified(
    fake: FakeProvider, status: int, message: str, error_class: str, code: str, stream: bool
) -> None:
    fake.push(Fault("status", status=status, message=message))
    out = run(fake, stream=stream)
    assert out.error is not None and not out.failed_while_iterating
    assert (out.error.error_class, out.error.code, out.error.status) == (error_class, code, status)
    assert out.error.message == message


def test_rate_limit_carries_retry_after(fake: FakeProvider) -> None:
    fake.push(Fault("status", status=429, message="slow down", headers={"retry-after": "7"}))
    out = run(fake)
    assert out.error is not None and out.error.error_class == "rate_limited"
    assert out.error.retry_after == 7.0


def test_wrong_key_is_auth(fake: FakeProvider) -> None:
    out = run(fake, api_key="sk-wrong")
    assert out.error is not None
    assert (out.error.error_class, out.error.status) == ("auth", 401)
    assert "sk-wrong" not in out.error.message


@pytest.mark.parametrize("stream", [False, True])
def test_reset_is_connect_error(fake: FakeProvider, stream: bool) -> None:
    fake.push(Fault("reset"))
    out = run(fake, stream=stream)
    assert out.error is not None and out.error.error_class == "connect_error"


def test_no_headers_before_the_timeout_is_timeout(fake: FakeProvider) -> None:
    fake.push(Fault("delay_headers", delay=1.5))
    out = run(fake, timeout_s=0.3)
    assert out.error is not None and out.error.error_class == "timeout"


def test_malformed_body_is_server_error(fake: FakeProvider) -> None:
    fake.push(Fault("malformed"))
    out = run(fake)
    assert out.error is not None
    assert (out.error.error_class, out.error.code) == ("server_error", "upstream_malformed")


def test_malformed_stream_event_is_server_error_while_iterating(fake: FakeProvider) -> None:
    fake.push(Fault("malformed"))
    out = run(fake, stream=True)
    assert out.error is not None and out.failed_while_iterating
    assert (out.error.error_class, out.error.code) == ("server_error", "upstream_malformed")


def test_dropped_stream_is_stream_broken_after_content(fake: FakeProvider) -> None:
    fake.push(Fault("drop_mid_stream"))
    out = run(fake, stream=True)
    assert out.error is not None and out.failed_while_iterating
    assert (out.error.error_class, out.error.code) == ("server_error", "stream_broken")
    assert any(c.content for c in out.chunks)
    assert out.text() != REPLY


def test_error_event_raises_its_class_while_iterating(fake: FakeProvider) -> None:
    fake.push(Fault("error_event"))
    out = run(fake, stream=True)
    assert out.error is not None and out.failed_while_iterating
    assert (out.error.error_class, out.error.code) == ("overloaded", "stream_error_event")
    assert out.text() == "Hello "


@pytest.mark.parametrize(
    ("error_type", "error_class"),
    [
        ("overloaded_error", "overloaded"),
        ("rate_limit_error", "rate_limited"),
        ("api_error", "server_error"),
        ("timeout_error", "timeout"),
        ("invalid_request_error", "bad_request"),
        ("something_new", "server_error"),
    ],
)
def test_error_event_types_map_to_classes(error_type: str, error_class: str) -> None:
    err = stream_error({"type": "error", "error": {"type": error_type, "message": "x"}})
    assert err.error_class == error_class


def test_stream_without_message_stop_is_truncated(fake: FakeProvider) -> None:
    fake.push(Fault("no_terminator"))
    out = run(fake, stream=True)
    assert out.error is not None and out.failed_while_iterating
    assert (out.error.error_class, out.error.code) == ("server_error", "stream_truncated")
    assert out.text() == REPLY  # everything arrived but the terminator


# --- through the gateway, with the official openai SDK as the client -------------------------


@pytest.fixture(scope="module")
def thinking_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, str, FakeProvider]]:
    """A gateway whose `anthropic-first` route leads to a reasoning Claude on the fake."""
    with anthropic_fake() as fake:
        config = runtime_config("http://127.0.0.1:9", fake.url, "http://127.0.0.1:9")
        capabilities = frozenset({"streaming", "tools", "vision", "reasoning"})
        config = replace_model(config, "anthropic", "claude", capabilities=capabilities)
        gw = Gateway(config, Path(tmp_path_factory.mktemp("thinking")))
        gw.start()
        try:
            yield gw, gw.key(), fake
        finally:
            gw.stop()
        for received in fake.requests:
            if received.path == "/v1/messages" and isinstance(received.body, dict):
                validate(received.body, received.body.get("stream") is True)


def test_reasoning_effort_reaches_the_client_as_reasoning_content(
    thinking_gateway: tuple[Gateway, str, FakeProvider],
) -> None:
    gw, key, fake = thinking_gateway
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=15)
    raw = client.chat.completions.with_raw_response.create(
        model="anthropic-first", messages=[{"role": "user", "content": "ping"}],
        reasoning_effort="low",
    )  # fmt: skip
    assert raw.headers["x-switchyard-provider"] == "anthropic"
    message = raw.parse().choices[0].message
    assert message.content == REPLY
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == "Thinking about: ping"
    assert extra["thinking_blocks"] == [
        {
            "type": "thinking",
            "thinking": "Thinking about: ping",
            "signature": signature_of("Thinking about: ping"),
        }
    ]
    # the next turn sends the signed block back, first in the assistant turn
    follow = [
        {"role": "user", "content": "ping"},
        {"role": "assistant", "content": message.content, **extra},
        {"role": "user", "content": "again"},
    ]
    client.chat.completions.create(
        model="anthropic-first",
        messages=follow,
        reasoning_effort="low",  # type: ignore[arg-type]
    )
    sent = fake.requests[-1].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [extra["thinking_blocks"][0], {"type": "text", "text": REPLY}],
    }


def test_streamed_reasoning_effort_reaches_the_client_as_reasoning_deltas(
    thinking_gateway: tuple[Gateway, str, FakeProvider],
) -> None:
    gw, key, _ = thinking_gateway
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=15)
    stream = client.chat.completions.create(
        model="anthropic-first", messages=[{"role": "user", "content": "ping"}],
        reasoning_effort="high", stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    reasoning, text, blocks, usage = "", "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            reasoning += extra.get("reasoning_content") or ""
            blocks.extend(extra.get("thinking_blocks") or ())
            text += choice.delta.content or ""
    assert reasoning == "Thinking about: ping"
    assert blocks == [
        {
            "type": "thinking",
            "thinking": "Thinking about: ping",
            "signature": signature_of("Thinking about: ping"),
        }
    ]
    assert text == REPLY
    assert usage is not None and usage.completion_tokens == tokens(REPLY) + tokens(reasoning)


def test_thinking_longer_than_the_first_byte_timeout_keeps_the_attempt(
    thinking_gateway: tuple[Gateway, str, FakeProvider],
) -> None:
    """The route's first_byte_timeout_s is 1 s; the fake thinks for about 1.4 s (a delta every
    0.2 s) before the first text: thinking is progress, so the attempt is not abandoned."""
    gw, key, fake = thinking_gateway
    fake.push(Fault("slow_stream", delay=0.2))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=15)
    raw = client.chat.completions.with_raw_response.create(
        model="anthropic-first", messages=[{"role": "user", "content": "think a while"}],
        reasoning_effort="low", stream=True,
    )  # fmt: skip
    deltas = [c.choices[0].delta for c in raw.parse() if c.choices]
    thought = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert thought == "Thinking about: think a while"
    assert "".join(d.content or "" for d in deltas) == "Hello from fake-anthropic: think a while"
    assert raw.headers["x-switchyard-attempts"] == "1"
