"""The OpenAI Agents SDK against the gateway in its default mode (the Responses API), as users
run it: an `Agent` with a function tool, `Runner.run` and `Runner.run_streamed`, its model an
`OpenAIResponsesModel` over an `AsyncOpenAI` pointed at the gateway (tracing off: nothing
leaves 127.0.0.1). The agent loop is the real one: the model calls the tool, the SDK runs it and
sends its output back in the next request's `input`, the model answers. On "chat" OpenAI
itself is the first candidate (passed through to the fake's `/v1/responses`); "anthropic-first"
and "offline" are translated; a failing OpenAI falls back to a translated Anthropic.
Reference: https://openai.github.io/openai-agents-python/ (Agents, Tools, Running agents,
Streaming, Models: `OpenAIResponsesModel`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    ItemHelpers,
    OpenAIResponsesModel,
    Runner,
    RunResult,
    RunResultStreaming,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import _openai_shared

from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway

CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    CALLS.append(city)
    return f"sunny in {city}, 21C"


@pytest.fixture(scope="module", autouse=True)
def no_tracing() -> None:
    # Left off afterwards too: the SDK's trace exporter would call api.openai.com.
    set_tracing_disabled(True)


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


@pytest.fixture(autouse=True)
def clear_calls() -> None:
    CALLS.clear()


def _agent(gateway: Gateway, key: str, route: str) -> Agent[Any]:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    return Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=route, openai_client=client),
    )


def _run(gateway: Gateway, key: str, route: str, stream: bool) -> tuple[Any, list[str]]:
    """Run the agent on one question; (final output, the stream's event types)."""

    async def go() -> tuple[Any, list[str]]:
        agent = _agent(gateway, key, route)
        if not stream:
            result: RunResult = await Runner.run(agent, "Weather in Paris?")
            return result.final_output, []
        streamed: RunResultStreaming = Runner.run_streamed(agent, "Weather in Paris?")
        kinds: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                kinds.append(event.data.type)
            elif event.type == "run_item_stream_event":
                kinds.append(event.item.type)
        return streamed.final_output, kinds

    return asyncio.run(go())


def _responses_paths(fake: Any) -> list[str]:
    return [r.path for r in fake.requests]


@pytest.mark.parametrize(
    ("route", "greeting"),
    [
        ("chat", "Hello from fake-openai"),
        ("anthropic-first", "Hello from fake-anthropic"),
        ("offline", "echo: "),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_an_agent_calls_its_tool_and_answers(
    route: str, greeting: str, stream: bool, gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    output, kinds = _run(gateway, key, route, stream)
    assert len(CALLS) == 1 and isinstance(CALLS[0], str)  # the SDK ran the tool once
    assert isinstance(output, str) and output.startswith(greeting)
    if stream:
        assert "response.function_call_arguments.delta" in kinds
        assert "response.output_text.delta" in kinds
        assert "tool_call_item" in kinds and "tool_call_output_item" in kinds
        assert kinds.index("tool_call_output_item") < kinds.index("message_output_item")
    if route == "chat":  # both turns passed through to OpenAI's own Responses API
        assert _responses_paths(clean_fakes.openai) == ["/v1/responses"] * 2
        second = clean_fakes.openai.requests[1].body
        outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
        assert outputs and outputs[0]["output"] == f"sunny in {CALLS[0]}, 21C"
        assert second["instructions"] == "Answer with the weather tool."
    elif route == "anthropic-first":  # translated: the tool's output is a tool_result
        assert clean_fakes.openai.requests == []
        last = clean_fakes.anthropic.requests[1].body["messages"][-1]
        assert last["content"][0]["type"] == "tool_result"
        assert "sunny in Paris" in str(last["content"][0]["content"])
        assert output == "Hello from fake-anthropic: sunny in Paris, 21C"


def _fell_back(gateway: Gateway, wait_for: int = 0) -> list[dict[str, Any]]:
    """The records of Responses requests that fell back, oldest first (waiting for a count:
    records are written in batches)."""
    deadline = time.monotonic() + 5
    while True:
        recs = [r for r in gateway.records(endpoint="/v1/responses") if r["fell_back"]]
        if len(recs) >= wait_for or time.monotonic() > deadline:
            return recs
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True])
def test_an_agent_falls_back_from_a_failing_openai(
    stream: bool, gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    # Both turns' first candidate fails: each request falls back to a translated Anthropic.
    before = len(_fell_back(gateway))
    clean_fakes.openai.push(Fault("status", status=500), Fault("status", status=429))
    output, _ = _run(gateway, key, "chat", stream)
    assert CALLS == ["Paris"]  # the Anthropic fake's tool input
    assert output == "Hello from fake-anthropic: sunny in Paris, 21C"
    assert _responses_paths(clean_fakes.openai) == ["/v1/responses"] * 2
    assert _responses_paths(clean_fakes.anthropic) == ["/v1/messages"] * 2
    recs = _fell_back(gateway, before + 2)[before:]
    assert [r["provider"] for r in recs] == ["anthropic", "anthropic"]
    assert [r["stream"] for r in recs] == [stream, stream]
    assert [[a["outcome"] for a in r["attempts"]] for r in recs] == [
        ["server_error", "ok"],
        ["rate_limited", "ok"],
    ]
    assert all(r["input_tokens"] > 0 and r["cost_usd"] > 0 for r in recs)


def test_the_run_reports_usage_from_the_gateway(
    gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    async def go() -> RunResult:
        return await Runner.run(_agent(gateway, key, "chat"), "Weather in Paris?")

    result = asyncio.run(go())
    usage = result.context_wrapper.usage
    assert usage.requests == 2
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    answer = ItemHelpers.text_message_outputs(result.new_items)
    assert answer.startswith("Hello from fake-openai")


def test_a_default_client_and_a_model_name(gateway: Gateway, key: str, clean_fakes: Fakes) -> None:
    # The other way users set it up: the SDK's default client, the route as the model name
    # (the SDK's default model API is Responses).
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    previous = _openai_shared.get_default_openai_client()
    set_default_openai_client(client, use_for_tracing=False)
    try:
        agent = Agent(name="weather", tools=[get_weather], model="gemini-first")
        result = asyncio.run(Runner.run(agent, "Weather in Rome?"))
    finally:
        _openai_shared._default_openai_client = previous  # the SDK's own default again
    assert len(CALLS) == 1
    assert str(result.final_output).startswith("Hello from fake-gemini")
    assert [r.path.split(":")[-1] for r in clean_fakes.gemini.requests] == ["generateContent"] * 2
    assert clean_fakes.openai.requests == []
