"""The fake Anthropic server is proven right by the official `anthropic` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic import Anthropic

from tests.fakes.anthropic_fake import (
    CONTEXT_LENGTH_MESSAGE,
    DEFAULT_API_KEY,
    TOOL_INPUT,
    anthropic_fake,
    signature_of,
)
from tests.fakes.base import FakeProvider, Fault

MODEL = "claude-fake-1"
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Weather at a place",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HELLO: Any = [{"role": "user", "content": "ping"}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with anthropic_fake() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeProvider) -> FakeProvider:
    server.reset()
    return server


def client(fake: FakeProvider, api_key: str = DEFAULT_API_KEY) -> Anthropic:
    return Anthropic(base_url=fake.url, api_key=api_key, max_retries=0)


def test_plain_message_has_text_stop_reason_and_usage(fake: FakeProvider) -> None:
    msg = client(fake).messages.create(
        model=MODEL, max_tokens=100, system="Be brief.", messages=HELLO
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == MODEL
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hello from fake-anthropic: ping"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_sdk_sends_key_version_and_body(fake: FakeProvider) -> None:
    client(fake).messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    req = fake.requests[-1]
    assert req.path == "/v1/messages"
    assert DEFAULT_API_KEY in (
        req.headers.get("x-api-key"),
        req.headers.get("Authorization", "").removeprefix("Bearer "),
    )
    assert req.headers["anthropic-version"]
    assert req.body == {"model": MODEL, "max_tokens": 100, "messages": HELLO}


def test_wrong_key_is_authentication_error(fake: FakeProvider) -> None:
    with pytest.raises(anthropic.AuthenticationError) as exc:
        client(fake, api_key="wrong").messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert exc.value.status_code == 401
    assert exc.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_max_tokens_and_stop_sequences_end_the_reply(fake: FakeProvider) -> None:
    short = client(fake).messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 2
    stopped = client(fake).messages.create(
        model=MODEL, max_tokens=100, messages=HELLO, stop_sequences=["fake"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "fake"
    assert stopped.content[0].text == "Hello from "  # type: ignore[union-attr]


def test_stream_helper_accumulates_text_and_usage(fake: FakeProvider) -> None:
    plain = client(fake).messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    with client(fake).messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 3
    assert "".join(pieces) == "Hello from fake-anthropic: ping"
    assert final.content[0].text == "Hello from fake-anthropic: ping"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_raw_stream_has_the_documented_event_sequence(fake: FakeProvider) -> None:
    events = list(
        client(fake).messages.create(model=MODEL, max_tokens=100, messages=HELLO, stream=True)
    )
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert types.count("content_block_delta") >= 3
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.usage.input_tokens > 0
    assert delta.type == "message_delta" and delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens > 0
    assert fake.requests[-1].body["stream"] is True


def test_tools_get_a_tool_use_block(fake: FakeProvider) -> None:
    msg = client(fake).messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    assert msg.stop_reason == "tool_use"
    block = msg.content[0]
    assert block.type == "tool_use"
    assert block.name == "get_weather" and block.input == TOOL_INPUT
    assert block.id.startswith("toolu_")


def test_streamed_tool_use_input_is_assembled(fake: FakeProvider) -> None:
    with client(fake).messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        json_events = [e for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert len(json_events) >= 3
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == TOOL_INPUT


def test_tool_result_turn_gets_text(fake: FakeProvider) -> None:
    msg = client(fake).messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": TOOL_INPUT,
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ],
    )
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].text == "Hello from fake-anthropic: sunny"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
    ],
)
def test_error_statuses_raise_the_sdk_classes(
    fake: FakeProvider, status: int, error_class: type[anthropic.APIStatusError], error_type: str
) -> None:
    fake.push(Fault("status", status=status, message="injected"))
    with pytest.raises(error_class) as exc:
        client(fake).messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert exc.value.status_code == status
    assert exc.value.body == {
        "type": "error",
        "error": {"type": error_type, "message": "injected"},
        "request_id": "req_fake",
    }


def test_overloaded_529_is_an_internal_server_error_too(fake: FakeProvider) -> None:
    fake.push(Fault("status", status=529, message="Overloaded"))
    with pytest.raises(anthropic.InternalServerError) as exc:
        client(fake).messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert exc.value.status_code == 529


def test_context_length_error_reads_like_anthropic(fake: FakeProvider) -> None:
    fake.push(Fault("status", status=400, message=CONTEXT_LENGTH_MESSAGE))
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        client(fake).messages.create(model=MODEL, max_tokens=100, messages=HELLO)


def test_error_event_makes_the_sdk_stream_raise(fake: FakeProvider) -> None:
    fake.push(Fault("error_event"))
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        client(fake).messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts == ["Hello "]  # the first content event arrived before the error event


# --- thinking and prompt caching (issue 11) ------------------------------------------------


def test_thinking_block_comes_first_with_its_signature(fake: FakeProvider) -> None:
    msg = client(fake).messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HELLO,
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    block = msg.content[0]
    assert block.type == "thinking"
    assert block.thinking == "Thinking about: ping"
    assert block.signature == signature_of("Thinking about: ping")
    details = msg.usage.output_tokens_details
    assert details is not None and 0 < details.thinking_tokens < msg.usage.output_tokens


def test_streamed_thinking_accumulates_in_the_sdk(fake: FakeProvider) -> None:
    with client(fake).messages.stream(
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HELLO,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds
    block = final.content[0]
    assert block.type == "thinking"
    assert block.signature == signature_of(block.thinking)
    assert final.content[1].type == "text"
    details = final.usage.output_tokens_details
    assert details is not None and details.thinking_tokens > 0


def test_a_cached_prefix_is_written_then_read(fake: FakeProvider) -> None:
    system: Any = [
        {
            "type": "text",
            "text": "A long reference document. " * 200,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    first = client(fake).messages.create(model=MODEL, max_tokens=100, system=system, messages=HELLO)
    second = client(fake).messages.create(
        model=MODEL, max_tokens=100, system=system, messages=HELLO
    )
    written = first.usage.cache_creation_input_tokens
    assert written and first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == written
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens == second.usage.input_tokens > 0
