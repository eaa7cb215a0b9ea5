"""The fake OpenAI server's Responses API (POST /v1/responses) is proven right by the official
`openai` SDK: `responses.create` (plain, streamed, tools, a tool's output in the next input),
`responses.parse` with a pydantic model, and `responses.stream()`. Every answer and stream
event is also validated strictly against the SDK's types (no undeclared field)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import openai
import pydantic
import pytest
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent

from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.base import Call, Completion, NativeEvent, NativeRequest
from runtime.adapters.openai import OpenAIAdapter
from runtime.adapters.transport import Transport
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError
from tests.fakes.anthropic_fake import DEFAULT_API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_fake import anthropic_fake
from tests.fakes.base import FakeProvider, Fault
from tests.fakes.openai_fake import DEFAULT_API_KEY, openai_fake

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
T = TypeVar("T")

# The function tool of https://platform.openai.com/docs/guides/function-calling (Responses form).
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current temperature for a given location.",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"}
        },
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


class CalendarEvent(pydantic.BaseModel):
    """The structured-output example of https://platform.openai.com/docs/guides/structured-outputs."""

    name: str
    date: str
    participants: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with openai_fake() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeProvider) -> FakeProvider:
    server.reset()
    return server


def client(fake: FakeProvider) -> OpenAI:
    return OpenAI(base_url=fake.url + "/v1", api_key=DEFAULT_API_KEY, max_retries=0)


def strict(value: Any, where: str = "") -> None:
    """Fail when a validated SDK model holds keys its type does not declare."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: undeclared {sorted(value.model_extra or {})}"
        for name in type(value).model_fields:
            strict(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            strict(item, f"{where}[{i}]")


def test_plain_response_has_output_text_and_usage(fake: FakeProvider) -> None:
    resp = client(fake).responses.create(
        model="gpt-4.1", instructions="be brief", input="Tell me a three sentence bedtime story."
    )
    strict(Response.model_validate(resp.model_dump(mode="json", by_alias=True)))
    assert (resp.object, resp.status, resp.model) == ("response", "completed", "gpt-4.1")
    assert resp.output_text == "Hello from fake-openai: Tell me a three sentence bedtime story."
    assert resp.instructions == "be brief"
    assert resp.usage is not None and resp.usage.output_tokens > 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    (received,) = fake.requests
    assert received.path == "/v1/responses"
    assert received.body["input"] == "Tell me a three sentence bedtime story."


def test_image_input_is_answered_from_its_text(fake: FakeProvider) -> None:
    resp = client(fake).responses.create(
        model="gpt-4.1",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is in this image?"},
                    {"type": "input_image", "image_url": "https://example.com/a.jpg"},
                ],
            }
        ],
    )
    assert resp.output_text == "Hello from fake-openai: what is in this image?"


def test_stream_follows_the_documented_event_sequence(fake: FakeProvider) -> None:
    stream = client(fake).responses.create(model="gpt-4.1", input="hi there", stream=True)
    events = list(stream)
    for e in events:
        strict(EVENT.validate_python(e.model_dump(mode="json", by_alias=True)), e.type)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "Hello from fake-openai: hi there"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == "Hello from fake-openai: hi there"
    assert done.response.usage is not None and done.response.usage.output_tokens == 8


def test_tool_call_then_its_output_in_the_next_input(fake: FakeProvider) -> None:
    c = client(fake)
    first = c.responses.create(
        model="gpt-4.1", input="What is the weather like in Paris today?", tools=[WEATHER_TOOL]
    )
    strict(Response.model_validate(first.model_dump(mode="json", by_alias=True)))
    (call,) = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris"}
    second = c.responses.create(
        model="gpt-4.1",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "What is the weather like in Paris today?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "14°C"},
        ],
    )
    assert second.output_text == "Hello from fake-openai: What is the weather like in Paris today?"


def test_tool_call_streamed_accumulates_its_arguments(fake: FakeProvider) -> None:
    events = list(
        client(fake).responses.create(
            model="gpt-4.1", input="weather?", tools=[WEATHER_TOOL], stream=True
        )
    )
    for e in events:
        strict(EVENT.validate_python(e.model_dump(mode="json", by_alias=True)), e.type)
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[0].item.type == "function_call"
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"location": "Paris"}
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == args


def test_parse_returns_the_pydantic_model(fake: FakeProvider) -> None:
    resp = client(fake).responses.parse(
        model="gpt-4.1",
        input=[
            {"role": "system", "content": "Extract the event information."},
            {"role": "user", "content": "Alice and Bob are going to a science fair on Friday."},
        ],
        text_format=CalendarEvent,
    )
    assert isinstance(resp.output_parsed, CalendarEvent)
    assert resp.output_parsed == CalendarEvent(name="Paris", date="Paris", participants=[])
    fmt = fake.requests[0].body["text"]["format"]
    assert (fmt["type"], fmt["name"], fmt["strict"]) == ("json_schema", "CalendarEvent", True)


def test_stream_helper_gives_text_deltas_and_the_final_response(fake: FakeProvider) -> None:
    with client(fake).responses.stream(model="gpt-4.1", input="stream me") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "Hello from fake-openai: stream me"
    assert final.status == "completed"


def test_reasoning_and_max_output_tokens(fake: FakeProvider) -> None:
    resp = client(fake).responses.create(
        model="o4-mini", input="hi", reasoning={"effort": "low"}, max_output_tokens=18
    )
    strict(Response.model_validate(resp.model_dump(mode="json", by_alias=True)))
    assert [item.type for item in resp.output] == ["reasoning", "message"]
    assert resp.usage is not None and resp.usage.output_tokens_details.reasoning_tokens == 16
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text == "Hello fr"


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
    ],
)
def test_error_statuses_raise_the_sdk_exception(
    fake: FakeProvider, status: int, exc: type[Exception]
) -> None:
    fake.push(Fault("status", status=status, message="nope"))
    with pytest.raises(exc):
        client(fake).responses.create(model="gpt-4.1", input="hi")
    assert fake.requests[0].path == "/v1/responses"


def test_error_event_is_the_responses_error_event(fake: FakeProvider) -> None:
    # The SDK yields the documented `error` event (it raises only for an `error` object).
    fake.push(Fault("error_event"))
    events = list(client(fake).responses.create(model="gpt-4.1", input="hi", stream=True))
    assert [e.type for e in events[-2:]] == ["response.output_text.delta", "error"]
    assert (events[-1].code, events[-1].sequence_number) == ("server_error", len(events) - 1)


def test_error_event_payload_is_the_sdks_error_event(fake: FakeProvider) -> None:
    fake.push(Fault("error_event"))
    with httpx.stream(
        "POST",
        fake.url + "/v1/responses",
        json={"model": "gpt-4.1", "input": "hi", "stream": True},
        headers={"authorization": f"Bearer {DEFAULT_API_KEY}"},
    ) as resp:
        text = "".join(resp.iter_text())
    last = text.strip().split("\n\n")[-1]
    head, data = last.split("\n", 1)
    assert head == "event: error"
    event = EVENT.validate_python(json.loads(data.removeprefix("data: ")))
    strict(event)
    assert (event.type, event.code) == ("error", "server_error")


def test_no_terminator_ends_without_response_completed(fake: FakeProvider) -> None:
    fake.push(Fault("no_terminator"))
    kinds = [
        e.type for e in client(fake).responses.create(model="gpt-4.1", input="hi", stream=True)
    ]
    assert kinds[-1] == "response.output_item.done"
    assert "response.completed" not in kinds


# --- the passthrough adapter against the fake, over a real socket ---------------------------

MODEL = ModelConfig("fast", "gpt-4.1-2025-04-14", 128_000, None, frozenset({"streaming"}), None)


def adapter_run(fake: FakeProvider, fn: Callable[[OpenAIAdapter], Awaitable[T]]) -> T:
    prov = ProviderConfig(
        "openai", "openai", fake.url + "/v1", {"api_key": "K"}, False, 10.0, 2.0, {"fast": MODEL}
    )

    async def main() -> T:
        async with Transport() as session:
            return await fn(OpenAIAdapter(prov, session))

    return asyncio.run(main())


def native_call(stream: bool = False, **extra: Any) -> Call:
    body = {"model": "fast", "input": "hi", **extra}
    if stream:
        body["stream"] = True
    return Call(
        {}, MODEL, {"api_key": DEFAULT_API_KEY}, "req-1", native=NativeRequest("responses", body)
    )


def test_adapter_passthrough_complete_reaches_v1_responses(fake: FakeProvider) -> None:
    result = adapter_run(
        fake, lambda a: a.complete_native(native_call(reasoning={"effort": "low"}))
    )
    assert fake.requests[0].path == "/v1/responses"
    assert fake.requests[0].body == {
        "model": MODEL.upstream,
        "input": "hi",
        "reasoning": {"effort": "low"},
    }
    assert result.native is not None and result.native["object"] == "response"
    assert result.usage is not None and result.usage.reasoning_tokens == 16
    assert (result.model, result.finish_reason) == (MODEL.upstream, "stop")


def test_adapter_passthrough_stream_commits_at_the_first_delta(fake: FakeProvider) -> None:
    async def go(a: OpenAIAdapter) -> tuple[Any, list[NativeEvent]]:
        s = await a.open_native_stream(native_call(stream=True))
        return s, [e async for e in s]

    s, events = adapter_run(fake, go)
    first = [e.event for e in events].index("response.output_text.delta")
    assert [e.content for e in events] == [i >= first for i in range(len(events))]
    assert events[-1].event == "response.completed" and events[-1].usage == s.usage
    assert s.usage is not None and s.model == MODEL.upstream


@pytest.mark.parametrize(
    ("fault", "cls", "code"),
    [
        (Fault("status", status=429, message="slow down"), "rate_limited", "rate_limit_exceeded"),
        (Fault("error_event"), "server_error", "stream_error_event"),
        (Fault("no_terminator"), "server_error", "stream_truncated"),
        (Fault("drop_mid_stream"), "server_error", "stream_broken"),
        (Fault("malformed"), "server_error", "upstream_malformed"),
    ],
)
def test_adapter_passthrough_stream_faults_are_classified(
    fake: FakeProvider, fault: Fault, cls: str, code: str
) -> None:
    fake.push(fault)

    async def go(a: OpenAIAdapter) -> None:
        s = await a.open_native_stream(native_call(stream=True))
        async for _ in s:
            pass

    with pytest.raises(UpstreamError) as info:
        adapter_run(fake, go)
    assert (info.value.error_class, info.value.code) == (cls, code)


# --- the Messages passthrough against the Anthropic fake, over a real socket -----------------


def test_messages_passthrough_against_the_anthropic_fake() -> None:
    prov = ProviderConfig(
        "anthropic", "anthropic", None, {"api_key": "K"}, False, 10.0, 2.0, {"fast": MODEL}
    )
    body = {
        "model": "fast",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }

    with anthropic_fake() as fake:
        prov = dataclasses.replace(prov, base_url=fake.url)

        async def go() -> tuple[Completion, Any, list[NativeEvent]]:
            async with Transport() as session:
                adapter = AnthropicAdapter(prov, session)
                key = {"api_key": ANTHROPIC_KEY}
                plain = Call({}, MODEL, key, "r1", native=NativeRequest("messages", body))
                done = await adapter.complete_native(plain)
                streamed = NativeRequest("messages", {**body, "stream": True})
                s = await adapter.open_native_stream(Call({}, MODEL, key, "r2", native=streamed))
                return done, s, [e async for e in s]

        done, s, events = asyncio.run(go())
        assert [r.path for r in fake.requests] == ["/v1/messages", "/v1/messages"]
        assert fake.requests[0].body == {**body, "model": MODEL.upstream}
    assert done.native is not None and done.native["type"] == "message"
    assert done.usage is not None and done.usage.reasoning_tokens > 0
    kinds = [(e.event, e.content, e.reasoning) for e in events]
    first = next(i for i, k in enumerate(kinds) if k[1])
    assert kinds[first][0] == "content_block_delta"  # the first text_delta
    assert any(r for _, _, r in kinds[:first])  # the thinking came before, as progress
    assert kinds[-1] == ("message_stop", True, False)
    assert s.usage == done.usage
