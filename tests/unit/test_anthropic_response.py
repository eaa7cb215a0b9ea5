"""The Anthropic adapter's answers (issue 11): thinking out with its signatures, usage with the
cache parts, every stop reason, and malformed payloads classified (never another exception)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from runtime.adapters.anthropic import STOP_REASONS, AnthropicAdapter, parse_completion
from runtime.adapters.base import Call, Chunk, Completion, Usage
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport, sse
from runtime.config import ModelConfig
from runtime.errors import UpstreamError
from tests.conformance.matrix import provider_config

MODEL = ModelConfig("claude", "claude-up", 200_000, 8192, frozenset({"reasoning"}), None)
PROVIDER = provider_config("anthropic", "https://anthropic.test", 5.0, MODEL)


def message(content: list[Any], usage: Any = None, stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage if usage is not None else {"input_tokens": 3, "output_tokens": 2},
    }


def complete(doc: Any) -> Completion:
    def handler(request: MockRequest) -> MockResponse:
        return MockResponse(200, orjson.dumps(doc))

    adapter = AnthropicAdapter(PROVIDER, MockTransport(handler))
    call = Call({"model": "r", "messages": [{"role": "user", "content": "hi"}]}, MODEL, {}, "r")
    return asyncio.run(adapter.complete(call))


def stream(*events: Any) -> tuple[list[Chunk], Usage | None, UpstreamError | None]:
    """The chunks, the usage and the error (if any) of a stream of `events`."""

    def handler(request: MockRequest) -> MockResponse:
        return MockResponse(200, sse(*events))

    async def go() -> tuple[list[Chunk], Usage | None, UpstreamError | None]:
        adapter = AnthropicAdapter(PROVIDER, MockTransport(handler))
        call = Call({"model": "r", "messages": [{"role": "user", "content": "hi"}]}, MODEL, {}, "r")
        s = await adapter.open_stream(call)
        chunks: list[Chunk] = []
        try:
            async for c in s:
                assert isinstance(c, Chunk)
                chunks.append(c)
        except UpstreamError as exc:
            return chunks, s.usage, exc
        return chunks, s.usage, None

    return asyncio.run(go())


START = {
    "type": "message_start",
    "message": {
        **message([]),
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    },
}


def delta_event(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


END = [
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]


# --- thinking ------------------------------------------------------------------------------


def test_thinking_blocks_become_reasoning_content_and_thinking_blocks() -> None:
    done = complete(
        message(
            [
                {"type": "thinking", "thinking": "Let me add.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "ZW5j"},
                {"type": "text", "text": "4"},
            ]
        )
    )
    assert done.message == {
        "role": "assistant",
        "content": "4",
        "reasoning_content": "Let me add.",
        "thinking_blocks": [
            {"type": "thinking", "thinking": "Let me add.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "ZW5j"},
        ],
    }


def test_streamed_thinking_is_progress_and_ends_with_the_signed_block() -> None:
    chunks, _, error = stream(
        START,
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        delta_event(0, {"type": "thinking_delta", "thinking": "Let me "}),
        delta_event(0, {"type": "thinking_delta", "thinking": "add."}),
        delta_event(0, {"type": "signature_delta", "signature": "sig-1"}),
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "text", "text": ""}},
        delta_event(1, {"type": "text_delta", "text": "4"}),
        {"type": "content_block_stop", "index": 1},
        *END,
    )  # fmt: skip
    assert error is None
    reasoning = [c for c in chunks if c.reasoning]
    assert [c.choices[0]["delta"] for c in reasoning] == [
        {"reasoning_content": "Let me "},
        {"reasoning_content": "add."},
        {
            "thinking_blocks": [
                {"type": "thinking", "thinking": "Let me add.", "signature": "sig-1"}
            ]
        },
    ]
    assert not any(c.content for c in reasoning)
    assert [c.choices[0]["delta"] for c in chunks if c.content] == [{"content": "4"}]


def test_streamed_redacted_thinking_is_one_block() -> None:
    chunks, _, error = stream(
        START,
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "redacted_thinking", "data": "ZW5j"}},
        {"type": "content_block_stop", "index": 0},
        *END,
    )  # fmt: skip
    assert error is None
    [block] = [c for c in chunks if c.reasoning]
    assert block.choices[0]["delta"] == {
        "thinking_blocks": [{"type": "redacted_thinking", "data": "ZW5j"}]
    }


# --- usage ---------------------------------------------------------------------------------

CACHE_USAGE = {
    "input_tokens": 50,
    "cache_read_input_tokens": 188_086,
    "cache_creation_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 400,
    "output_tokens_details": {"thinking_tokens": 300},
}
CACHE_EXPECTED = Usage(
    50 + 188_086 + 3000,
    400,
    cached_input_tokens=188_086,
    cache_write_tokens=1000,
    cache_write_1h_tokens=2000,
    reasoning_tokens=300,
)


def test_usage_carries_cache_reads_writes_by_ttl_and_thinking() -> None:
    assert complete(message([{"type": "text", "text": "x"}], CACHE_USAGE)).usage == CACHE_EXPECTED


def test_cache_writes_without_the_ttl_breakdown_are_five_minute_writes() -> None:
    usage = {"input_tokens": 5, "cache_creation_input_tokens": 70, "output_tokens": 1}
    assert parse_completion(message([], usage)).usage == Usage(75, 1, cache_write_tokens=70)


def test_streamed_usage_merges_message_start_and_message_delta() -> None:
    start_usage = {k: v for k, v in CACHE_USAGE.items() if k != "output_tokens_details"}
    start = {
        "type": "message_start",
        "message": {**START["message"], "usage": {**start_usage, "output_tokens": 1}},
    }
    final = {"output_tokens": 400, "output_tokens_details": {"thinking_tokens": 300}}
    chunks, usage, error = stream(
        start,
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": final},
        {"type": "message_stop"},
    )  # fmt: skip
    assert error is None and usage == CACHE_EXPECTED
    assert [c.usage for c in chunks if c.usage] == [CACHE_EXPECTED]


# --- stop reasons --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_every_documented_stop_reason_maps(stop: str, finish: str) -> None:
    assert STOP_REASONS[stop] == finish
    assert parse_completion(message([], stop=stop)).finish_reason == finish


# --- malformed payloads --------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        message(["not a block"]),
        message([{"type": "text", "text": 7}]),
        message([{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]),
        message([], {"input_tokens": "many", "output_tokens": 1}),
        message([], {"input_tokens": 1, "output_tokens": 1, "cache_creation": 5}),
        message([], ["usage"]),
    ],
)
def test_a_malformed_answer_is_upstream_malformed(doc: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as err:
        complete(doc)
    assert err.value.error_class == "server_error" and err.value.code == "upstream_malformed"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "content_block_start", "index": 0, "content_block": "text"},
        {"type": "content_block_delta", "index": 0, "delta": None},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": "9"}},
        {"type": "message_start", "message": None},
    ],
)
def test_a_malformed_event_is_upstream_malformed(event: dict[str, Any]) -> None:
    _, _, error = stream(START, event, *END)
    assert error is not None
    assert error.error_class == "server_error" and error.code == "upstream_malformed"


def test_unknown_events_and_blocks_are_ignored() -> None:
    chunks, _, error = stream(
        START,
        {"type": "some_future_event", "data": [1, 2]},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search"}},
        {"type": "content_block_stop", "index": 0},
        *END,
    )  # fmt: skip
    assert error is None and not any(c.content for c in chunks)
