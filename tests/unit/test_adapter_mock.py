"""MockAdapter: offline, deterministic answers shaped like OpenAI's, plus dev directives."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import pytest

from runtime.adapters.base import Call, Chunk, Completion
from runtime.adapters.mock import LATENCY_ENV, MockAdapter, MockStream
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError

MODEL = ModelConfig(
    name="echo",
    upstream="mock-echo-1",
    context_window=32_000,
    max_output_tokens=None,
    capabilities=frozenset({"streaming", "tools", "vision", "json_mode", "json_schema"}),
    price=None,
)
PROVIDER = ProviderConfig(
    id="mock",
    adapter="mock",
    base_url=None,
    credentials={},
    credentials_optional=True,
    timeout_s=30.0,
    connect_timeout_s=5.0,
    models={"echo": MODEL},
)
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "book_flight",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string"},
                    "seats": {"type": "integer"},
                    "price": {"type": "number"},
                    "window": {"type": "boolean"},
                    "cabin": {"type": "string", "enum": ["economy", "business"]},
                    "stops": {"type": "array", "items": {"type": "string"}},
                    "passenger": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name"],
                    },
                    "note": {"type": "string"},
                },
                "required": ["origin", "seats", "price", "window", "cabin", "stops", "passenger"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "other", "parameters": {"type": "object", "properties": {}}},
    },
]


def call(content: Any = "hello world", *, stream: bool = False, **extra: Any) -> Call:
    request = {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}
    if stream:
        request["stream"] = True
    return Call(request=request, model=MODEL, credentials={}, request_id="r1")


def streamed(c: Call) -> Call:
    """The same call, streamed."""
    return replace(c, request={**c.request, "stream": True})


async def send(adapter: MockAdapter, c: Call) -> Completion | MockStream:
    """complete() or open_stream(), as the request's `stream` says (as the gateway does)."""
    return await (adapter.open_stream(c) if c.request.get("stream") else adapter.complete(c))


def complete(c: Call, adapter: MockAdapter | None = None) -> Completion:
    async def go() -> Completion:
        result = await send(adapter or MockAdapter(PROVIDER, None), c)
        assert isinstance(result, Completion)
        return result

    return asyncio.run(go())


def stream_all(c: Call, adapter: MockAdapter | None = None) -> tuple[MockStream, list[Chunk]]:
    async def go() -> tuple[MockStream, list[Chunk]]:
        result = await send(adapter or MockAdapter(PROVIDER, None), c)
        assert isinstance(result, MockStream)
        return result, [chunk async for chunk in result]

    return asyncio.run(go())


def error_of(c: Call) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        complete(c) if not c.request.get("stream") else stream_all(c)
    return info.value


@pytest.fixture(autouse=True)
def no_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LATENCY_ENV, raising=False)


def test_reply_echoes_the_last_user_message() -> None:
    result = complete(call("hello world"))
    assert result.message == {"role": "assistant", "content": "echo: hello world"}
    assert result.finish_reason == "stop"
    assert result.model == "mock-echo-1"


def test_image_parts_are_mentioned() -> None:
    parts = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
    ]
    assert complete(call(parts)).message["content"] == "echo: what is this [image]"


def test_same_request_twice_gives_identical_output() -> None:
    for c in (call("same"), call("tool please", tools=TOOLS)):
        assert complete(c) == complete(c)
        assert stream_all(streamed(c))[1] == stream_all(streamed(c))[1]


def test_different_requests_give_different_tool_call_ids() -> None:
    a = complete(call("one", tools=TOOLS)).message["tool_calls"][0]["id"]
    b = complete(call("two", tools=TOOLS)).message["tool_calls"][0]["id"]
    assert a != b


def test_tool_call_arguments_fill_the_required_properties() -> None:
    result = complete(call("book it", tools=TOOLS))
    assert result.finish_reason == "tool_calls"
    assert result.message["content"] is None
    (tc,) = result.message["tool_calls"]
    assert tc["type"] == "function" and tc["function"]["name"] == "book_flight"
    assert json.loads(tc["function"]["arguments"]) == {
        "origin": "example",
        "seats": 0,
        "price": 0,
        "window": False,
        "cabin": "economy",
        "stops": [],
        "passenger": {"name": "example"},
    }


def test_tool_choice_names_the_tool_or_turns_calls_off() -> None:
    named = complete(
        call("x", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "other"}})
    )
    assert named.message["tool_calls"][0]["function"] == {"name": "other", "arguments": "{}"}
    off = complete(call("x", tools=TOOLS, tool_choice="none"))
    assert off.finish_reason == "stop" and "tool_calls" not in off.message


def test_no_tool_call_once_the_tool_answered() -> None:
    c = call("x", tools=TOOLS)
    c.request["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "other", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    result = complete(c)
    assert result.finish_reason == "stop"
    assert result.message["content"] == "echo: x"


def test_json_object_mode_replies_json() -> None:
    result = complete(call("hi there", response_format={"type": "json_object"}))
    assert json.loads(result.message["content"]) == {"echo": "echo: hi there"}


def test_json_schema_mode_satisfies_the_required_properties() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["title", "score", "tags"],
        "additionalProperties": False,
    }
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "review", "schema": schema, "strict": True},
    }
    result = complete(call("review", response_format=fmt))
    assert json.loads(result.message["content"]) == {
        "title": "example",
        "score": 0,
        "tags": ["example"],
    }


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    result = complete(call("a rather long message that will not fit", max_tokens=3))
    assert result.finish_reason == "length"
    assert result.message["content"] == "echo: a rath"  # 3 tokens x 4 characters
    assert result.usage is not None and result.usage.output_tokens == 3
    assert complete(call("short", max_completion_tokens=100)).finish_reason == "stop"


def test_usage_is_estimated_from_the_request_and_reply() -> None:
    c = call("12345678")  # 8 chars -> 2 tokens, + 4 for the message
    c.request["messages"].insert(0, {"role": "system", "content": "abc"})  # 1 + 4
    result = complete(c)
    assert result.usage is not None
    assert result.usage.input_tokens == 2 + 4 + 1 + 4
    assert result.usage.output_tokens == 4  # "echo: 12345678" is 14 chars


def test_stream_concatenates_to_the_completion() -> None:
    c = call("one two three four")
    stream, chunks = stream_all(streamed(c))
    assert chunks[0].content is False and chunks[0].choices[0]["delta"]["role"] == "assistant"
    content = [ch for ch in chunks if ch.content]
    assert len(content) == 5
    text = "".join(ch.choices[0]["delta"]["content"] for ch in content)
    assert text == complete(c).message["content"]
    finals = [ch for ch in chunks if ch.choices and ch.choices[0]["finish_reason"]]
    assert [ch.choices[0]["finish_reason"] for ch in finals] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == complete(c).usage
    assert stream.usage == complete(c).usage
    assert stream.model == "mock-echo-1"


def test_streamed_tool_call_arguments_match_the_completion() -> None:
    c = call("book", tools=TOOLS)
    _stream, chunks = stream_all(streamed(c))
    deltas = [tc for ch in chunks if ch.content for tc in ch.choices[0]["delta"]["tool_calls"]]
    assert deltas[0]["function"] == {"name": "book_flight", "arguments": ""}
    args = "".join(d["function"]["arguments"] for d in deltas)
    assert args == complete(c).message["tool_calls"][0]["function"]["arguments"]
    assert [
        ch.choices[0]["finish_reason"]
        for ch in chunks
        if ch.choices and ch.choices[0]["finish_reason"]
    ] == ["tool_calls"]


@pytest.mark.parametrize(
    ("directive", "error_class", "status"),
    [
        ("mock:error 429", "rate_limited", 429),
        ("mock:error 503", "server_error", 503),
        ("mock:error 529", "overloaded", 529),
        ("mock:error 500", "server_error", 500),
        ("mock:error context_length", "context_length", 400),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_error_directives_raise_before_anything_is_returned(
    directive: str, error_class: str, status: int, stream: bool
) -> None:
    async def go() -> UpstreamError:
        with pytest.raises(UpstreamError) as info:
            await send(MockAdapter(PROVIDER, None), call(directive, stream=stream))
        return info.value

    err = asyncio.run(go())
    assert err.error_class == error_class
    assert err.status == status


def test_unknown_directive_is_a_bad_request() -> None:
    assert error_of(call("mock:explode")).error_class == "bad_request"


def test_timeout_directive_never_answers() -> None:
    async def go() -> None:
        await asyncio.wait_for(send(MockAdapter(PROVIDER, None), call("mock:timeout")), 0.2)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(go())


def test_slow_directive_waits_then_answers() -> None:
    start = time.monotonic()
    result = complete(call("mock:slow 150"))
    assert time.monotonic() - start >= 0.15
    assert result.message["content"] == "echo: mock:slow 150"


def test_drop_directive_breaks_a_stream_after_content() -> None:
    err = error_of(call("mock:drop", stream=True))
    assert (err.error_class, err.code) == ("server_error", "stream_broken")


def test_latency_env_delays_the_completion_and_the_first_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LATENCY_ENV, "200")
    adapter = MockAdapter(PROVIDER, None)
    monkeypatch.delenv(LATENCY_ENV)  # read once, in the constructor
    start = time.monotonic()
    complete(call(), adapter)
    assert 0.2 <= time.monotonic() - start < 5
    start = time.monotonic()
    stream_all(call(stream=True), adapter)
    assert 0.2 <= time.monotonic() - start < 5


def test_no_latency_by_default() -> None:
    start = time.monotonic()
    complete(call())
    assert time.monotonic() - start < 0.15


def test_bad_latency_env_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LATENCY_ENV, "fast")
    with pytest.raises(ValueError, match=LATENCY_ENV):
        MockAdapter(PROVIDER, None)


def test_pace_directive_spreads_a_stream_over_time() -> None:
    async def go() -> list[tuple[float, Chunk]]:
        stream = await send(
            MockAdapter(PROVIDER, None), call("mock:pace 60 one two three four", stream=True)
        )
        assert isinstance(stream, MockStream)
        t0 = time.monotonic()
        return [(time.monotonic() - t0, c) async for c in stream]

    timed = asyncio.run(go())
    content = [(t, c) for t, c in timed if c.content]
    text = "".join(c.choices[0]["delta"]["content"] for _, c in content)
    assert text == "echo: mock:pace 60 one two three four"
    # 7 words, one every 60 ms after the first: the stream lasts about 6 x 60 ms
    assert content[0][0] < 0.05 and 0.33 <= content[-1][0] < 2


def test_pace_directive_delays_a_completion_as_long_as_the_stream_would_last() -> None:
    start = time.monotonic()
    result = complete(call("mock:pace 30 a b c"))
    assert time.monotonic() - start >= 0.15
    assert result.message["content"] == "echo: mock:pace 30 a b c"
