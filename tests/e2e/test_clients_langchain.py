"""langchain-openai's `ChatOpenAI(use_responses_api=True)` against the gateway, as users run
it: `invoke`, `stream`, `bind_tools` with a tool round trip (the `ToolMessage` goes back as a
`function_call_output`), and `with_structured_output` (a `text.format` json_schema). On "chat"
OpenAI itself is the first candidate (passed through to the fake's `/v1/responses`);
"anthropic-first", "gemini-first" and "offline" are translated; a failing OpenAI falls back to
a translated Anthropic (or to mock, for structured output: the Anthropic model has no
`json_schema` capability and the Gemini fake answers prose). Reference:
https://python.langchain.com/docs/integrations/chat/openai/ ("Responses API").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, route_config, runtime_config

ROUTES = [
    ("chat", "openai", "Hello from fake-openai"),
    ("anthropic-first", "anthropic", "Hello from fake-anthropic"),
    ("gemini-first", "gemini", "Hello from fake-gemini"),
    ("offline", "mock", "echo: "),
]


class City(BaseModel):
    """A city."""

    city: str
    population: int


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}, 21C"


@pytest.fixture(scope="module")
def gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The shared test config plus "to-mock" (OpenAI, then mock)."""
    config = runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url)
    to_mock = route_config("to-mock", [("openai", "gpt"), ("mock", "echo")])
    gw = Gateway(replace(config, routes={**config.routes, "to-mock": to_mock}),
                 tmp_path_factory.mktemp("gateway"))  # fmt: skip
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


def _llm(gateway: Gateway, key: str, route: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=route,
        base_url=gateway.url + "/v1",
        api_key=key,
        use_responses_api=True,
        max_retries=0,
        timeout=15,
        include_response_headers=True,
    )


def _paths(fake: Any) -> list[str]:
    return [r.path for r in fake.requests]


@pytest.mark.parametrize(("route", "provider", "greeting"), ROUTES)
def test_invoke(
    route: str, provider: str, greeting: str, gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    msg = _llm(gateway, key, route).invoke("plain please")
    assert isinstance(msg, AIMessage)
    assert msg.text.startswith(greeting) and "plain please" in msg.text
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    headers = msg.response_metadata["headers"]
    assert headers["x-switchyard-provider"] == provider
    # the model that answered (langchain reported a missing model before /v1/responses)
    assert msg.response_metadata["model_name"] == headers["x-switchyard-model"]
    rec = gateway.record(headers["x-request-id"])
    assert (rec["endpoint"], rec["provider"], rec["stream"]) == ("/v1/responses", provider, 0)
    assert rec["input_tokens"] == msg.usage_metadata["input_tokens"]
    if route == "chat":
        assert _paths(clean_fakes.openai) == ["/v1/responses"]
    else:
        assert clean_fakes.openai.requests == []


@pytest.mark.parametrize(("route", "provider", "greeting"), ROUTES)
def test_stream(
    route: str, provider: str, greeting: str, gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    chunks = list(_llm(gateway, key, route).stream("stream please"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert sum(1 for c in chunks if c.text) >= 1
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.text.startswith(greeting) and "stream please" in whole.text
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] > 0
    if route == "chat":
        assert _paths(clean_fakes.openai) == ["/v1/responses"]
        assert clean_fakes.openai.requests[0].body["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_from_a_failing_openai(
    stream: bool, gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    clean_fakes.openai.push(Fault("status", status=500))
    llm = _llm(gateway, key, "chat")
    if stream:
        whole: Any = None
        for c in llm.stream("fall back"):
            whole = c if whole is None else whole + c
        text = whole.text
    else:
        msg = llm.invoke("fall back")
        text = msg.text
        headers = msg.response_metadata["headers"]
        assert headers["x-switchyard-attempts"] == "2"
        rec = gateway.record(headers["x-request-id"])
        assert rec["fell_back"] and rec["provider"] == "anthropic" and rec["cost_usd"] > 0
    assert text == "Hello from fake-anthropic: fall back"
    assert _paths(clean_fakes.openai) == ["/v1/responses"]
    assert _paths(clean_fakes.anthropic) == ["/v1/messages"]


@pytest.mark.parametrize("route", ["chat", "anthropic-first", "gemini-first", "offline"])
def test_bind_tools_and_a_tool_round_trip(
    route: str, gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    llm = _llm(gateway, key, route).bind_tools([get_weather])
    question = HumanMessage("Weather in Paris?")
    first = llm.invoke([question])
    assert isinstance(first, AIMessage)
    assert len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = get_weather.invoke(call["args"])
    second = llm.invoke([question, first, ToolMessage(result, tool_call_id=call["id"] or "")])
    assert not second.tool_calls
    assert second.text
    if route == "chat":
        sent = clean_fakes.openai.requests[-1].body["input"]
        outputs = [i for i in sent if i.get("type") == "function_call_output"]
        assert outputs and outputs[0]["output"] == result
    if route == "anthropic-first":
        assert second.text == f"Hello from fake-anthropic: {result}"


def test_a_streamed_tool_call_after_a_fallback(
    gateway: Gateway, key: str, clean_fakes: Fakes
) -> None:
    clean_fakes.openai.push(Fault("status", status=429))
    llm = _llm(gateway, key, "chat").bind_tools([get_weather])
    whole: Any = None
    for c in llm.stream("Weather in Paris?"):
        whole = c if whole is None else whole + c
    assert [(t["name"], t["args"]) for t in whole.tool_calls] == [
        ("get_weather", {"city": "Paris"})  # the Anthropic fake's input
    ]
    assert _paths(clean_fakes.anthropic) == ["/v1/messages"]


@pytest.mark.parametrize("route", ["chat", "offline", "to-mock"])
def test_with_structured_output(route: str, gateway: Gateway, key: str, clean_fakes: Fakes) -> None:
    if route == "to-mock":
        clean_fakes.openai.push(Fault("status", status=500))
    structured = _llm(gateway, key, route).with_structured_output(City, method="json_schema")
    city = structured.invoke("A city, please")
    assert isinstance(city, City)
    if route != "offline":  # OpenAI was asked for the schema (and failed over, for to-mock)
        assert _paths(clean_fakes.openai) == ["/v1/responses"]
        fmt = clean_fakes.openai.requests[0].body["text"]["format"]
        assert fmt["type"] == "json_schema" and fmt["name"] == "City"
