"""The `openai` SDK's Responses API against the gateway, as users run it: `responses.create`
(plain, streamed, function tools and their outputs, `responses.parse`) on a route whose first
candidate is OpenAI itself (passed through to the fake's own `/v1/responses`), on translated
candidates (Anthropic, Gemini, mock), and through a fallback from a failing OpenAI to a
translated Anthropic. Answers are the SDK's own parsed types (`openai.types.responses`), so a
shape the SDK cannot read fails here. Reference: https://platform.openai.com/docs/api-reference/
responses/create and .../responses-streaming.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, route_config, runtime_config

TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]

# (route, provider that answers, the start of its text)
TRANSLATED = [
    ("anthropic-first", "anthropic", "Hello from fake-anthropic"),
    ("gemini-first", "gemini", "Hello from fake-gemini"),
    ("offline", "mock", "echo: "),
]


class City(BaseModel):
    city: str
    population: int


@pytest.fixture(scope="module")
def gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The shared test config plus "to-mock" (OpenAI, then mock), a fallback whose second
    candidate answers JSON for a schema (the Gemini fake answers prose)."""
    config = runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url)
    routes = {
        **config.routes,
        "to-mock": route_config("to-mock", [("openai", "gpt"), ("mock", "echo")]),
    }
    gw = Gateway(replace(config, routes=routes), tmp_path_factory.mktemp("gateway"))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


@pytest.fixture(scope="module")
def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=15)


def _paths(fake: Any) -> list[str]:
    return [r.path for r in fake.requests]


def _record(gateway: Gateway, request_id: str, provider: str, stream: bool) -> dict[str, Any]:
    rec = gateway.record(request_id)
    assert rec["endpoint"] == "/v1/responses"
    assert rec["provider"] == provider
    assert rec["status"] == 200
    assert rec["stream"] == stream
    assert rec["input_tokens"] > 0 and rec["output_tokens"] > 0
    if provider != "mock":
        assert rec["cost_usd"] > 0
    return rec


def test_plain_passthrough_to_openais_own_responses_endpoint(
    gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    raw = client.responses.with_raw_response.create(
        model="chat", input="plain please", instructions="Be brief."
    )
    resp = raw.parse()
    assert resp.object == "response" and resp.status == "completed"
    assert resp.output_text == "Hello from fake-openai: plain please"
    assert resp.usage is not None and resp.usage.input_tokens > 0
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert raw.headers["x-switchyard-attempts"] == "1"
    assert _paths(clean_fakes.openai) == ["/v1/responses"]
    sent = clean_fakes.openai.requests[0].body
    assert sent["model"] == "gpt-4o-2024-08-06" and sent["instructions"] == "Be brief."
    rec = _record(gateway, raw.headers["x-request-id"], "openai", stream=False)
    assert rec["fell_back"] is False or rec["fell_back"] == 0
    assert (rec["input_tokens"], rec["output_tokens"]) == (
        resp.usage.input_tokens,
        resp.usage.output_tokens,
    )


def test_streamed_passthrough_relays_the_documented_events(
    gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    with client.responses.with_streaming_response.create(
        model="chat", input="stream please", stream=True
    ) as raw:
        assert raw.headers["x-switchyard-provider"] == "openai"
        request_id = raw.headers["x-request-id"]
        events = list(raw.parse())
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from fake-openai: stream please"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert _paths(clean_fakes.openai) == ["/v1/responses"]
    assert clean_fakes.openai.requests[0].body["stream"] is True
    _record(gateway, request_id, "openai", stream=True)


@pytest.mark.parametrize(("route", "provider", "greeting"), TRANSLATED)
def test_plain_on_a_translated_candidate(
    route: str,
    provider: str,
    greeting: str,
    gateway: Gateway,
    client: openai.OpenAI,
    clean_fakes: Fakes,
) -> None:
    raw = client.responses.with_raw_response.create(model=route, input="plain please")
    resp = raw.parse()
    assert resp.status == "completed"
    assert resp.output_text.startswith(greeting)
    assert "plain please" in resp.output_text
    assert resp.output[0].type == "message" and resp.output[0].role == "assistant"
    assert resp.usage is not None and resp.usage.output_tokens > 0
    assert raw.headers["x-switchyard-provider"] == provider
    assert clean_fakes.openai.requests == []
    _record(gateway, raw.headers["x-request-id"], provider, stream=False)


@pytest.mark.parametrize(("route", "provider", "greeting"), TRANSLATED)
def test_streamed_on_a_translated_candidate(
    route: str,
    provider: str,
    greeting: str,
    gateway: Gateway,
    client: openai.OpenAI,
    clean_fakes: Fakes,
) -> None:
    with client.responses.stream(model=route, input="stream please") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) >= 1
    assert "".join(deltas) == final.output_text
    assert final.output_text.startswith(greeting)
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0
    assert clean_fakes.openai.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_from_a_failing_openai_to_a_translated_anthropic(
    stream: bool, gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    clean_fakes.openai.push(Fault("status", status=500))
    if stream:
        with client.responses.with_streaming_response.create(
            model="chat", input="fall back", stream=True
        ) as raw:
            headers = raw.headers
            events = list(raw.parse())
        assert events[-1].type == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert events[-1].response.output_text == text
    else:
        plain = client.responses.with_raw_response.create(model="chat", input="fall back")
        headers, text = plain.headers, plain.parse().output_text
    assert text == "Hello from fake-anthropic: fall back"
    assert headers["x-switchyard-attempts"] == "2"
    assert headers["x-switchyard-provider"] == "anthropic"
    assert _paths(clean_fakes.openai) == ["/v1/responses"]  # the passthrough was tried first
    assert _paths(clean_fakes.anthropic) == ["/v1/messages"]
    rec = _record(gateway, headers["x-request-id"], "anthropic", stream=stream)
    assert rec["fell_back"]
    assert [(a["provider"], a["outcome"]) for a in rec["attempts"]] == [
        ("openai", "server_error"),
        ("anthropic", "ok"),
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_a_429_on_openai_falls_back_too(
    stream: bool, gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    clean_fakes.openai.push(Fault("status", status=429, message="Rate limit reached"))
    if stream:
        with client.responses.stream(model="to-gemini", input="busy") as s:
            final = s.get_final_response()
    else:
        final = client.responses.create(model="to-gemini", input="busy")
    assert final.output_text.startswith("Hello from fake-gemini")
    assert _paths(clean_fakes.openai) == ["/v1/responses"]


@pytest.mark.parametrize("route", ["chat", "anthropic-first", "gemini-first", "offline"])
def test_a_function_tool_round_trip(route: str, client: openai.OpenAI, clean_fakes: Fakes) -> None:
    first = client.responses.create(model=route, input="Weather in Paris?", tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather"
    args = json.loads(call.arguments)
    assert isinstance(args["city"], str)
    assert call.call_id
    second = client.responses.create(
        model=route,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
        tools=TOOLS,
    )
    assert second.status == "completed"
    assert second.output_text
    assert not [o for o in second.output if o.type == "function_call"]


@pytest.mark.parametrize("route", ["chat", "anthropic-first", "gemini-first", "offline"])
def test_a_streamed_function_call(route: str, client: openai.OpenAI, clean_fakes: Fakes) -> None:
    with client.responses.stream(model=route, input="Weather in Paris?", tools=TOOLS) as s:
        events = list(s)
        final = s.get_final_response()
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    added = [e.item for e in events if e.type == "response.output_item.added"]
    # the name and call id come with the item's start (langchain reads them there)
    assert [(a.type, getattr(a, "name", None)) for a in added] == [("function_call", "get_weather")]
    assert getattr(added[0], "call_id", None)
    calls = [o for o in final.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)


def test_a_tool_call_after_a_fallback(
    gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    clean_fakes.openai.push(Fault("status", status=500))
    raw = client.responses.with_raw_response.create(
        model="chat", input="Weather in Paris?", tools=TOOLS
    )
    resp = raw.parse()
    calls = [o for o in resp.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}  # the Anthropic fake's input
    assert raw.headers["x-switchyard-provider"] == "anthropic"


@pytest.mark.parametrize("route", ["chat", "offline"])
def test_parse_into_a_pydantic_model(route: str, client: openai.OpenAI, clean_fakes: Fakes) -> None:
    resp = client.responses.parse(model=route, input="A city, please", text_format=City)
    assert isinstance(resp.output_parsed, City)
    if route == "chat":
        assert _paths(clean_fakes.openai) == ["/v1/responses"]
        fmt = clean_fakes.openai.requests[0].body["text"]["format"]
        assert fmt["type"] == "json_schema" and fmt["name"] == "City"


def test_parse_translated_for_gemini_sends_the_schema(
    client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    # The Gemini fake answers in prose whatever the schema, so only the request is checked.
    with pytest.raises(ValueError):  # pydantic's ValidationError of the fake's prose
        client.responses.parse(model="gemini-first", input="A city, please", text_format=City)
    config = clean_fakes.gemini.requests[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    assert set(schema["required"]) == {"city", "population"}


@pytest.mark.parametrize("stream", [False, True])
def test_parse_after_a_fallback_to_a_translated_candidate(
    stream: bool, gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    clean_fakes.openai.push(Fault("status", status=503))
    if stream:
        with client.responses.stream(
            model="to-mock", input="A city, please", text_format=City
        ) as s:
            final = s.get_final_response()
        parsed = final.output_parsed
    else:
        parsed = client.responses.parse(
            model="to-mock", input="A city, please", text_format=City
        ).output_parsed
    assert isinstance(parsed, City)
    assert _paths(clean_fakes.openai) == ["/v1/responses"]


def test_a_bad_key_is_an_authentication_error(gateway: Gateway) -> None:
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sy_test_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="chat", input="hi")


def test_a_bad_request_names_the_field(client: openai.OpenAI, clean_fakes: Fakes) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="chat", input=[{"role": "user", "content": 42}])  # type: ignore[list-item,misc]
    body: Any = err.value.body
    assert body["param"].startswith("input[0]")
    assert clean_fakes.openai.requests == []


@pytest.mark.parametrize(("route", "fake"), [("chat", "openai"), ("anthropic-first", "anthropic")])
def test_a_stream_broken_after_its_commit_ends_in_an_error_event(
    route: str, fake: str, gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    # Committed at the first text: no fallback. The gateway ends the stream with an `error`
    # event carrying an `error` object, which the openai SDK raises as an `APIError`.
    getattr(clean_fakes, fake).push(Fault("drop_mid_stream"))
    types: list[str] = []
    with (
        pytest.raises(openai.APIError) as err,
        client.responses.with_streaming_response.create(
            model=route, input="break please", stream=True
        ) as raw,
    ):
        request_id = raw.headers["x-request-id"]
        for event in raw.parse():
            types.append(event.type)
    assert "response.output_text.delta" in types  # the text so far reached the client
    assert "response.completed" not in types
    assert f"{fake}: stream broken" in err.value.message
    rec = gateway.record(request_id)
    assert rec["broke_after_commit"] and rec["endpoint"] == "/v1/responses"
    other = clean_fakes.anthropic if fake == "openai" else clean_fakes.openai
    assert other.requests == []  # no fallback after the commit


@pytest.mark.parametrize("route", ["chat", "anthropic-first", "gemini-first"])
def test_an_image_input(route: str, client: openai.OpenAI, clean_fakes: Fakes) -> None:
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ"
        "GAhKmMIQAAAABJRU5ErkJggg=="
    )
    resp = client.responses.create(
        model=route,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "data:image/png;base64," + png},
                    {"type": "input_text", "text": "What is this?"},
                ],
            }
        ],
    )
    assert "What is this?" in resp.output_text
    if route == "chat":  # passed through as sent
        part = clean_fakes.openai.requests[0].body["input"][0]["content"][0]
        assert part["image_url"].endswith(png)
    elif route == "anthropic-first":
        block = clean_fakes.anthropic.requests[0].body["messages"][0]["content"][0]
        assert block["source"] == {"type": "base64", "media_type": "image/png", "data": png}
    else:
        parts = clean_fakes.gemini.requests[0].body["contents"][0]["parts"]
        assert any(p.get("inlineData", {}).get("data") == png for p in parts)


def test_a_client_configured_from_the_environment(
    gateway: Gateway, key: str, monkeypatch: pytest.MonkeyPatch, clean_fakes: Fakes
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", gateway.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    resp = openai.OpenAI(max_retries=0).responses.create(model="chat", input="from the env")
    assert resp.output_text == "Hello from fake-openai: from the env"
    # the gateway's key stays at the gateway: the provider gets the configured one
    sent = clean_fakes.openai.requests[0].headers["Authorization"]
    assert sent == "Bearer test-openai-key"
