"""OpenAIAdapter against the fake OpenAI server: request mapping, answers, and every fault."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import openai
import pytest

from runtime.adapters.base import AnyChunk, Call, Completion, RelayChunk
from runtime.adapters.openai import OpenAIAdapter, OpenAIStream
from runtime.adapters.transport import Transport
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError
from tests.conftest import Fakes
from tests.fakes.base import FakeProvider, Fault
from tests.fakes.openai_fake import (
    CONTEXT_LENGTH_MESSAGE,
    DEFAULT_API_KEY,
    OVERLOADED_MESSAGE,
    openai_fake,
)
from tests.gateway_env import Gateway

T = TypeVar("T")

MODEL = ModelConfig(
    name="fast",
    upstream="gpt-4o-mini-2024-07-18",
    context_window=128_000,
    max_output_tokens=16_384,
    capabilities=frozenset({"streaming", "tools"}),
    price=None,
)
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
    },
}


def provider(base_url: str, timeout_s: float = 10.0) -> ProviderConfig:
    return ProviderConfig(
        id="openai",
        adapter="openai",
        base_url=base_url,
        credentials={"api_key": "OPENAI_API_KEY"},
        credentials_optional=False,
        timeout_s=timeout_s,
        connect_timeout_s=2.0,
        models={"fast": MODEL},
    )


def call(
    content: str = "hi", *, stream: bool = False, key: str = DEFAULT_API_KEY, **extra: Any
) -> Call:
    request = {"model": "fast", "messages": [{"role": "user", "content": content}], **extra}
    if stream:
        request["stream"] = True
    return Call(
        request=request,
        model=MODEL,
        credentials={"api_key": key},
        request_id="req-1",
    )


def run(prov: ProviderConfig, fn: Callable[[OpenAIAdapter], Awaitable[T]]) -> T:
    """Run fn with an adapter on our own pooled transport (runtime/adapters/transport.py), in a
    fresh event loop."""

    async def main() -> T:
        async with Transport() as session:
            return await fn(OpenAIAdapter(prov, session))

    return asyncio.run(main())


async def send(adapter: OpenAIAdapter, c: Call) -> Completion | OpenAIStream:
    """complete() or open_stream(), as the request's `stream` says (as the gateway does)."""
    return await (adapter.open_stream(c) if c.request.get("stream") else adapter.complete(c))


def complete(fake: FakeProvider, c: Call) -> Completion:
    async def go(adapter: OpenAIAdapter) -> Completion:
        result = await send(adapter, c)
        assert isinstance(result, Completion)
        return result

    return run(provider(fake.url + "/v1"), go)


def stream_all(fake: FakeProvider, c: Call) -> tuple[OpenAIStream, list[AnyChunk]]:
    async def go(adapter: OpenAIAdapter) -> tuple[OpenAIStream, list[AnyChunk]]:
        result = await send(adapter, c)
        assert isinstance(result, OpenAIStream)
        return result, [chunk async for chunk in result]

    return run(provider(fake.url + "/v1"), go)


def failure(prov: ProviderConfig, c: Call) -> tuple[UpstreamError, list[AnyChunk], bool]:
    """The error an attempt raised, the chunks before it, and whether opening the stream
    itself raised."""

    async def go(adapter: OpenAIAdapter) -> tuple[UpstreamError, list[AnyChunk], bool]:
        chunks: list[AnyChunk] = []
        try:
            result = await send(adapter, c)
        except UpstreamError as exc:
            return exc, chunks, True
        assert isinstance(result, OpenAIStream), "a non-streamed call should have raised"
        try:
            async for chunk in result:
                chunks.append(chunk)
        except UpstreamError as exc:
            return exc, chunks, False
        raise AssertionError("the stream ended without an error")

    return run(prov, go)


def header(fake: FakeProvider, name: str) -> str | None:
    headers = {k.lower(): v for k, v in fake.requests[-1].headers.items()}
    return headers.get(name.lower())


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with openai_fake() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeProvider) -> FakeProvider:
    server.reset()
    return server


# -- request mapping ---------------------------------------------------------------------------


def test_request_goes_to_chat_completions_with_the_upstream_model_and_bearer_key(
    fake: FakeProvider,
) -> None:
    c = call("hello", temperature=0.2)
    complete(fake, c)
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-4o-mini-2024-07-18"
    assert sent.body["temperature"] == 0.2
    assert sent.body["messages"] == [{"role": "user", "content": "hello"}]
    assert "stream" not in sent.body and "stream_options" not in sent.body
    assert header(fake, "authorization") == f"Bearer {DEFAULT_API_KEY}"
    assert header(fake, "openai-organization") is None
    assert c.request["model"] == "fast", "the client's body must not be mutated"


def test_organization_header_when_the_credentials_carry_one(fake: FakeProvider) -> None:
    c = call()
    c.credentials["organization"] = "org-abc"
    complete(fake, c)
    assert header(fake, "openai-organization") == "org-abc"


def test_stream_forces_include_usage_and_keeps_other_stream_options(fake: FakeProvider) -> None:
    stream_all(
        fake,
        call(stream=True, stream_options={"include_usage": False, "include_obfuscation": False}),
    )
    sent = fake.requests[-1].body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True, "include_obfuscation": False}


def test_stream_without_stream_options_still_asks_for_usage(fake: FakeProvider) -> None:
    stream_all(fake, call(stream=True))
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


# -- answers -----------------------------------------------------------------------------------


def test_completion_carries_message_finish_reason_usage_and_model(fake: FakeProvider) -> None:
    result = complete(fake, call("ping"))
    assert result.message["role"] == "assistant"
    assert result.message["content"] == "Hello from fake-openai: ping"
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.body is not None and result.body["system_fingerprint"]
    assert result.body["service_tier"] == "default"


def test_completion_with_a_tool_call(fake: FakeProvider) -> None:
    result = complete(fake, call("find it", tools=[TOOL]))
    assert result.finish_reason == "tool_calls"
    (tc,) = result.message["tool_calls"]
    assert tc["type"] == "function" and tc["function"]["name"] == "lookup"
    assert json.loads(tc["function"]["arguments"]) == {"q": "Paris"}


def _choices(c: Any) -> Any:
    """A chunk's choices: relayed chunks are not decoded, their JSON is in `data`."""
    return json.loads(c.data)["choices"] if isinstance(c, RelayChunk) else c.choices


def test_stream_role_chunk_is_not_content_then_content_then_usage(fake: FakeProvider) -> None:
    stream, chunks = stream_all(fake, call("stream me", stream=True))
    assert chunks[0].content is False
    assert chunks[0].choices[0]["delta"]["role"] == "assistant"
    assert all(isinstance(c, RelayChunk) for c in chunks)  # relayed as the provider sent them
    content = [c for c in chunks if c.content]
    assert len(content) >= 3
    assert (
        "".join(_choices(c)[0]["delta"].get("content") or "" for c in content)
        == "Hello from fake-openai: stream me"
    )
    assert [
        _choices(c)[0]["finish_reason"]
        for c in chunks
        if _choices(c) and _choices(c)[0]["finish_reason"]
    ] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].content is False
    assert stream.usage is not None and stream.usage.output_tokens > 0
    assert stream.usage == chunks[-1].usage
    assert stream.model == "gpt-4o-mini-2024-07-18"


def test_streamed_tool_call_chunks_are_content(fake: FakeProvider) -> None:
    _stream, chunks = stream_all(fake, call("find it", stream=True, tools=[TOOL]))
    assert chunks[0].content is True
    args = "".join(
        tc["function"].get("arguments", "")
        for c in chunks
        for ch in _choices(c)
        for tc in ch["delta"].get("tool_calls") or []
    )
    assert json.loads(args) == {"q": "Paris"}


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "error_class"),
    [
        (500, "The server had an error while processing your request.", "server_error"),
        (503, "Service unavailable", "server_error"),
        (503, OVERLOADED_MESSAGE, "overloaded"),
        (400, CONTEXT_LENGTH_MESSAGE, "context_length"),
        (400, "Invalid value for 'temperature': expected a number.", "bad_request"),
        (404, "The model `gpt-nope` does not exist or you do not have access to it.", "not_found"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_error_status_is_classified_before_anything_is_returned(
    fake: FakeProvider, status: int, message: str, error_class: str, stream: bool
) -> None:
    fake.push(Fault("status", status=status, message=message))
    err, _chunks, at_send = failure(provider(fake.url + "/v1"), call(stream=stream))
    assert at_send
    assert err.error_class == error_class
    assert err.status == status
    assert err.message == message


def test_rate_limit_keeps_retry_after(fake: FakeProvider) -> None:
    fake.push(
        Fault(
            "status",
            status=429,
            message="Rate limit reached for requests",
            headers={"retry-after": "7"},
        )
    )
    err, _, _ = failure(provider(fake.url + "/v1"), call())
    assert err.error_class == "rate_limited"
    assert err.status == 429
    assert err.code == "rate_limit_exceeded"
    assert err.retry_after == 7.0


def test_context_length_code(fake: FakeProvider) -> None:
    fake.push(Fault("status", status=400, message=CONTEXT_LENGTH_MESSAGE))
    err, _, _ = failure(provider(fake.url + "/v1"), call())
    assert (err.error_class, err.code) == ("context_length", "context_length_exceeded")


def test_wrong_key_is_auth_and_the_key_is_not_in_the_message(fake: FakeProvider) -> None:
    err, _, _ = failure(provider(fake.url + "/v1"), call(key="sk-wrong-secret"))
    assert err.error_class == "auth"
    assert err.status == 401
    assert "sk-wrong-secret" not in err.message


@pytest.mark.parametrize("stream", [False, True])
def test_reset_before_a_response_is_connect_error(fake: FakeProvider, stream: bool) -> None:
    fake.push(Fault("reset"))
    err, _, at_send = failure(provider(fake.url + "/v1"), call(stream=stream))
    assert at_send
    assert err.error_class == "connect_error"
    assert err.status is None


def test_no_headers_within_the_provider_timeout_is_timeout(fake: FakeProvider) -> None:
    fake.push(Fault("delay_headers", delay=1.5))
    err, _, at_send = failure(provider(fake.url + "/v1", timeout_s=0.5), call())
    assert at_send
    assert err.error_class == "timeout"


def test_closed_port_is_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err, _, at_send = failure(provider(f"http://127.0.0.1:{port}/v1"), call())
    assert at_send
    assert err.error_class == "connect_error"


def test_malformed_body_is_upstream_malformed(fake: FakeProvider) -> None:
    fake.push(Fault("malformed"))
    err, _, at_send = failure(provider(fake.url + "/v1"), call())
    assert at_send
    assert (err.error_class, err.code) == ("server_error", "upstream_malformed")


def test_malformed_stream_event_is_upstream_malformed_while_iterating(fake: FakeProvider) -> None:
    fake.push(Fault("malformed"))
    err, chunks, at_send = failure(provider(fake.url + "/v1"), call(stream=True))
    assert not at_send
    assert (err.error_class, err.code) == ("server_error", "upstream_malformed")
    assert [c.content for c in chunks] == [False]  # only the role chunk came before


def test_drop_mid_stream_is_stream_broken_after_some_content(fake: FakeProvider) -> None:
    fake.push(Fault("drop_mid_stream"))
    err, chunks, at_send = failure(provider(fake.url + "/v1"), call(stream=True))
    assert not at_send
    assert (err.error_class, err.code) == ("server_error", "stream_broken")
    assert any(c.content for c in chunks)


def test_error_event_raises_while_iterating(fake: FakeProvider) -> None:
    fake.push(Fault("error_event"))
    err, chunks, at_send = failure(provider(fake.url + "/v1"), call(stream=True))
    assert not at_send
    assert err.error_class == "server_error"
    assert err.code == "stream_error_event"
    assert "server had an error" in err.message
    assert any(c.content for c in chunks)


def test_stream_without_done_is_truncated(fake: FakeProvider) -> None:
    fake.push(Fault("no_terminator"))
    err, chunks, at_send = failure(provider(fake.url + "/v1"), call(stream=True))
    assert not at_send
    assert (err.error_class, err.code) == ("server_error", "stream_truncated")
    assert chunks[-1].usage is not None  # everything but [DONE] arrived


# -- the official SDK as the client of a gateway over the fake ---------------------------------


def test_the_sdk_gets_logprobs_usage_details_and_service_tier_through_the_gateway(
    gateway: Gateway, clean_fakes: Fakes
) -> None:
    client = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=gateway.key(), max_retries=0, timeout=15
    )
    messages: Any = [{"role": "user", "content": "cache me " * 700}]
    client.chat.completions.create(model="chat", messages=messages)  # fills the prompt cache
    raw = client.chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,
        n=2,
        logprobs=True,
        top_logprobs=2,
        service_tier="priority",
    )
    resp = raw.parse()
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert resp.service_tier == "priority"
    assert resp.system_fingerprint
    assert [c.index for c in resp.choices] == [0, 1]
    for choice in resp.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
        assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    usage = resp.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.completion_tokens_details is not None
    cached = usage.prompt_tokens_details.cached_tokens
    assert cached is not None and cached >= 1024
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    rec = gateway.record(raw.headers["x-request-id"])
    assert (rec["input_tokens"], rec["output_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
