"""Every adapter through the in-memory transport: the request bytes it sends and how it
parses the answer, without a socket (runtime/adapters/mock_transport.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from runtime.adapters import (
    AnyChunk,
    Call,
    Chunk,
    Completion,
    RelayChunk,
    UpstreamStream,
    Usage,
)
from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.gemini import GeminiAdapter
from runtime.adapters.mock import MockAdapter
from runtime.adapters.mock_transport import (
    MockRequest,
    MockResponse,
    MockTransport,
    Pause,
    sse,
)
from runtime.adapters.openai import OpenAIAdapter
from runtime.adapters.transport_base import ConnectError, ConnectionLost
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError

MODEL = ModelConfig("m", "upstream-m", 100_000, None, frozenset({"streaming"}), None)
BODY = {
    "model": "r",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
}
CALL = Call(BODY, MODEL, {"api_key": "sk-1"}, "req_1")


def provider(adapter: str, base_url: str | None = "https://upstream.test") -> ProviderConfig:
    return ProviderConfig(adapter, adapter, base_url, {"api_key": "K"}, False, 1.0, 1.0, {})


def run_complete(adapter: Any) -> Completion:
    result: Completion = asyncio.run(adapter.complete(CALL))
    return result


def run_stream(adapter: Any) -> tuple[UpstreamStream, list[AnyChunk]]:
    async def go() -> tuple[UpstreamStream, list[AnyChunk]]:
        stream = await adapter.open_stream(CALL)
        return stream, [c async for c in stream]

    return asyncio.run(go())


# --- openai ----------------------------------------------------------------------------------


def test_openai_complete_sends_the_body_with_the_upstream_model() -> None:
    def handler(request: MockRequest) -> MockResponse:
        assert request.url == "https://upstream.test/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-1"
        assert request.json() == {**BODY, "model": "upstream-m"}
        return MockResponse(
            200,
            b'{"model": "upstream-m-1", "choices": [{"message": {"role": "assistant",'
            b' "content": "hey"}, "finish_reason": "stop"}],'
            b' "usage": {"prompt_tokens": 9, "completion_tokens": 1}}',
        )

    transport = MockTransport(handler)
    result = run_complete(OpenAIAdapter(provider("openai"), transport))
    assert (result.message["content"], result.finish_reason) == ("hey", "stop")
    assert (result.usage, result.model) == (Usage(9, 1), "upstream-m-1")
    assert len(transport.requests) == 1


def test_openai_stream_asks_for_usage_and_relays_chunks_verbatim() -> None:
    role = '{"model":"m1","choices":[{"index":0,"delta":{"role":"assistant"}}]}'
    text = '{"model":"m1","choices":[{"index":0,"delta":{"content":"hey"}}]}'
    more = '{"model":"m1","choices":[{"index":0,"delta":{"content":" you"}}]}'
    usage = '{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}'

    def handler(request: MockRequest) -> MockResponse:
        body = request.json()
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        return MockResponse(200, sse(role, text, more, usage, "[DONE]"))

    stream, chunks = run_stream(OpenAIAdapter(provider("openai"), MockTransport(handler)))
    assert all(isinstance(c, RelayChunk) for c in chunks)
    assert [c.data for c in chunks if isinstance(c, RelayChunk)] == [role, text, more, usage]
    assert [c.content for c in chunks] == [False, True, True, False]
    # After the first content chunk, plain chunks are relayed undecoded.
    assert [c.choices is None for c in chunks] == [False, False, True, False]
    assert (stream.usage, stream.model) == (Usage(9, 2), "m1")


def test_openai_error_status_is_classified_with_retry_after() -> None:
    def handler(request: MockRequest) -> MockResponse:
        body = b'{"error": {"message": "slow down", "type": "requests", "code": null}}'
        return MockResponse(429, body, {"Retry-After": "3"})

    with pytest.raises(UpstreamError) as info:
        run_complete(OpenAIAdapter(provider("openai"), MockTransport(handler)))
    err = info.value
    assert (err.error_class, err.status, err.message, err.retry_after) == (
        "rate_limited",
        429,
        "slow down",
        3.0,
    )


def test_openai_stream_cut_short_is_stream_broken() -> None:
    def handler(request: MockRequest) -> MockResponse:
        text = '{"choices":[{"index":0,"delta":{"content":"hey"}}]}'
        return MockResponse(200, [*sse(text), ConnectionLost("reset", True)])

    with pytest.raises(UpstreamError) as info:
        run_stream(OpenAIAdapter(provider("openai"), MockTransport(handler)))
    assert (info.value.error_class, info.value.code) == ("server_error", "stream_broken")


def test_a_silence_longer_than_the_timeout_is_a_timeout() -> None:
    def handler(request: MockRequest) -> MockResponse:
        text = '{"choices":[{"index":0,"delta":{"content":"hey"}}]}'
        return MockResponse(200, [*sse(text), Pause(5.0), *sse("[DONE]")])

    with pytest.raises(UpstreamError) as info:
        run_stream(OpenAIAdapter(provider("openai"), MockTransport(handler)))
    assert (info.value.error_class, info.value.code) == ("timeout", "stream_broken")


def test_a_connect_error_is_classified() -> None:
    def handler(request: MockRequest) -> MockResponse:
        raise ConnectError("cannot connect to upstream.test:443: refused")

    with pytest.raises(UpstreamError) as info:
        run_complete(OpenAIAdapter(provider("openai"), MockTransport(handler)))
    assert info.value.error_class == "connect_error"


def test_the_flush_hook_runs_before_the_stream_waits() -> None:
    text = '{"choices":[{"index":0,"delta":{"content":"a"}}]}'
    flushed: list[int] = []

    async def go() -> list[int]:
        parts = [*sse(text, text), Pause(0.01), *sse(text, "[DONE]")]
        transport = MockTransport(lambda r: MockResponse(200, parts))
        stream = await OpenAIAdapter(provider("openai"), transport).open_stream(CALL)
        seen = 0

        async def hook() -> None:
            flushed.append(seen)

        assert stream.watch_idle(hook)
        async for _ in stream:
            seen += 1
        return flushed

    assert asyncio.run(go()) == [2]  # once, after the two chunks that arrived together


# --- anthropic -------------------------------------------------------------------------------


def test_anthropic_complete_maps_the_request_and_the_answer() -> None:
    def handler(request: MockRequest) -> MockResponse:
        assert request.url == "https://upstream.test/v1/messages"
        assert request.headers["x-api-key"] == "sk-1"
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert request.json() == {
            "model": "upstream-m",
            "max_tokens": 4096,
            "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        }
        return MockResponse(
            200,
            b'{"model": "claude-x", "content": [{"type": "text", "text": "hey"}],'
            b' "stop_reason": "end_turn", "usage": {"input_tokens": 7, "output_tokens": 1}}',
        )

    result = run_complete(AnthropicAdapter(provider("anthropic"), MockTransport(handler)))
    assert result.message == {"role": "assistant", "content": "hey"}
    assert (result.finish_reason, result.usage, result.model) == ("stop", Usage(7, 1), "claude-x")


def test_anthropic_stream_maps_events_to_chunks() -> None:
    start = {"model": "claude-x", "usage": {"input_tokens": 7}}
    block = {"type": "text", "text": ""}
    delta = {"type": "text_delta", "text": "hey"}
    events = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 1},
        },
        {"type": "message_stop"},
    ]

    def handler(request: MockRequest) -> MockResponse:
        assert request.json()["stream"] is True
        return MockResponse(200, sse(*events))

    stream, chunks = run_stream(AnthropicAdapter(provider("anthropic"), MockTransport(handler)))
    assert all(isinstance(c, Chunk) for c in chunks)
    deltas = [c.choices[0]["delta"] for c in chunks if isinstance(c, Chunk) and c.choices]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "hey"}, {}]
    assert (stream.usage, stream.model) == (Usage(7, 1), "claude-x")


# --- gemini ----------------------------------------------------------------------------------


GEMINI_ANSWER = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "hey"}]}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1},
    "modelVersion": "gemini-x",
}


def test_gemini_complete_maps_the_request_and_the_answer() -> None:
    def handler(request: MockRequest) -> MockResponse:
        assert request.url == "https://upstream.test/models/upstream-m:generateContent"
        assert request.headers["x-goog-api-key"] == "sk-1"
        body = request.json()
        assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
        assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
        return MockResponse(200, orjson.dumps(GEMINI_ANSWER))

    result = run_complete(GeminiAdapter(provider("gemini"), MockTransport(handler)))
    assert (result.message["content"], result.finish_reason) == ("hey", "stop")
    assert (result.usage, result.model) == (Usage(5, 1), "gemini-x")


def test_gemini_stream_ends_at_the_final_candidate() -> None:
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "he"}]}}]}

    def handler(request: MockRequest) -> MockResponse:
        assert request.url.endswith("/models/upstream-m:streamGenerateContent?alt=sse")
        return MockResponse(200, sse(first, GEMINI_ANSWER))

    stream, chunks = run_stream(GeminiAdapter(provider("gemini"), MockTransport(handler)))
    texts = [
        c.choices[0]["delta"].get("content")
        for c in chunks
        if isinstance(c, Chunk) and c.choices and c.content
    ]
    assert texts == ["he", "hey"]
    assert (stream.usage, stream.model) == (Usage(5, 1), "gemini-x")


# --- mock ------------------------------------------------------------------------------------


def test_mock_adapter_completes_and_streams_without_a_transport() -> None:
    adapter = MockAdapter(provider("mock", None))
    assert run_complete(adapter).message["content"] == "echo: hi"
    stream, chunks = run_stream(adapter)
    assert not stream.watch_idle(lambda: asyncio.sleep(0))
    assert [c.content for c in chunks][:2] == [False, True]


def test_an_upstream_that_never_answers_is_a_timeout() -> None:
    async def handler(request: MockRequest) -> MockResponse:
        await asyncio.sleep(30)
        return MockResponse(200)

    with pytest.raises(UpstreamError) as info:
        run_complete(OpenAIAdapter(provider("openai"), MockTransport(handler)))
    assert info.value.error_class == "timeout"
