"""Passthrough to the providers' own APIs (OpenAI Responses, Anthropic Messages) through the
in-memory transport: the body sent, the usage read, every stream event classified, the
terminators, error events, failed responses and streams cut short.

The answers are the providers' documented examples (tests/conformance/fixtures/, each naming
its source), validated against the official SDK types before the adapter reads them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic.types
import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.base import Call, Completion, NativeEvent, NativeRequest, Usage
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport
from runtime.adapters.openai import OpenAIAdapter
from runtime.adapters.transport_base import ConnectionLost
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError

FIXTURES = Path(__file__).parent.parent / "conformance" / "fixtures"
MODEL = ModelConfig("m", "upstream-m", 100_000, None, frozenset({"streaming"}), None)
OPENAI_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
ANTHROPIC_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)

RESPONSES_BODY: dict[str, Any] = {
    "model": "gpt-fast",
    "instructions": "be brief",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
    "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
    "reasoning": {"effort": "low"},
    "max_output_tokens": 300,
    "store": False,
    "stream": False,
}
MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-fast",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "hi"}],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "metadata": {"user_id": "u1"},
}


def provider(adapter: str) -> ProviderConfig:
    return ProviderConfig(
        adapter, adapter, "https://upstream.test/v1", {"api_key": "K"}, False, 1.0, 1.0, {}
    )


def anthropic_provider() -> ProviderConfig:
    return ProviderConfig(
        "anthropic", "anthropic", "https://upstream.test", {"api_key": "K"}, False, 1.0, 1.0, {}
    )


def call(api: str, body: dict[str, Any]) -> Call:
    return Call({}, MODEL, {"api_key": "sk-1"}, "req_1", native=NativeRequest(api, body))


def fixture(kind: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / kind / name).read_text())
    assert doc.pop("_source", "").startswith("https://"), f"{name} names no source"
    return doc


def no_extras(value: Any, where: str = "") -> None:
    """Fail when a validated SDK model holds keys its type does not declare."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: undeclared {sorted(value.model_extra or {})}"
        for name in type(value).model_fields:
            no_extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            no_extras(item, f"{where}[{i}]")


def openai_events(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = fixture("openai", name)["events"]
    for e in events:
        no_extras(OPENAI_EVENT.validate_python(e), e["type"])
    return events


def anthropic_events(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = fixture("anthropic", name)["events"]
    for e in events:
        if e["type"] != "ping":  # documented, but not one of the SDK's stream event types
            ANTHROPIC_EVENT.validate_python(e)
    return events


def named_sse(events: list[dict[str, Any]]) -> list[bytes]:
    """SSE parts as both providers send them: `event: <type>` then `data: <json>`."""
    return [
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    ]


def complete(adapter: Any, c: Call) -> Completion:
    result: Completion = asyncio.run(adapter.complete_native(c))
    return result


def stream(adapter: Any, c: Call) -> tuple[Any, list[NativeEvent]]:
    async def go() -> tuple[Any, list[NativeEvent]]:
        s = await adapter.open_native_stream(c)
        return s, [e async for e in s]

    return asyncio.run(go())


def stream_error(adapter: Any, c: Call) -> tuple[UpstreamError, list[NativeEvent]]:
    seen: list[NativeEvent] = []

    async def go() -> None:
        s = await adapter.open_native_stream(c)
        async for e in s:
            seen.append(e)

    with pytest.raises(UpstreamError) as info:
        asyncio.run(go())
    return info.value, seen


def answering(status: int, body: bytes | list[bytes], sent: list[MockRequest]) -> MockTransport:
    def handler(request: MockRequest) -> MockResponse:
        sent.append(request)
        return MockResponse(status, body)

    return MockTransport(handler)


# --- which adapters pass through -------------------------------------------------------------


def test_only_openai_itself_passes_responses_through() -> None:
    noop = MockTransport(lambda r: MockResponse())
    assert OpenAIAdapter(provider("openai"), noop).native_apis == frozenset({"responses"})
    assert OpenAIAdapter(provider("openai-compatible"), noop).native_apis == frozenset()
    assert AnthropicAdapter(anthropic_provider(), noop).native_apis == frozenset({"messages"})


# --- OpenAI Responses, not streamed ----------------------------------------------------------


def test_responses_body_goes_upstream_with_only_the_model_replaced() -> None:
    doc = fixture("openai", "responses_text.json")
    no_extras(Response.model_validate(doc))
    sent: list[MockRequest] = []
    body = json.loads(json.dumps(RESPONSES_BODY))
    result = complete(
        OpenAIAdapter(provider("openai"), answering(200, orjson.dumps(doc), sent)),
        call("responses", body),
    )
    assert body == RESPONSES_BODY  # the client's body is not mutated
    (request,) = sent
    assert request.url == "https://upstream.test/v1/responses"
    assert request.headers["authorization"] == "Bearer sk-1"
    expected = {k: v for k, v in RESPONSES_BODY.items() if k != "stream"}
    assert request.json() == {**expected, "model": "upstream-m"}
    assert result.native == doc
    assert result.message == {}
    assert (result.usage, result.model, result.finish_reason) == (
        Usage(36, 87),
        "gpt-4.1-2025-04-14",
        "stop",
    )


@pytest.mark.parametrize(
    ("name", "usage", "finish"),
    [
        ("responses_usage_details.json", Usage(2006, 300, 1920, reasoning_tokens=192), "stop"),
        ("responses_function_call.json", Usage(291, 23), "tool_calls"),
        ("responses_incomplete_reasoning.json", Usage(75, 300, reasoning_tokens=300), "length"),
    ],
)
def test_responses_usage_and_finish_are_read_from_the_answer(
    name: str, usage: Usage, finish: str
) -> None:
    doc = fixture("openai", name)
    no_extras(Response.model_validate(doc))
    adapter = OpenAIAdapter(provider("openai"), answering(200, orjson.dumps(doc), []))
    result = complete(adapter, call("responses", RESPONSES_BODY))
    assert (result.usage, result.finish_reason, result.native) == (usage, finish, doc)


def test_a_failed_response_raises_its_classified_error() -> None:
    doc = fixture("openai", "responses_text.json")
    doc.update(status="failed", output=[], usage=None)
    doc["error"] = {"code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-4.1"}
    no_extras(Response.model_validate(doc))
    adapter = OpenAIAdapter(provider("openai"), answering(200, orjson.dumps(doc), []))
    with pytest.raises(UpstreamError) as info:
        complete(adapter, call("responses", RESPONSES_BODY))
    assert (info.value.error_class, info.value.code, info.value.message) == (
        "rate_limited",
        "response_failed",
        "Rate limit reached for gpt-4.1",
    )


@pytest.mark.parametrize(
    "answer", [b'{"object": "chat.completion", "choices": []}', b"[]", b'{"id": "resp_1"}']
)
def test_an_answer_that_is_not_a_response_is_malformed(answer: bytes) -> None:
    adapter = OpenAIAdapter(provider("openai"), answering(200, answer, []))
    with pytest.raises(UpstreamError) as info:
        complete(adapter, call("responses", RESPONSES_BODY))
    assert (info.value.error_class, info.value.code) == ("server_error", "upstream_malformed")


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (
            429,
            {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
            "rate_limited",
        ),
        (
            400,
            {
                "message": "Your input exceeds the context window of this model.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            "context_length",
        ),
        (500, {"message": "boom", "type": "server_error", "code": None}, "server_error"),
        (
            401,
            {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"},
            "auth",
        ),
    ],
)
def test_responses_error_statuses_are_classified_as_on_the_chat_path(
    status: int, error: dict[str, Any], cls: str
) -> None:
    adapter = OpenAIAdapter(
        provider("openai"), answering(status, orjson.dumps({"error": error}), [])
    )
    with pytest.raises(UpstreamError) as info:
        complete(adapter, call("responses", RESPONSES_BODY))
    assert (info.value.error_class, info.value.status) == (cls, status)


# --- OpenAI Responses, streamed --------------------------------------------------------------


def test_responses_stream_relays_every_event_and_commits_at_the_first_text() -> None:
    events = openai_events("responses_stream_text.json")
    sent: list[MockRequest] = []
    adapter = OpenAIAdapter(provider("openai"), answering(200, named_sse(events), sent))
    s, out = stream(adapter, call("responses", RESPONSES_BODY))
    assert sent[0].json() == {**RESPONSES_BODY, "model": "upstream-m", "stream": True}
    assert [e.event for e in out] == [e["type"] for e in events]
    assert [e.doc for e in out] == events
    assert [orjson.loads(e.data) for e in out] == events  # the bytes as sent
    first = [e["type"] for e in events].index("response.output_text.delta")
    assert [e.content for e in out] == [i >= first for i in range(len(events))]
    assert not any(e.reasoning for e in out)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert sum(e.chars for e in out) == len("".join(deltas))
    assert [e.usage for e in out if e.usage] == [Usage(37, 11)]
    assert (s.usage, s.model) == (Usage(37, 11), "gpt-4.1-2025-04-14")


def test_responses_stream_commits_at_a_function_call_item() -> None:
    events = openai_events("responses_stream_function_call.json")
    adapter = OpenAIAdapter(provider("openai"), answering(200, named_sse(events), []))
    s, out = stream(adapter, call("responses", RESPONSES_BODY))
    assert [e.content for e in out][:4] == [False, False, True, True]
    assert out[2].doc["item"]["type"] == "function_call"
    args = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert sum(e.chars for e in out) == len(args)
    assert s.usage == Usage(62, 17)


def test_responses_stream_thinking_is_progress_not_content() -> None:
    events = openai_events("responses_stream_reasoning.json")
    adapter = OpenAIAdapter(provider("openai"), answering(200, named_sse(events), []))
    s, out = stream(adapter, call("responses", RESPONSES_BODY))
    kinds = [(e.event, e.content, e.reasoning) for e in out]
    assert kinds[:9] == [
        ("response.created", False, False),
        ("response.in_progress", False, False),
        ("response.output_item.added", False, True),
        ("response.reasoning_summary_part.added", False, True),
        ("response.reasoning_summary_text.delta", False, True),
        ("response.reasoning_summary_text.done", False, True),
        ("response.reasoning_summary_part.done", False, True),
        ("response.output_item.done", False, False),
        ("response.output_item.added", False, False),  # a message item: nothing seen yet
    ]
    assert kinds[10] == ("response.output_text.delta", True, False)
    assert s.usage == Usage(14, 140, reasoning_tokens=128)
    assert s.model == "o4-mini-2025-04-16"


def test_responses_stream_incomplete_is_a_normal_end() -> None:
    events = openai_events("responses_stream_text.json")
    last = json.loads(json.dumps(events[-1]))
    last["type"] = "response.incomplete"
    last["response"].update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    events[-1] = last
    adapter = OpenAIAdapter(provider("openai"), answering(200, named_sse(events), []))
    s, out = stream(adapter, call("responses", RESPONSES_BODY))
    assert out[-1].event == "response.incomplete"
    assert s.usage == Usage(37, 11)


def test_responses_stream_without_a_terminator_is_truncated() -> None:
    events = openai_events("responses_stream_text.json")[:-1]
    adapter = OpenAIAdapter(provider("openai"), answering(200, named_sse(events), []))
    err, seen = stream_error(adapter, call("responses", RESPONSES_BODY))
    assert (err.error_class, err.code) == ("server_error", "stream_truncated")
    assert len(seen) == len(events)


def test_responses_stream_cut_by_the_network_is_stream_broken() -> None:
    events = openai_events("responses_stream_text.json")[:6]
    parts: list[Any] = [*named_sse(events), ConnectionLost("reset", True)]
    adapter = OpenAIAdapter(provider("openai"), MockTransport(lambda r: MockResponse(200, parts)))
    err, seen = stream_error(adapter, call("responses", RESPONSES_BODY))
    assert (err.error_class, err.code, len(seen)) == ("server_error", "stream_broken", 6)


@pytest.mark.parametrize(
    ("code", "message", "cls"),
    [
        ("rate_limit_exceeded", "Rate limit reached", "rate_limited"),
        ("server_error", "The server had an error", "server_error"),
        ("context_length_exceeded", "Your input exceeds the context window", "context_length"),
        (None, "This model's maximum context length is 128000 tokens.", "context_length"),
    ],
)
def test_responses_error_event_raises_its_class(code: str | None, message: str, cls: str) -> None:
    events = openai_events("responses_stream_text.json")[:6]
    error = {"type": "error", "code": code, "message": message, "param": None, "sequence_number": 6}
    no_extras(OPENAI_EVENT.validate_python(error))
    adapter = OpenAIAdapter(provider("openai"), answering(200, named_sse([*events, error]), []))
    err, seen = stream_error(adapter, call("responses", RESPONSES_BODY))
    assert (err.error_class, err.code, err.message) == (cls, "stream_error_event", message)
    assert len(seen) == 6


def test_responses_failed_event_raises_the_response_error() -> None:
    events = openai_events("responses_stream_text.json")
    failed = json.loads(json.dumps(events[-1]))
    failed["type"] = "response.failed"
    failed["response"].update(
        status="failed", usage=None, error={"code": "server_error", "message": "upstream died"}
    )
    no_extras(OPENAI_EVENT.validate_python(failed))
    adapter = OpenAIAdapter(
        provider("openai"), answering(200, named_sse([*events[:3], failed]), [])
    )
    err, _ = stream_error(adapter, call("responses", RESPONSES_BODY))
    assert (err.error_class, err.code, err.message) == (
        "server_error",
        "response_failed",
        "upstream died",
    )


def test_responses_stream_with_a_malformed_event_is_malformed() -> None:
    events = openai_events("responses_stream_text.json")[:2]
    parts = [*named_sse(events), b"event: response.output_text.delta\ndata: {not json\n\n"]
    adapter = OpenAIAdapter(provider("openai"), MockTransport(lambda r: MockResponse(200, parts)))
    err, _ = stream_error(adapter, call("responses", RESPONSES_BODY))
    assert (err.error_class, err.code) == ("server_error", "upstream_malformed")


# --- Anthropic Messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "usage", "finish"),
    [
        ("message_text.json", None, "stop"),
        ("message_thinking.json", Usage(42, 1350, reasoning_tokens=1200), "stop"),
        ("message_tool_use.json", None, "tool_calls"),
        ("message_cache_usage.json", Usage(190155, 393, 188086, 512, 1536), "stop"),
    ],
)
def test_messages_body_goes_upstream_with_only_the_model_replaced(
    name: str, usage: Usage | None, finish: str | None
) -> None:
    doc = fixture("anthropic", name)
    anthropic.types.Message.model_validate(doc)
    sent: list[MockRequest] = []
    body = json.loads(json.dumps(MESSAGES_BODY))
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, orjson.dumps(doc), sent))
    result = complete(adapter, call("messages", body))
    assert body == MESSAGES_BODY
    (request,) = sent
    assert request.url == "https://upstream.test/v1/messages"
    assert (request.headers["x-api-key"], request.headers["anthropic-version"]) == (
        "sk-1",
        "2023-06-01",
    )
    assert request.json() == {**MESSAGES_BODY, "model": "upstream-m"}
    assert (result.native, result.message, result.model) == (doc, {}, doc["model"])
    if usage is not None:
        assert result.usage == usage
    if finish is not None:
        assert result.finish_reason == finish


def test_messages_passthrough_forwards_the_clients_beta_headers() -> None:
    # Beta fields of a Messages body need their `anthropic-beta` header at Anthropic; the
    # frontend forwards it (repeated headers joined), and nothing else of the client's.
    doc = fixture("anthropic", "message_text.json")
    sent: list[MockRequest] = []
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, orjson.dumps(doc), sent))
    beta = Call(
        {},
        MODEL,
        {"api_key": "sk-1"},
        "req_1",
        native=NativeRequest(
            "messages",
            MESSAGES_BODY,
            (("anthropic-beta", "interleaved-thinking-2025-05-14"), ("anthropic-beta", "b2")),
        ),
    )
    complete(adapter, beta)
    complete(adapter, call("messages", MESSAGES_BODY))
    assert sent[0].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,b2"
    assert sent[0].headers["x-api-key"] == "sk-1"
    assert "anthropic-beta" not in sent[1].headers


def test_messages_cache_usage_counts_the_cache_in_the_input() -> None:
    doc = fixture("anthropic", "message_cache_usage.json")
    u = doc["usage"]
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, orjson.dumps(doc), []))
    result = complete(adapter, call("messages", MESSAGES_BODY))
    assert result.usage is not None
    total = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    assert result.usage.input_tokens == total
    assert result.usage.cached_input_tokens == u["cache_read_input_tokens"]


def test_messages_answer_that_is_not_a_message_is_malformed() -> None:
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, b'{"type": "completion"}', []))
    with pytest.raises(UpstreamError) as info:
        complete(adapter, call("messages", MESSAGES_BODY))
    assert info.value.code == "upstream_malformed"


def test_messages_error_status_is_anthropics_class() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    adapter = AnthropicAdapter(anthropic_provider(), answering(529, orjson.dumps(body), []))
    with pytest.raises(UpstreamError) as info:
        complete(adapter, call("messages", MESSAGES_BODY))
    assert (info.value.error_class, info.value.status) == ("overloaded", 529)


def test_messages_stream_tool_use_classified_and_usage_summed() -> None:
    events = anthropic_events("stream_tool_use.json")
    sent: list[MockRequest] = []
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, named_sse(events), sent))
    s, out = stream(adapter, call("messages", MESSAGES_BODY))
    assert sent[0].json() == {**MESSAGES_BODY, "model": "upstream-m", "stream": True}
    assert [e.doc for e in out] == events
    assert [e.event for e in out] == [e["type"] for e in events]
    first = next(i for i, e in enumerate(events) if e.get("delta", {}).get("text"))
    assert [e.content for e in out] == [i >= first for i in range(len(events))]
    texts = [
        e["delta"].get("text") or e["delta"].get("partial_json") or ""
        for e in events
        if e["type"] == "content_block_delta"
    ]
    assert sum(e.chars for e in out) == len("".join(texts))
    assert (s.usage, s.model) == (Usage(472, 89), "claude-sonnet-4-5-20250929")
    assert out[-2].usage == Usage(472, 89)  # message_delta carries the running total


def test_messages_stream_tool_use_block_start_is_content() -> None:
    events = [e for e in anthropic_events("stream_tool_use.json") if e.get("index") != 0]
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, named_sse(events), []))
    _, out = stream(adapter, call("messages", MESSAGES_BODY))
    assert [(e.event, e.content) for e in out][:3] == [
        ("message_start", False),
        ("ping", False),
        ("content_block_start", True),
    ]


def test_messages_stream_thinking_is_progress_not_content() -> None:
    events = anthropic_events("stream_thinking.json")
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, named_sse(events), []))
    _, out = stream(adapter, call("messages", MESSAGES_BODY))
    for e, sent in zip(out, events, strict=True):
        delta = sent.get("delta", {}).get("type")
        if delta in ("thinking_delta", "signature_delta"):
            assert (e.reasoning, e.content) == (True, False), sent
        if sent["type"] == "ping":
            assert not e.content and not e.reasoning
    first_text = next(
        i for i, e in enumerate(events) if e.get("delta", {}).get("type") == "text_delta"
    )
    assert not any(e.content for e in out[:first_text]) and out[first_text].content


def test_messages_stream_error_event_raises_its_class() -> None:
    events = anthropic_events("stream_tool_use.json")[:4]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    adapter = AnthropicAdapter(
        anthropic_provider(), answering(200, named_sse([*events, error]), [])
    )
    err, seen = stream_error(adapter, call("messages", MESSAGES_BODY))
    assert (err.error_class, err.code, len(seen)) == ("overloaded", "stream_error_event", 4)


def test_messages_stream_without_message_stop_is_truncated() -> None:
    events = anthropic_events("stream_tool_use.json")[:-1]
    adapter = AnthropicAdapter(anthropic_provider(), answering(200, named_sse(events), []))
    err, seen = stream_error(adapter, call("messages", MESSAGES_BODY))
    assert (err.error_class, err.code, len(seen)) == (
        "server_error",
        "stream_truncated",
        len(events),
    )
