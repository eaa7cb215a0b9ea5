"""MockAdapter: offline, deterministic answers shaped like OpenAI's, plus dev directives."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from dataclasses import replace
from typing import Any, Literal

import jsonschema
import pydantic
import pytest
from openai.lib._pydantic import to_strict_json_schema

from runtime.adapters.base import Call, Chunk, Completion
from runtime.adapters.mock import LATENCY_ENV, MockAdapter, MockStream
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError, from_upstream

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


def test_json_object_mode_replies_a_json_object() -> None:
    result = complete(call("hi there in JSON", response_format={"type": "json_object"}))
    assert json.loads(result.message["content"]) == {"reply": "echo: hi there in JSON"}


# instructor's JSON mode (instructor/mode.py, Mode.JSON) puts the model's schema in a system
# message in these words, then asks for `response_format: {"type": "json_object"}`.
INSTRUCTOR_SYSTEM = (
    "As a genius expert, your task is to understand the content and provide the parsed"
    " objects in json that match the following json_schema:\n\n{schema}\n\nMake sure to"
    " return an instance of the JSON, not the schema itself"
)


def test_json_object_mode_answers_the_schema_written_in_the_messages() -> None:
    schema = {
        "properties": {
            "name": {"title": "Name", "type": "string"},
            "age": {"title": "Age", "type": "integer", "minimum": 18},
        },
        "required": ["name", "age"],
        "title": "User",
        "type": "object",
    }
    c = call("Jason is 25", response_format={"type": "json_object"})
    system = INSTRUCTOR_SYSTEM.format(schema=json.dumps(schema, indent=2))
    c.request["messages"].insert(0, {"role": "system", "content": system})
    value = json.loads(complete(c).message["content"])
    jsonschema.validate(value, schema)
    assert value == {"name": "example", "age": 18}


def test_a_json_answer_is_never_cut_by_max_tokens() -> None:
    fmt = {"type": "json_object"}
    result = complete(call("a message long enough to be cut", response_format=fmt, max_tokens=2))
    assert json.loads(result.message["content"]) == {
        "reply": "echo: a message long enough to be cut"
    }
    assert result.finish_reason == "stop"


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


class _Line(pydantic.BaseModel):
    sku: str = pydantic.Field(min_length=12, max_length=12)
    quantity: int = pydantic.Field(ge=1, le=99)
    unit_price: float = pydantic.Field(gt=0)


class _Party(pydantic.BaseModel):
    name: str
    email: str | None = None
    kind: Literal["person", "company"]


class _Invoice(pydantic.BaseModel):
    number: str
    issued: datetime.date
    seller: _Party
    buyer: _Party
    lines: list[_Line] = pydantic.Field(min_length=2)
    status: Literal["draft", "sent", "paid"] = "draft"
    notes: list[str] | None = None
    currency: Literal["EUR"]


SCHEMAS: dict[str, dict[str, Any]] = {
    # The schema the openai SDK sends for `chat.completions.parse(response_format=_Invoice)`
    # (openai.lib._pydantic.to_strict_json_schema): every property required, $defs/$ref,
    # anyOf with null, enums, a const, bounds.
    "openai-sdk-strict-pydantic": to_strict_json_schema(_Invoice),
    "pydantic-plain": _Invoice.model_json_schema(),
    "enums-types-arrays": {
        "type": "object",
        "properties": {
            "level": {"enum": ["low", "mid", "high"]},
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 3},
            "tags": {
                "type": "array",
                "items": {"type": "string", "enum": ["a", "b", "c"]},
                "minItems": 2,
                "uniqueItems": True,
            },
            "ids": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 3,
                "uniqueItems": True,
            },
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "step": {"type": "integer", "minimum": 7, "multipleOf": 5},
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "maybe": {"type": ["null", "string"], "minLength": 3},
        },
        "required": ["level", "flags", "tags", "ids", "ratio", "step", "when", "id", "maybe"],
        "additionalProperties": False,
    },
    "nested-ref-anyof-allof": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            },
            "named": {
                "type": "object",
                "properties": {"label": {"type": "string", "minLength": 10}},
                "required": ["label"],
            },
        },
        "type": "object",
        "properties": {
            "origin": {"$ref": "#/$defs/point"},
            "path": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 2},
            "target": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/point"}]},
            "tagged": {"allOf": [{"$ref": "#/$defs/point"}, {"$ref": "#/$defs/named"}]},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"const": 3}]},
        },
        "required": ["origin", "path", "target", "tagged", "pair"],
    },
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_answers_are_valid_against_the_schema(name: str, stream: bool) -> None:
    schema = SCHEMAS[name]
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}
    c = call("extract it", response_format=fmt, stream=stream)
    if stream:
        _s, chunks = stream_all(c)
        content = "".join(ch.choices[0]["delta"].get("content", "") for ch in chunks if ch.content)
    else:
        content = complete(c).message["content"]
    value = json.loads(content)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert list(validator.iter_errors(value)) == []
    assert "echo" not in value


def test_tool_call_arguments_are_valid_against_a_pydantic_schema() -> None:
    tool = {
        "type": "function",
        "function": {"name": "file", "parameters": SCHEMAS["pydantic-plain"]},
    }
    (tc,) = complete(call("file it", tools=[tool])).message["tool_calls"]
    jsonschema.validate(json.loads(tc["function"]["arguments"]), SCHEMAS["pydantic-plain"])


def test_n_gives_n_choices_each_with_its_own_index() -> None:
    one = complete(call("hello"))
    three = complete(call("hello", n=3))
    choices = three.extra["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert [c["message"]["content"] for c in choices] == ["echo: hello"] * 3
    assert [c["finish_reason"] for c in choices] == ["stop"] * 3
    assert three.message == choices[0]["message"]
    assert one.usage is not None and three.usage is not None
    assert three.usage.output_tokens == 3 * one.usage.output_tokens
    assert three.usage.input_tokens == one.usage.input_tokens
    assert "choices" not in one.extra  # one choice: the gateway renders it from `message`


def test_n_tool_calls_get_their_own_ids() -> None:
    calls = complete(call("book", tools=TOOLS, n=2)).extra["choices"]
    ids = [c["message"]["tool_calls"][0]["id"] for c in calls]
    assert len(set(ids)) == 2


def test_a_streamed_n_sends_every_choice_by_index() -> None:
    stream, chunks = stream_all(call("one two three", n=2, stream=True))
    assert all(len(ch.choices) == 1 for ch in chunks[:-1])
    for index in (0, 1):
        mine = [ch.choices[0] for ch in chunks if ch.choices and ch.choices[0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["delta"].get("content", "") for c in mine)
        assert text == "echo: one two three"
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["stop"]
    assert stream.usage == complete(call("one two three", n=2)).usage


def test_error_texts_name_the_provider_once() -> None:
    err = error_of(call("mock:error 429"))
    assert err.message == "injected HTTP 429"
    assert from_upstream(err, "mock").message == "mock: injected HTTP 429"
    assert error_of(call("mock:drop", stream=True)).message == "stream dropped"
