"""Anthropic answers taken from its documented examples (tests/conformance/fixtures/anthropic/,
each naming its source), validated against the official SDK response types, then fed through
the adapter (non-streamed and streamed) to check the OpenAI shape the client gets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.base import Call, Chunk, Completion, Usage
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport, sse
from tests.conformance.matrix import MODEL, provider_config

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
MESSAGES = sorted(p.name for p in FIXTURES.glob("message_*.json"))
STREAMS = sorted(p.name for p in FIXTURES.glob("stream_*.json"))
PROVIDER = provider_config("anthropic", "https://anthropic.test", 5.0, MODEL)
EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
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


def call(stream: bool = False) -> Call:
    request: dict[str, Any] = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
    return Call({**request, "stream": stream}, MODEL, {"api_key": "k"}, "req")


def complete(doc: dict[str, Any]) -> Completion:
    def handler(request: MockRequest) -> MockResponse:
        return MockResponse(200, orjson.dumps(doc))

    return asyncio.run(AnthropicAdapter(PROVIDER, MockTransport(handler)).complete(call()))


def stream(events: list[dict[str, Any]]) -> tuple[list[Chunk], Usage | None]:
    def handler(request: MockRequest) -> MockResponse:
        return MockResponse(200, sse(*events))

    async def go() -> tuple[list[Chunk], Usage | None]:
        s = await AnthropicAdapter(PROVIDER, MockTransport(handler)).open_stream(call(True))
        chunks = [c async for c in s]
        await s.aclose()
        return chunks, s.usage

    return asyncio.run(go())


def deltas(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [c.choices[0]["delta"] for c in chunks if c.choices]


# --- the fixtures are what the SDK declares -------------------------------------------------


@pytest.mark.parametrize("name", MESSAGES)
def test_message_fixture_is_an_sdk_message(name: str) -> None:
    no_extras(Message.model_validate(load(name)), name)


@pytest.mark.parametrize("name", STREAMS)
def test_stream_fixture_events_are_sdk_events(name: str) -> None:
    events = load(name)["events"]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    for i, event in enumerate(events):
        if event["type"] == "ping":
            continue  # a keep-alive the SDK skips before parsing (anthropic/_streaming.py)
        no_extras(EVENT.validate_python(event), f"{name}[{i}]")


def test_a_fixture_with_an_undeclared_key_is_refused() -> None:
    doc = load("message_text.json")
    doc["content"][0]["bogus"] = 1
    with pytest.raises(AssertionError):
        no_extras(Message.model_validate(doc), "spoiled")


# --- through the adapter, non-streamed ------------------------------------------------------


def test_text_answer() -> None:
    done = complete(load("message_text.json"))
    assert done.message == {"role": "assistant", "content": "Hi! My name is Claude."}
    assert done.finish_reason == "stop" and done.model == "claude-sonnet-4-5-20250929"
    assert done.usage == Usage(2095, 503)


def test_tool_use_answer() -> None:
    done = complete(load("message_tool_use.json"))
    assert done.finish_reason == "tool_calls"
    assert done.message["content"] == "I'll check the current weather in San Francisco for you."
    [tc] = done.message["tool_calls"]
    assert tc["id"] == "toolu_01A09q90qw90lq917835lq9" and tc["type"] == "function"
    assert tc["function"]["name"] == "get_weather"
    assert json.loads(tc["function"]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }


def test_thinking_answer_carries_reasoning_and_signed_blocks() -> None:
    doc = load("message_thinking.json")
    done = complete(doc)
    assert done.message["content"] == "Based on my analysis..."
    assert done.message["reasoning_content"] == "Let me analyze this step by step..."
    assert done.message["thinking_blocks"] == [doc["content"][0]]
    assert done.usage is not None and done.usage.reasoning_tokens == 1200


def test_redacted_thinking_is_kept_for_the_next_turn() -> None:
    doc = load("message_redacted_thinking.json")
    done = complete(doc)
    assert done.message["thinking_blocks"] == doc["content"][:2]
    assert done.message["reasoning_content"] == "Let me analyze this step by step..."


def test_cache_usage_is_split_by_kind() -> None:
    done = complete(load("message_cache_usage.json"))
    assert done.usage == Usage(
        21 + 188_086 + 2048,
        393,
        cached_input_tokens=188_086,
        cache_write_tokens=512,
        cache_write_1h_tokens=1536,
    )


def test_refusal_is_content_filter() -> None:
    assert complete(load("message_refusal.json")).finish_reason == "content_filter"


# --- through the adapter, streamed ----------------------------------------------------------


def test_streamed_thinking_then_text() -> None:
    events = load("stream_thinking.json")["events"]
    chunks, usage = stream(events)
    thinking = "".join(d.get("reasoning_content") or "" for d in deltas(chunks))
    assert thinking == events[2]["delta"]["thinking"] + events[3]["delta"]["thinking"]
    [blocks] = [d["thinking_blocks"] for d in deltas(chunks) if "thinking_blocks" in d]
    assert blocks == [
        {"type": "thinking", "thinking": thinking, "signature": events[4]["delta"]["signature"]}
    ]
    assert all(c.reasoning and not c.content for c in chunks if "thinking_blocks" in str(c))
    first_content = next(i for i, c in enumerate(chunks) if c.content)
    assert all(not c.reasoning for c in chunks[first_content:])
    assert "".join(d.get("content") or "" for d in deltas(chunks)).endswith("**21**.")
    assert [c.choices[0]["finish_reason"] for c in chunks if c.choices][-1] == "stop"
    assert usage == Usage(48, 132, reasoning_tokens=110)


def test_streamed_tool_use_builds_the_arguments() -> None:
    chunks, usage = stream(load("stream_tool_use.json")["events"])
    calls = [tc for d in deltas(chunks) for tc in d.get("tool_calls") or ()]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["function"]["name"] == "get_weather"
    assert {tc["index"] for tc in calls} == {0}
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert [c.choices[0]["finish_reason"] for c in chunks if c.choices][-1] == "tool_calls"
    assert usage == Usage(472, 89)


def test_streamed_cache_usage_merges_start_and_delta() -> None:
    chunks, usage = stream(load("stream_cache_usage.json")["events"])
    expected = Usage(
        21 + 188_086 + 2048,
        393,
        cached_input_tokens=188_086,
        cache_write_tokens=512,
        cache_write_1h_tokens=1536,
    )
    assert usage == expected
    assert [c.usage for c in chunks if c.usage is not None] == [expected]
