"""The fake OpenAI server is proven right by the official `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.base import FakeProvider, Fault
from tests.fakes.openai_fake import CONTEXT_LENGTH_MESSAGE, DEFAULT_API_KEY, openai_fake

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with openai_fake() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeProvider) -> FakeProvider:
    server.reset()
    return server


def client(fake: FakeProvider, api_key: str = DEFAULT_API_KEY) -> OpenAI:
    return OpenAI(base_url=fake.url + "/v1", api_key=api_key, max_retries=0)


def test_plain_completion_has_message_and_usage(fake: FakeProvider) -> None:
    resp = client(fake).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello from fake-openai: ping"
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.system_fingerprint
    assert fake.requests[0].path == "/v1/chat/completions"


def test_stream_with_usage_accumulates_content_then_a_usage_chunk(fake: FakeProvider) -> None:
    stream = client(fake).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert not chunks[0].choices[0].delta.content
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == "Hello from fake-openai: stream please"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(fake: FakeProvider) -> None:
    chunks = list(
        client(fake).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_non_streaming(fake: FakeProvider) -> None:
    resp = client(fake).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 0}


def test_no_tool_call_after_a_tool_result(fake: FakeProvider) -> None:
    resp = client(fake).chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.tool_calls is None


def test_tool_call_streaming_accumulates_arguments_into_json(fake: FakeProvider) -> None:
    stream = client(fake).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    name, call_id, args, finish = "", "", "", None
    pieces = 0
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                assert tc.index == 0
                if tc.id:
                    call_id = tc.id
                if tc.function and tc.function.name:
                    name = tc.function.name
                    assert tc.function.arguments == ""
                if tc.function and tc.function.arguments:
                    args += tc.function.arguments
                    pieces += 1
            finish = choice.finish_reason or finish
    assert name == "get_weather" and call_id.startswith("call_")
    assert pieces >= 2
    assert json.loads(args) == {"city": "Paris", "days": 0}
    assert finish == "tool_calls"


@pytest.mark.parametrize(
    ("status", "message", "exc_type"),
    [
        (429, "Rate limit reached for requests", openai.RateLimitError),
        (500, "The server had an error while processing your request.", openai.InternalServerError),
        (
            503,
            "The engine is currently overloaded, please try again later.",
            openai.InternalServerError,
        ),
        (400, "Invalid value for 'temperature'.", openai.BadRequestError),
        (
            404,
            "The model `nope` does not exist or you do not have access to it.",
            openai.NotFoundError,
        ),
    ],
)
def test_error_statuses_raise_the_sdk_exception(
    fake: FakeProvider, status: int, message: str, exc_type: type[openai.APIStatusError]
) -> None:
    fake.push(Fault("status", status=status, message=message))
    with pytest.raises(exc_type) as info:
        client(fake).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == status
    assert message in info.value.message


def test_rate_limit_body_is_openais(fake: FakeProvider) -> None:
    fake.push(
        Fault("status", status=429, message="Rate limit reached", headers={"retry-after": "3"})
    )
    with pytest.raises(openai.RateLimitError) as info:
        client(fake).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.type == "requests"
    assert info.value.response.headers["retry-after"] == "3"


def test_context_length_is_a_bad_request_with_its_code(fake: FakeProvider) -> None:
    fake.push(Fault("status", status=400, message=CONTEXT_LENGTH_MESSAGE))
    with pytest.raises(openai.BadRequestError) as info:
        client(fake).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    assert "maximum context length is" in info.value.message


def test_wrong_key_is_an_authentication_error(fake: FakeProvider) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(fake, api_key="sk-wrong").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in info.value.message


def test_error_event_makes_the_stream_raise(fake: FakeProvider) -> None:
    fake.push(Fault("error_event"))
    stream = client(fake).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "server had an error" in info.value.message
    assert any(seen)  # the error came after content had flowed


def _no_extras(model: Any) -> None:
    """No field the SDK's type does not know, at any depth."""
    if isinstance(model, openai.BaseModel):
        assert not model.model_extra, model.model_extra
        for name in type(model).model_fields:
            _no_extras(getattr(model, name))
    elif isinstance(model, list):
        for item in model:
            _no_extras(item)


def test_logprobs_n_and_service_tier_are_openais(fake: FakeProvider) -> None:
    resp = client(fake).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "ping"}],
        n=2,
        logprobs=True,
        top_logprobs=2,
        service_tier="flex",
    )
    _no_extras(resp)
    assert [c.index for c in resp.choices] == [0, 1]
    assert resp.service_tier == "flex"
    lp = resp.choices[0].logprobs
    assert lp is not None and lp.content
    assert "".join(t.token for t in lp.content) == resp.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 for t in lp.content)


def test_reasoning_and_cached_tokens_are_reported_in_the_usage_details(
    fake: FakeProvider,
) -> None:
    messages: Any = [{"role": "user", "content": "long " * 1200}]
    first = client(fake).chat.completions.create(
        model="o4-mini", messages=messages, reasoning_effort="low"
    )
    again = client(fake).chat.completions.create(model="o4-mini", messages=messages)
    _no_extras(first)
    assert first.usage is not None and again.usage is not None
    assert first.usage.completion_tokens_details is not None
    assert first.usage.completion_tokens_details.reasoning_tokens == 16
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert again.usage.prompt_tokens_details is not None
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and 1024 <= cached <= again.usage.prompt_tokens
    assert (cached - 1024) % 128 == 0
