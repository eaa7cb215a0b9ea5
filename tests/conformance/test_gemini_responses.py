"""Gemini answers from Google's documented examples (tests/conformance/fixtures/gemini/, each
with its `_source`), validated against google-genai's `GenerateContentResponse`, then fed
through GeminiAdapter (non-streamed and streamed, in-memory transport) to check the
OpenAI-shaped answer the client gets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import types

from runtime.adapters import Call
from runtime.adapters.base import Chunk, Completion, Usage
from runtime.adapters.gemini import GeminiAdapter
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport, sse
from runtime.errors import UpstreamError
from tests.conformance.matrix import MODEL, body, provider_config

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
SIGNATURE = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIz"  # function_call.json
PROVIDER = provider_config("gemini", "http://gemini.test/v1beta", 2.0)


def fixture(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    assert doc.pop("_source")
    return doc


def events(name: str) -> list[dict[str, Any]]:
    doc = fixture(name)
    return list(doc["events"]) if "events" in doc else [doc]


def adapter(parts: Any) -> GeminiAdapter:
    def handler(_req: MockRequest) -> MockResponse:
        return MockResponse(200, parts)

    return GeminiAdapter(PROVIDER, MockTransport(handler))


def complete(doc: dict[str, Any]) -> Completion:
    call = Call(body(), MODEL, {"api_key": "k"}, "req_fixture")
    return asyncio.run(adapter(orjson.dumps(doc)).complete(call))


def stream(docs: list[dict[str, Any]]) -> tuple[list[Chunk], Usage | None]:
    async def go() -> tuple[list[Chunk], Usage | None]:
        call = Call(body(stream=True), MODEL, {"api_key": "k"}, "req_fixture")
        result = await adapter(sse(*docs)).open_stream(call)
        chunks = []
        async for chunk in result:
            assert isinstance(chunk, Chunk)
            chunks.append(chunk)
        return chunks, result.usage

    return asyncio.run(go())


def joined(chunks: list[Chunk], key: str) -> str:
    return "".join(str(c.choices[0]["delta"].get(key) or "") for c in chunks if c.choices)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_fixtures_are_sdk_responses_with_a_source(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert "ai.google.dev" in raw["_source"] or "google.genai.types" in raw["_source"]
    for event in events(path.stem):
        types.GenerateContentResponse.model_validate_json(orjson.dumps(event))


def test_text() -> None:
    result = complete(fixture("text"))

    assert result.message == {
        "role": "assistant",
        "content": "AI learns patterns from data to make predictions or decisions.",
    }
    assert result.finish_reason == "stop"
    assert result.model == "gemini-2.0-flash"
    assert result.usage == Usage(8, 12)

    chunks, usage = stream(events("text"))
    assert joined(chunks, "content") == result.message["content"]
    assert chunks[-1].choices[0]["finish_reason"] == "stop"
    assert usage == Usage(8, 12)


def test_function_call_keeps_ids_and_signature() -> None:
    result = complete(fixture("function_call"))

    assert result.finish_reason == "tool_calls"
    assert result.message["content"] is None
    assert result.message["tool_calls"] == [
        {
            "id": "8f2b1a7c",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            "extra_content": {"google": {"thought_signature": SIGNATURE}},
        },
        {
            "id": "3d9e4f20",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"London"}'},
        },
    ]
    assert result.usage == Usage(74, 168, reasoning_tokens=138)

    chunks, _ = stream(events("function_call"))
    calls = [tc for c in chunks for tc in c.choices[0]["delta"].get("tool_calls", [])]
    assert [(tc["index"], tc["id"]) for tc in calls] == [(0, "8f2b1a7c"), (1, "3d9e4f20")]
    assert chunks[-1].choices[0]["finish_reason"] == "tool_calls"


def test_thoughts_are_reasoning_content() -> None:
    result = complete(fixture("thoughts"))

    assert result.message == {
        "role": "assistant",
        "content": "9.9 is larger than 9.11.",
        "reasoning_content": "**Comparing the numbers**\n\n"
        "I compare the decimal parts: 0.9 is greater than 0.11.",
    }
    assert result.usage == Usage(11, 520, reasoning_tokens=511)


def test_cached_and_tool_use_tokens() -> None:
    result = complete(fixture("cached_usage"))

    assert result.usage == Usage(
        input_tokens=696_339,
        output_tokens=254,
        cached_input_tokens=696_190,
        reasoning_tokens=40,
    )


def test_streamed_sequence() -> None:
    chunks, usage = stream(events("stream"))

    assert chunks[0].choices[0]["delta"] == {"role": "assistant", "content": ""}
    thinking = [c for c in chunks if c.reasoning]
    assert [c.content for c in thinking] == [False]
    assert joined(chunks, "reasoning_content") == "Thinking about the sky."
    assert joined(chunks, "content") == "The sky is blue because of Rayleigh scattering."
    assert chunks[-1].choices[0]["finish_reason"] == "stop"
    assert usage == Usage(6, 21, reasoning_tokens=10)
    assert chunks[-1].usage == usage


def test_malformed_function_call_falls_back() -> None:
    with pytest.raises(UpstreamError) as info:
        complete(fixture("malformed_function_call"))
    assert (info.value.error_class, info.value.code) == ("server_error", "upstream_malformed")

    with pytest.raises(UpstreamError) as info:
        stream(events("malformed_function_call"))
    assert info.value.code == "upstream_malformed"


def test_safety_stop_is_content_filter() -> None:
    result = complete(fixture("safety"))

    assert result.finish_reason == "content_filter"
    assert result.message == {"role": "assistant", "content": ""}

    chunks, _ = stream(events("safety"))
    assert chunks[-1].choices[0]["finish_reason"] == "content_filter"
    assert not any(c.content for c in chunks)


def test_blocked_prompt_is_a_bad_request() -> None:
    for run in (
        lambda: complete(fixture("prompt_blocked")),
        lambda: stream(events("prompt_blocked")),
    ):
        with pytest.raises(UpstreamError) as info:
            run()
        assert (info.value.error_class, info.value.code) == ("bad_request", "prompt_blocked")
