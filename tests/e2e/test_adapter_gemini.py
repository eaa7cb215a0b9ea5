"""GeminiAdapter against the fake Gemini server: request mapping, results, streams, every fault."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from runtime.adapters.base import Call, Chunk, Completion
from runtime.adapters.gemini import (
    GeminiAdapter,
    GeminiStream,
    build_request,
    map_error,
    parse_response,
)
from runtime.adapters.transport import Transport
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import UpstreamError
from tests.conftest import Fakes
from tests.fakes.base import FakeProvider, Fault
from tests.fakes.gemini_fake import (
    CONTEXT_LENGTH_MESSAGE,
    DEFAULT_API_KEY,
    OVERLOADED_MESSAGE,
    RETRY_DELAY_S,
    gemini_fake,
    signature_for,
)
from tests.gateway_env import Gateway

UPSTREAM = "gemini-2.0-flash"
MODEL = ModelConfig(
    name="flash",
    upstream=UPSTREAM,
    context_window=1_048_576,
    max_output_tokens=8192,
    capabilities=frozenset({"tools", "vision", "json_mode"}),
    price=None,
)
HELLO = {"model": "flash", "messages": [{"role": "user", "content": "hi"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with gemini_fake() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeProvider) -> None:
    fake.reset()


def provider(fake: FakeProvider, timeout_s: float = 2.0) -> ProviderConfig:
    return ProviderConfig(
        id="gemini",
        adapter="gemini",
        base_url=fake.url + "/v1beta",
        credentials={"api_key": "GEMINI_API_KEY"},
        credentials_optional=False,
        timeout_s=timeout_s,
        connect_timeout_s=1.0,
        models={"flash": MODEL},
    )


def complete(
    fake: FakeProvider, request: dict[str, Any], key: str = DEFAULT_API_KEY, timeout_s: float = 2.0
) -> Completion:
    async def go() -> Completion:
        async with Transport() as session:
            result = await GeminiAdapter(provider(fake, timeout_s), session).complete(
                _call(request, key)
            )
            assert isinstance(result, Completion)
            return result

    return asyncio.run(go())


def stream(fake: FakeProvider, request: dict[str, Any]) -> tuple[list[Chunk], GeminiStream]:
    async def go() -> tuple[list[Chunk], GeminiStream]:
        async with Transport() as session:
            result = await GeminiAdapter(provider(fake), session).open_stream(
                _call(request, DEFAULT_API_KEY)
            )
            assert isinstance(result, GeminiStream)
            chunks = [chunk async for chunk in result]
            return chunks, result

    return asyncio.run(go())


def failure(
    fake: FakeProvider,
    request: dict[str, Any],
    *,
    streamed: bool = False,
    key: str = DEFAULT_API_KEY,
    timeout_s: float = 2.0,
) -> tuple[UpstreamError, list[Chunk]]:
    """The UpstreamError a request ends in, and the chunks a stream yielded before it."""
    chunks: list[Chunk] = []

    async def go() -> None:
        async with Transport() as session:
            adapter = GeminiAdapter(provider(fake, timeout_s), session)
            call = _call(request, key)
            result = await (adapter.open_stream(call) if streamed else adapter.complete(call))
            if isinstance(result, GeminiStream):
                async for chunk in result:
                    chunks.append(chunk)

    with pytest.raises(UpstreamError) as info:
        asyncio.run(go())
    return info.value, chunks


def _call(request: dict[str, Any], key: str) -> Call:
    credentials = {"api_key": key} if key else {}
    return Call(
        request=request,
        model=MODEL,
        credentials=credentials,
        request_id="req-test",
    )


# --- request mapping -------------------------------------------------------------------------


def test_request_is_mapped_to_generate_content(fake: FakeProvider) -> None:
    request = {
        "model": "flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these pictures?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp_c": 21}'},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 256,
        "stop": "END",
        "n": 1,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "w",
                "schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"temp": {"type": ["number", "null"]}},
                    "required": ["temp"],
                    "additionalProperties": False,
                },
            },
        },
    }

    complete(fake, request)

    sent = fake.requests[-1]
    assert sent.path == f"/v1beta/models/{UPSTREAM}:generateContent"
    assert DEFAULT_API_KEY not in sent.path and "key=" not in sent.path
    assert sent.headers["x-goog-api-key"] == DEFAULT_API_KEY
    body = sent.body
    assert body["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Answer in French."}]
    }
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is in these pictures?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"fileUri": "https://example.com/cat.webp", "mimeType": "image/webp"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "id": "call_abc",
                        "name": "get_weather",
                        "args": {"city": "Paris"},
                    }
                }
            ],
        },
        # the tool result and the next user message are one user turn
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "call_abc",
                        "name": "get_weather",
                        "response": {"content": {"temp_c": 21}},
                    }
                },
                {"text": "And tomorrow?"},
            ],
        },
    ]
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 256,
        "stopSequences": ["END"],
        "candidateCount": 1,
        "responseMimeType": "application/json",
        "responseJsonSchema": {
            "type": "object",
            "properties": {"temp": {"type": ["number", "null"]}},
            "required": ["temp"],
            "additionalProperties": False,
        },
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                        "additionalProperties": False,
                    },
                }
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
    ],
)
def test_tool_choice_modes(fake: FakeProvider, choice: str, config: dict[str, Any]) -> None:
    complete(fake, {**HELLO, "tools": [WEATHER_TOOL], "tool_choice": choice})

    assert fake.requests[-1].body["toolConfig"] == {"functionCallingConfig": config}


def test_json_object_and_max_completion_tokens(fake: FakeProvider) -> None:
    complete(
        fake,
        {
            **HELLO,
            "response_format": {"type": "json_object"},
            "max_completion_tokens": 50,
            "max_tokens": 99,
        },
    )

    assert fake.requests[-1].body["generationConfig"] == {
        "responseMimeType": "application/json",
        "maxOutputTokens": 50,
    }


def test_tool_result_that_is_not_json_is_sent_as_a_string(fake: FakeProvider) -> None:
    request = {
        "model": "flash",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    }

    complete(fake, request)

    last = fake.requests[-1].body["contents"][-1]
    assert last == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "id": "c1",
                    "name": "get_weather",
                    "response": {"content": "sunny"},
                }
            }
        ],
    }


def test_untranslatable_request_is_bad_request_without_a_call(fake: FakeProvider) -> None:
    request = {
        "model": "flash",
        "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}],
    }

    err, _ = failure(fake, request)

    assert err.error_class == "bad_request"
    assert fake.requests == []


def test_tool_schema_goes_out_as_json_schema_with_annotations_dropped(
    fake: FakeProvider,
) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}},
        "properties": {
            "unit": {"$ref": "#/$defs/Unit", "description": "unit"},
            "kind": {"const": "weather"},
            "tags": {"type": "array", "items": {"type": "string", "examples": ["a"]}},
        },
        "required": ["unit"],
        "additionalProperties": False,
        "strict": True,
    }
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": schema}}

    complete(fake, {**HELLO, "tools": [tool]})

    decl = fake.requests[-1].body["tools"][0]["functionDeclarations"][0]
    assert decl["parametersJsonSchema"] == {
        "type": "object",
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}},
        "properties": {
            "unit": {"$ref": "#/$defs/Unit"},
            "kind": {"enum": ["weather"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["unit"],
        "additionalProperties": False,
    }


# --- results ---------------------------------------------------------------------------------


def test_completion_text_usage_and_model(fake: FakeProvider) -> None:
    result = complete(fake, HELLO)

    assert result.message == {"role": "assistant", "content": "Hello from fake-gemini: hi"}
    assert result.finish_reason == "stop"
    assert result.model == UPSTREAM
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 7)


def test_completion_function_call_becomes_tool_calls(fake: FakeProvider) -> None:
    result = complete(fake, {**HELLO, "tools": [WEATHER_TOOL]})

    assert result.finish_reason == "tool_calls"
    assert result.message["content"] is None
    [call] = result.message["tool_calls"]
    sent_id = call["id"]
    assert sent_id.startswith("fc-")  # Gemini's own id, not one the adapter invented
    assert call == {
        "id": sent_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        "extra_content": {"google": {"thought_signature": signature_for(sent_id)}},
    }


def test_thoughts_count_as_output_and_finish_reasons_map() -> None:
    doc = {
        "candidates": [
            {
                "content": {
                    "parts": [{"text": "thinking...", "thought": True}, {"text": "cut"}],
                    "role": "model",
                },
                "finishReason": "MAX_TOKENS",
            },
            {"content": {"parts": [], "role": "model"}, "finishReason": "SAFETY", "index": 1},
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 20,
        },
        "modelVersion": "gemini-2.5-flash",
    }

    result = parse_response(doc)

    assert result.message == {
        "role": "assistant",
        "content": "cut",
        "reasoning_content": "thinking...",
    }
    assert result.finish_reason == "length"
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (
        10,
        25,
    )
    assert [c["finish_reason"] for c in result.extra["choices"]] == ["length", "content_filter"]


def test_prompt_blocked_is_a_clear_bad_request() -> None:
    doc = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9},
    }

    with pytest.raises(UpstreamError) as info:
        parse_response(doc)

    assert info.value.error_class == "bad_request"
    assert "PROHIBITED_CONTENT" in info.value.message


def test_stream_chunks_role_first_then_text_then_finish(fake: FakeProvider) -> None:
    chunks, result = stream(fake, HELLO)

    assert fake.requests[-1].path == f"/v1beta/models/{UPSTREAM}:streamGenerateContent?alt=sse"
    assert chunks[0].content is False
    assert chunks[0].choices == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    text = "".join(c.choices[0]["delta"].get("content", "") for c in chunks[1:])
    assert text == "Hello from fake-gemini: hi"
    assert len(chunks) >= 4 and all(c.content for c in chunks[1:])
    assert chunks[-1].choices[0]["finish_reason"] == "stop"
    assert chunks[-1].usage is not None
    assert result.usage == chunks[-1].usage
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 7)
    assert result.model == UPSTREAM


def test_stream_function_call_is_one_tool_calls_delta(fake: FakeProvider) -> None:
    chunks, _ = stream(fake, {**HELLO, "tools": [WEATHER_TOOL]})

    calls = [tc for c in chunks for tc in c.choices[0]["delta"].get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["id"].startswith("fc-")
    assert calls == [
        {
            "index": 0,
            "id": calls[0]["id"],
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            "extra_content": {"google": {"thought_signature": signature_for(calls[0]["id"])}},
        }
    ]
    assert chunks[-1].choices[0]["finish_reason"] == "tool_calls"


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_class", "code"),
    [
        (
            Fault("status", status=429, message="Resource has been exhausted"),
            "rate_limited",
            "RESOURCE_EXHAUSTED",
        ),
        (Fault("status", status=503, message=OVERLOADED_MESSAGE), "overloaded", "UNAVAILABLE"),
        (
            Fault("status", status=503, message="The service is currently unavailable."),
            "server_error",
            "UNAVAILABLE",
        ),
        (
            Fault("status", status=500, message="An internal error has occurred."),
            "server_error",
            "INTERNAL",
        ),
        (
            Fault(
                "status", status=504, message="Deadline expired before operation could complete."
            ),
            "timeout",
            "DEADLINE_EXCEEDED",
        ),
        (
            Fault("status", status=400, message=CONTEXT_LENGTH_MESSAGE),
            "context_length",
            "INVALID_ARGUMENT",
        ),
        (
            Fault("status", status=400, message="Invalid JSON payload received."),
            "bad_request",
            "INVALID_ARGUMENT",
        ),
        (
            Fault("status", status=404, message="models/x is not found for API version v1beta"),
            "not_found",
            "NOT_FOUND",
        ),
        (Fault("reset"), "connect_error", "connect_error"),
        (Fault("malformed"), "server_error", "upstream_malformed"),
    ],
)
def test_faults_are_classified(
    fake: FakeProvider, fault: Fault, error_class: str, code: str
) -> None:
    fake.push(fault)

    err, _ = failure(fake, HELLO)

    assert (err.error_class, err.code) == (error_class, code)
    if fault.kind == "status":
        assert err.status == fault.status
        assert err.message == fault.message


def test_rate_limit_retry_after_comes_from_retry_info(fake: FakeProvider) -> None:
    fake.push(Fault("status", status=429, message="quota"))

    err, _ = failure(fake, HELLO)

    assert err.retry_after == RETRY_DELAY_S


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_bad_or_missing_key_is_auth(fake: FakeProvider, key: str) -> None:
    err, _ = failure(fake, HELLO, key=key)

    assert err.error_class == "auth"
    assert err.status in (400, 403)


def test_no_headers_before_the_timeout_is_timeout(fake: FakeProvider) -> None:
    fake.push(Fault("delay_headers", delay=1.0))

    err, _ = failure(fake, HELLO, timeout_s=0.3)

    assert err.error_class == "timeout"


def test_error_status_on_a_stream_raises_before_the_stream(fake: FakeProvider) -> None:
    fake.push(Fault("status", status=429, message="quota"))

    err, chunks = failure(fake, HELLO, streamed=True)

    assert err.error_class == "rate_limited" and chunks == []


@pytest.mark.parametrize(
    ("kind", "error_class", "code"),
    [
        ("drop_mid_stream", "server_error", "stream_broken"),
        ("error_event", "overloaded", "stream_error_event"),
        ("no_terminator", "server_error", "stream_truncated"),
        ("malformed", "server_error", "upstream_malformed"),
    ],
)
def test_stream_faults_raise_while_iterating(
    fake: FakeProvider, kind: str, error_class: str, code: str
) -> None:
    fake.push(Fault(kind))

    err, chunks = failure(fake, HELLO, streamed=True)

    assert (err.error_class, err.code) == (error_class, code)
    if kind != "malformed":
        assert any(c.content for c in chunks)  # it failed mid-stream, after content
    assert all(c.choices[0]["finish_reason"] is None for c in chunks)


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (
            429,
            [{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}],
            "rate_limited",
        ),
        (403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}, "auth"),
        (401, {"error": {"code": 401, "message": "no", "status": "UNAUTHENTICATED"}}, "auth"),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "The input token count (2000000) exceeds the maximum",
                    "status": "INVALID_ARGUMENT",
                }
            },
            "context_length",
        ),
        (502, "<html>Bad Gateway</html>", "server_error"),
    ],
)
def test_map_error_reads_google_bodies(status: int, body: Any, error_class: str) -> None:
    assert map_error(status, body, None).error_class == error_class


def test_list_error_body_keeps_its_message() -> None:
    body = json.loads(
        '[{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]'
    )

    err = map_error(503, body, None)

    assert (err.error_class, err.message) == ("overloaded", "The model is overloaded.")


def test_thought_signatures_round_trip_through_tool_calls() -> None:
    doc = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                            "thoughtSignature": "c2lnLTE=",
                        },
                    ],
                },
                "finishReason": "STOP",
            }
        ]
    }

    call = parse_response(doc).message["tool_calls"][0]
    assert call["extra_content"] == {"google": {"thought_signature": "c2lnLTE="}}

    history = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "cold"},
        ]
    }
    sent = build_request(history, "gemini-3-pro-preview")["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == "c2lnLTE="


def test_gemini_3_history_without_signature_gets_the_documented_sentinel() -> None:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        for i in range(2)
    ]
    history = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": calls},
        ]
    }

    gemini3 = build_request(history, "gemini-3-flash-preview")["contents"][1]["parts"]
    gemini2 = build_request(history, "gemini-2.5-flash")["contents"][1]["parts"]

    # parallel calls: only the first carries a signature
    assert [p.get("thoughtSignature") for p in gemini3] == [
        "skip_thought_signature_validator",
        None,
    ]
    assert all("thoughtSignature" not in p for p in gemini2)


# --- through the gateway ---------------------------------------------------------------------


def test_two_turn_tool_conversation_through_the_gateway(gateway: Gateway, fakes: Fakes) -> None:
    """The official openai SDK as the client: Gemini's call id and thought signature reach it,
    and the second turn sends both back on the same part, with the result under the same id."""
    fakes.gemini.reset()
    client = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=gateway.key(name="gemini-tools"), max_retries=0
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]

    first = client.chat.completions.create(
        model="gemini-first", messages=messages, tools=[WEATHER_TOOL]
    )

    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    [call] = message.tool_calls
    assert call.id.startswith("fc-")
    assistant = message.model_dump(exclude_none=True)
    assert assistant["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": signature_for(call.id)}
    }
    messages += [assistant, {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'}]

    second = client.chat.completions.create(
        model="gemini-first", messages=messages, tools=[WEATHER_TOOL]
    )

    assert second.choices[0].message.content == "Hello from fake-gemini: Weather in Paris?"
    contents = fakes.gemini.requests[-1].body["contents"]
    assert contents[1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "id": call.id,
                        "name": "get_weather",
                        "args": {"city": "Paris"},
                    },
                    "thoughtSignature": signature_for(call.id),
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": call.id,
                        "name": "get_weather",
                        "response": {"content": {"temp": 18}},
                    }
                }
            ],
        },
    ]


def test_a_strict_schema_gemini_cannot_enforce_goes_to_the_next_candidate(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.gemini.reset()
    fakes.openai.reset()
    client = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=gateway.key(name="gemini-strict"), max_retries=0
    )
    strict_tool: Any = {
        "type": "function",
        "function": {
            "name": "lookup",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}},
                "required": ["sku"],
                "additionalProperties": False,
            },
        },
    }

    raw = client.chat.completions.with_raw_response.create(
        model="gemini-first", messages=[{"role": "user", "content": "Find ABC-1234"}],
        tools=[strict_tool],
    )  # fmt: skip

    assert raw.headers["x-switchyard-provider"] == "openai"
    assert fakes.gemini.requests == []  # skipped before anything was sent
    assert len(fakes.openai.requests) == 1
