"""runtime/frontends/responses*.py: OpenAI's Responses API over the chat-completions pipeline.

Proof from outside: every request below is one the official `openai` SDK's request types
(`openai.types.responses.response_create_params.ResponseCreateParamsBase`) allow, mostly in
the shapes of OpenAI's API reference examples (https://platform.openai.com/docs/api-reference/
responses/create: "Text input", "Image input", "Functions", "Structured outputs"); every
answer body is validated with `openai.types.responses.Response`, every streamed event with
the `ResponseStreamEvent` union, and the stream is fed through the SDK's own accumulator
(`openai.lib.streaming.responses.ResponseStreamState`). The last tests run the real SDK
client (`responses.create`, `.parse`, `.stream`) against the frontend over httpx's in-memory
transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.lib._parsing._responses import parse_response, type_to_text_format_param
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from runtime.adapters.base import Chunk, Completion, NativeEvent, RelayChunk
from runtime.errors import GatewayError
from runtime.frontends.base import Parsed
from runtime.frontends.responses import ResponsesFrontend
from runtime.records import RequestRecord
from runtime.request_check import MAX_DEPTH, MAX_MODEL_CHARS

FRONTEND = ResponsesFrontend()
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


def record() -> RequestRecord:
    rec = RequestRecord.begin("req_0abc", "test", "", "", endpoint="/v1/responses")
    rec.ts = 1_700_000_000.5
    return rec


def parse(**fields: Any) -> Parsed:
    body: dict[str, Any] = {"model": "chat", "input": "Hi"}
    body.update(fields)
    return FRONTEND.parse(orjson.dumps(body), record())


def refused(body: Any) -> GatewayError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(GatewayError) as info:
        FRONTEND.parse(raw, record())
    assert info.value.status == 400
    return info.value


# -- requests: translation ---------------------------------------------------------------


def test_string_input_and_instructions() -> None:
    parsed = parse(instructions="Talk like a pirate.", input="Are semicolons optional?")
    assert parsed.request == {
        "model": "chat",
        "messages": [
            {"role": "system", "content": "Talk like a pirate."},
            {"role": "user", "content": "Are semicolons optional?"},
        ],
    }
    assert parsed.native.api == "responses"
    assert parsed.native.body["instructions"] == "Talk like a pirate."
    assert parsed.builtin_tools == ()
    assert parsed.stream is False


def test_image_input_parts() -> None:
    # API reference "Image input".
    parsed = parse(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is in this image?"},
                    {
                        "type": "input_image",
                        "image_url": "https://upload.wikimedia.org/a.jpg",
                        "detail": "low",
                    },
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:;base64,AA=="},
                ],
            }
        ]
    )
    assert parsed.request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in this image?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://upload.wikimedia.org/a.jpg", "detail": "low"},
                },
                {"type": "file", "file": {"file_data": "data:;base64,AA==", "filename": "a.pdf"}},
            ],
        }
    ]


def test_a_tool_round_trip_becomes_chat_history() -> None:
    # What the Agents SDK sends for the turn after a tool call: the earlier output items
    # (reasoning, message, function calls) then the function outputs.
    parsed = parse(
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        input=[
            {"type": "message", "role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"location":"Paris"}',
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": '{"location":"Rome"}',
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "21C"}],
            },
        ],
    )
    assert parsed.request["messages"] == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
    ]
    assert parsed.request["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER["description"],
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    assert parsed.request["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    assert parsed.request["parallel_tool_calls"] is False


def test_function_calls_without_text_make_their_own_assistant_message() -> None:
    parsed = parse(
        input=[
            {"role": "user", "content": "x"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
        ]
    )
    assert parsed.request["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


def test_assistant_refusal_part() -> None:
    parsed = parse(
        input=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"role": "user", "content": "please"},
        ]
    )
    assert parsed.request["messages"][1] == {"role": "assistant", "content": None, "refusal": "No."}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, {"type": "text"}),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {
                "type": "json_schema",
                "name": "event",
                "description": "A calendar event",
                "schema": {"type": "object", "properties": {}},
                "strict": True,
            },
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "event",
                    "description": "A calendar event",
                    "schema": {"type": "object", "properties": {}},
                    "strict": True,
                },
            },
        ),
    ],
)
def test_text_format_is_response_format(fmt: dict[str, Any], expected: dict[str, Any]) -> None:
    assert parse(text={"format": fmt}).request["response_format"] == expected


def test_scalar_fields_map_to_their_chat_names() -> None:
    parsed = parse(
        reasoning={"effort": "high", "summary": "auto"},
        max_output_tokens=500.0,
        temperature=0.2,
        top_p=0.9,
        user="u1",
        metadata={"k": "v"},
        stream=True,
        stream_options={"include_obfuscation": False},
        store=True,
        truncation="auto",
        include=["reasoning.encrypted_content"],
        text={"verbosity": "low"},
        tool_choice="required",
    )
    req = parsed.request
    assert req["reasoning_effort"] == "high"
    assert req["max_completion_tokens"] == 500 and type(req["max_completion_tokens"]) is int
    assert (req["temperature"], req["top_p"], req["user"]) == (0.2, 0.9, "u1")
    assert req["metadata"] == {"k": "v"}
    assert req["stream"] is True and parsed.stream is True
    assert req["verbosity"] == "low"
    assert req["tool_choice"] == "required"
    for absent in ("store", "stream_options", "truncation", "include", "reasoning"):
        assert absent not in req  # OpenAI-only: passed through, not translated
    assert parsed.native.body["store"] is True


def test_builtin_tools_are_collected_by_type_and_left_out() -> None:
    parsed = parse(
        tools=[{"type": "web_search"}, WEATHER, {"type": "file_search", "vector_store_ids": []}],
        input=[
            {"role": "user", "content": "x"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}},
        ],
    )
    assert parsed.builtin_tools == ("web_search_call", "web_search", "file_search")
    assert [t["function"]["name"] for t in parsed.request["tools"]] == ["get_weather"]


def test_record_gets_model_and_stream_even_when_refused() -> None:
    rec = record()
    with pytest.raises(GatewayError):
        FRONTEND.parse(orjson.dumps({"model": "m" * 300, "input": 5, "stream": True}), rec)
    assert rec.requested_model is not None and rec.requested_model.endswith("...")
    assert len(rec.requested_model) < 100
    assert rec.stream is True


# -- requests: refusals ------------------------------------------------------------------


def _deep(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"a": value}
    return value


REFUSALS: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("model too long", {"model": "m" * (MAX_MODEL_CHARS + 1)}, "model", "at most 256"),
    ("input missing", {"input": None}, "input", "is required"),
    ("input wrong type", {"input": 5}, "input", "must be an array"),
    ("input empty", {"input": []}, "input", "must not be empty"),
    ("item not object", {"input": ["x"]}, "input[0]", "an input item"),
    ("item no type", {"input": [{"content": "x"}]}, "input[0].type", "is required"),
    ("item unknown", {"input": [{"type": "nope"}]}, "input[0].type", "not an input item"),
    ("bad role", {"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "one of"),
    ("no content", {"input": [{"role": "user"}]}, "input[0].content", "is required"),
    (
        "bad part",
        {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
        "input[0].content[0].type",
        "one of",
    ),
    (
        "text not string",
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]},
        "input[0].content[0].text",
        "must be a string",
    ),
    (
        "image by file id",
        {
            "input": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]},
            ]
        },
        "input[1].content[0].file_id",
        "serves no files",
    ),
    (
        "image without url",
        {"input": [{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}]},
        "input[0].content[0].image_url",
        "is required",
    ),
    (
        "image url not string",
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": {}}]}]},
        "input[0].content[0].image_url",
        "must be a string",
    ),
    (
        "image detail",
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "u", "detail": "max"}],
                }
            ]
        },
        "input[0].content[0].detail",
        "one of",
    ),
    (
        "file by url",
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "u"}]}]},
        "input[0].content[0].file_url",
        "serves no files",
    ),
    (
        "assistant input part",
        {"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}]},
        "input[0].content[0].type",
        "one of",
    ),
    (
        "call without call_id",
        {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
        "input[0].call_id",
        "must be a string",
    ),
    (
        "call arguments object",
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
        "input[0].arguments",
        "must be a string",
    ),
    (
        "output wrong",
        {"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]},
        "input[0].output",
        "a string or an array",
    ),
    (
        "item_reference",
        {"input": [{"type": "item_reference", "id": "msg_1"}]},
        "input[0]",
        "does not store responses",
    ),
    (
        "previous_response_id",
        {"previous_response_id": "resp_1"},
        "previous_response_id",
        "whole conversation",
    ),
    ("conversation", {"conversation": "conv_1"}, "conversation", "does not store"),
    ("prompt", {"prompt": {"id": "pmpt_1"}}, "prompt", "does not store"),
    ("background", {"background": True}, "background", "is not supported"),
    ("background type", {"background": "yes"}, "background", "a boolean"),
    ("instructions", {"instructions": ["x"]}, "instructions", "must be a string"),
    ("tools", {"tools": {}}, "tools", "must be an array"),
    ("tool no type", {"tools": [{"name": "f"}]}, "tools[0].type", "must be a string"),
    (
        "tool name",
        {"tools": [{"type": "function", "name": "a b"}]},
        "tools[0].name",
        "function name",
    ),
    (
        "tool params",
        {"tools": [{"type": "function", "name": "f", "parameters": []}]},
        "tools[0].parameters",
        "an object",
    ),
    (
        "tool strict",
        {"tools": [{"type": "function", "name": "f", "strict": "yes"}]},
        "tools[0].strict",
        "a boolean",
    ),
    ("tool_choice", {"tool_choice": "any"}, "tool_choice", "one of"),
    ("tool_choice name", {"tool_choice": {"type": "function"}}, "tool_choice.name", "a string"),
    (
        "allowed mode",
        {"tool_choice": {"type": "allowed_tools", "mode": "x", "tools": []}},
        "tool_choice.mode",
        "one of",
    ),
    ("parallel", {"parallel_tool_calls": 1}, "parallel_tool_calls", "a boolean"),
    ("store", {"store": "no"}, "store", "a boolean"),
    ("stream", {"stream": "true"}, "stream", "a boolean"),
    ("stream_options alone", {"stream_options": {}}, "stream_options", "only allowed"),
    ("text", {"text": "json"}, "text", "an object"),
    ("text format", {"text": {"format": {"type": "xml"}}}, "text.format.type", "one of"),
    (
        "schema name",
        {"text": {"format": {"type": "json_schema", "name": "a b", "schema": {}}}},
        "text.format.name",
        "function name",
    ),
    (
        "schema missing",
        {"text": {"format": {"type": "json_schema", "name": "a"}}},
        "text.format.schema",
        "is required",
    ),
    ("verbosity", {"text": {"verbosity": "loud"}}, "text.verbosity", "one of"),
    ("effort", {"reasoning": {"effort": "huge"}}, "reasoning.effort", "one of"),
    ("summary", {"reasoning": {"summary": "all"}}, "reasoning.summary", "one of"),
    ("max_output_tokens", {"max_output_tokens": 0}, "max_output_tokens", "from 1"),
    ("max_output fraction", {"max_output_tokens": 1.5}, "max_output_tokens", "not a fraction"),
    ("temperature", {"temperature": 3}, "temperature", "from 0 to 2"),
    ("top_p", {"top_p": "1"}, "top_p", "a number"),
    ("user", {"user": "u" * 300}, "user", "at most 256"),
    ("metadata", {"metadata": {"k": 1}}, "metadata.k", "a string"),
    ("truncation", {"truncation": "always"}, "truncation", "one of"),
    ("include", {"include": "x"}, "include", "an array"),
    ("top_logprobs", {"top_logprobs": 30}, "top_logprobs", "from 0 to 20"),
    ("too deep", {"metadata": _deep(MAX_DEPTH)}, None, "nests deeper than 64"),
]


@pytest.mark.parametrize(
    ("fields", "param", "text"),
    [pytest.param(f, p, t, id=name) for name, f, p, t in REFUSALS],
)
def test_refusals_name_the_field(fields: dict[str, Any], param: str | None, text: str) -> None:
    body: dict[str, Any] = {"model": "chat", "input": "Hi"}
    body.update(fields)
    err = refused(body)
    if param is not None:
        assert err.param == param
    else:
        assert err.param is not None and err.param.startswith("metadata")
    assert text in err.message
    assert err.code == "invalid_request"


def test_model_missing_is_refused() -> None:
    assert refused({"input": "x"}).param == "model"


def test_invalid_json_and_non_object() -> None:
    assert refused(b"{nope").code == "invalid_json"
    assert refused(b"[]").code == "invalid_request"


def test_error_body_is_openai_shape() -> None:
    err = refused({"model": "chat", "input": "x", "previous_response_id": "resp_1"})
    body = orjson.loads(FRONTEND.error_body(err))
    assert body["error"]["param"] == "previous_response_id"
    assert body["error"]["type"] == "invalid_request_error"
    # The SDK reads exactly these fields into its exception.
    assert set(body["error"]) == {"message", "type", "param", "code"}


# -- answers -----------------------------------------------------------------------------


def answered(parsed: Parsed, result: Completion, **usage: int) -> tuple[RequestRecord, Response]:
    rec = record()
    rec.upstream_model = "claude-x"
    rec.input_tokens = usage.get("input", 12)
    rec.output_tokens = usage.get("output", 30)
    rec.cached_input_tokens = usage.get("cached", 4)
    rec.reasoning_tokens = usage.get("reasoning", 5)
    raw = FRONTEND.completion(rec, parsed, result)
    return rec, Response.model_validate(orjson.loads(raw))


def test_text_answer() -> None:
    parsed = parse(instructions="Be brief.", temperature=0.5, metadata={"a": "b"})
    _, resp = answered(
        parsed,
        Completion(
            message={"role": "assistant", "content": "Hello there"},
            finish_reason="stop",
            usage=None,
        ),
    )
    assert resp.output_text == "Hello there"
    assert resp.id == "resp_0abc" and resp.object == "response"
    assert resp.created_at == 1_700_000_000
    assert resp.status == "completed" and resp.incomplete_details is None and resp.error is None
    assert resp.model == "claude-x"
    assert resp.instructions == "Be brief." and resp.temperature == 0.5
    assert resp.metadata == {"a": "b"}
    assert resp.store is False and resp.previous_response_id is None
    assert resp.tool_choice == "auto" and resp.tools == [] and resp.parallel_tool_calls is True
    [msg] = resp.output
    assert msg.type == "message" and msg.id == "msg_0abc" and msg.status == "completed"
    assert resp.usage is not None
    assert resp.usage.input_tokens == 12 and resp.usage.output_tokens == 30
    assert resp.usage.total_tokens == 42
    assert resp.usage.input_tokens_details.cached_tokens == 4
    assert resp.usage.output_tokens_details.reasoning_tokens == 5


def test_reasoning_and_tool_calls() -> None:
    parsed = parse(tools=[WEATHER])
    _, resp = answered(
        parsed,
        Completion(
            message={
                "role": "assistant",
                "content": None,
                "reasoning_content": "Need the weather.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Rome"}'},
                    },
                ],
            },
            finish_reason="tool_calls",
            usage=None,
        ),
    )
    kinds = [item.type for item in resp.output]
    assert kinds == ["reasoning", "function_call", "function_call"]
    reasoning = resp.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "Need the weather."
    calls = [item for item in resp.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("toolu_1", "get_weather", '{"location":"Paris"}'),
        ("toolu_2", "get_weather", '{"location":"Rome"}'),
    ]
    assert len({c.id for c in calls}) == 2
    assert resp.output_text == ""
    assert resp.tools[0].type == "function"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_cut_answers_are_incomplete(finish: str, reason: str) -> None:
    _, resp = answered(
        parse(max_output_tokens=5),
        Completion(
            message={"role": "assistant", "content": "Once"}, finish_reason=finish, usage=None
        ),
    )
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None and resp.incomplete_details.reason == reason
    assert resp.output[0].status == "incomplete"
    assert resp.max_output_tokens == 5


def test_refusal_answer() -> None:
    _, resp = answered(
        parse(),
        Completion(
            message={"role": "assistant", "content": None, "refusal": "I can't help."},
            finish_reason="stop",
            usage=None,
        ),
    )
    [msg] = resp.output
    assert msg.type == "message"
    assert [part.type for part in msg.content] == ["refusal"]


def test_passthrough_body_is_relayed_as_is() -> None:
    native = {"id": "resp_openai", "object": "response", "output": [], "x_future": 1}
    raw = FRONTEND.completion(
        record(), parse(), Completion(message={}, finish_reason=None, usage=None, native=native)
    )
    assert orjson.loads(raw) == native


def test_parse_with_a_pydantic_format() -> None:
    """`client.responses.parse(text_format=...)` parses `output_text` as JSON (the SDK's own
    parser, run here on the answer)."""

    class Event(BaseModel):
        name: str
        day: str

    fmt = type_to_text_format_param(Event)
    parsed = parse(text={"format": fmt})
    assert parsed.request["response_format"]["type"] == "json_schema"
    assert parsed.request["response_format"]["json_schema"]["strict"] is True
    _, resp = answered(
        parsed,
        Completion(
            message={"role": "assistant", "content": '{"name":"fair","day":"Friday"}'},
            finish_reason="stop",
            usage=None,
        ),
    )
    out = parse_response(text_format=Event, input_tools=None, response=resp)
    assert out.output_parsed == Event(name="fair", day="Friday")


# -- streams -----------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return Chunk(choices=[{"index": 0, "delta": delta, "finish_reason": finish}], content=True)


def relay(delta: dict[str, Any], finish: str | None = None) -> RelayChunk:
    data = orjson.dumps(
        {"id": "x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )
    return RelayChunk(data=data.decode(), content=True)


def split_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        out.append((name[7:], orjson.loads(data[6:])))
    return out


def stream(parsed: Parsed, chunks: list[Any], rec: RequestRecord) -> tuple[bytes, int]:
    enc = FRONTEND.encoder(rec, parsed, False)
    raw = enc.open()
    for c in chunks:
        raw += enc.chunk(c)
    rec.input_tokens, rec.output_tokens = 12, 30
    rec.cached_input_tokens, rec.reasoning_tokens = 4, 5
    raw += enc.close(rec)
    return raw, enc.chars


TOOL_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Need "}),
    chunk({"reasoning_content": "weather."}),
    chunk({"content": "Checking"}),
    relay({"content": " now."}),
    chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}}
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}),
    relay({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "get_weather"}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, "tool_calls"),
]
TOOL_MESSAGE = {
    "role": "assistant",
    "content": "Checking now.",
    "reasoning_content": "Need weather.",
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"},
        },
    ],
}


@pytest.mark.parametrize(
    ("chunks", "message", "finish"),
    [
        pytest.param(TOOL_STREAM, TOOL_MESSAGE, "tool_calls", id="reasoning-text-tools"),
        pytest.param(
            [chunk({"content": "Hel"}), relay({"content": "lo"}, "length")],
            {"role": "assistant", "content": "Hello"},
            "length",
            id="incomplete",
        ),
        pytest.param(
            [chunk({"role": "assistant"}), chunk({}, "stop")],
            {"role": "assistant", "content": ""},
            "stop",
            id="empty",
        ),
        pytest.param(
            [chunk({"refusal": "I can't"}), chunk({"refusal": " help."}, "stop")],
            {"role": "assistant", "content": None, "refusal": "I can't help."},
            "stop",
            id="refusal",
        ),
    ],
)
def test_stream_matches_the_answer(chunks: list[Any], message: dict[str, Any], finish: str) -> None:
    parsed = parse(tools=[WEATHER], stream=True)
    rec = record()
    rec.upstream_model = "claude-x"
    raw, chars = stream(parsed, chunks, rec)
    events = split_events(raw)
    # Every event is one of the SDK's stream events; numbered from 0 without gaps.
    typed = [EVENTS.validate_python(doc) for _, doc in events]
    assert [name for name, _ in events] == [e.type for e in typed]
    assert [e.sequence_number for e in typed] == list(range(len(typed)))
    assert typed[0].type == "response.created" and typed[0].response.status == "in_progress"
    assert typed[1].type == "response.in_progress"
    # The SDK's accumulator takes the whole stream and ends with the non-streamed answer.
    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=[WEATHER], text_format=openai.omit
    )  # type: ignore[list-item]
    for event in typed:
        state.handle_event(event)
    final = state._completed_response
    if finish == "length":
        # OpenAI ends a cut answer with `response.incomplete`, which the SDK hands over as is
        # (its `get_final_response` wants `response.completed`, against OpenAI too).
        assert final is None and typed[-1].type == "response.incomplete"
        final = parse_response(text_format=openai.omit, input_tools=[], response=typed[-1].response)
    assert final is not None
    _, answer = answered(parsed, Completion(message=message, finish_reason=finish, usage=None))
    expected = parse_response(text_format=openai.omit, input_tools=[WEATHER], response=answer)  # type: ignore[list-item]
    assert final.model_dump(exclude={"output"}) == expected.model_dump(exclude={"output"})
    assert [item.model_dump() for item in final.output] == [
        item.model_dump() for item in expected.output
    ]
    assert final.output_text == expected.output_text
    # The snapshot built from the deltas alone has the same text.
    snapshot = state._ResponseStreamState__current_snapshot  # type: ignore[attr-defined]
    texts = [
        part.text
        for item in snapshot.output
        if item.type == "message"
        for part in item.content
        if part.type == "output_text"
    ]
    assert "".join(texts) == expected.output_text
    expected_chars = sum(
        len(c.get("delta", {}).get(k) or "")
        for ch in chunks
        for c in (ch.choices or orjson.loads(ch.data)["choices"])
        for k in ("content", "reasoning_content", "refusal")
    ) + sum(len(tc["function"]["arguments"]) for tc in message.get("tool_calls", []))
    assert chars == expected_chars


def test_stream_event_order_for_a_message() -> None:
    raw, _ = stream(parse(stream=True), [chunk({"content": "Hi"}), chunk({}, "stop")], record())
    assert [name for name, _ in split_events(raw)] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_stream_fail_is_an_error_event_after_the_last_number() -> None:
    enc = FRONTEND.encoder(record(), parse(stream=True), False)
    raw = enc.open() + enc.chunk(chunk({"content": "Hi"}))
    raw += enc.fail("upstream_error", "the upstream broke")
    name, doc = split_events(raw)[-1]
    event = EVENTS.validate_python(doc)
    assert name == "error" and event.type == "error"
    assert event.sequence_number == len(split_events(raw)) - 1
    assert (event.code, event.message) == ("upstream_error", "the upstream broke")


def test_native_stream_is_relayed() -> None:
    enc = FRONTEND.encoder(record(), parse(stream=True), True)
    assert enc.open() == b""
    data = '{"type":"response.output_text.delta","sequence_number":7,"delta":"Hi"}'
    ev = NativeEvent(
        event="response.output_text.delta", data=data, doc=orjson.loads(data), content=True, chars=2
    )
    assert enc.chunk(ev) == b"event: response.output_text.delta\ndata: " + data.encode() + b"\n\n"
    assert enc.chars == 2
    assert enc.close(record()) == b""
    name, doc = split_events(enc.fail("upstream_timeout", "timed out"))[0]
    assert name == "error" and doc["sequence_number"] == 8


# -- the official client, in memory ------------------------------------------------------


Script = Callable[[Parsed], Completion | list[Any]]


def handler(script: Script, fail_after: bool = False) -> Callable[[httpx.Request], httpx.Response]:
    """The gateway's part, in memory: the frontend parses the request, `script` gives the
    candidate's answer (a Completion, or stream chunks), the frontend renders it."""
    served = iter(range(1, 1000))

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/responses"
        rec = RequestRecord.begin(f"req_{next(served)}", "test", "", "")
        rec.upstream_model = "mock-1"
        try:
            parsed = FRONTEND.parse(request.content, rec)
        except GatewayError as exc:
            return httpx.Response(exc.status, content=FRONTEND.error_body(exc))
        answer = script(parsed)
        rec.input_tokens, rec.output_tokens = 3, 4
        if isinstance(answer, Completion):
            return httpx.Response(200, content=FRONTEND.completion(rec, parsed, answer))
        enc = FRONTEND.encoder(rec, parsed, False)
        raw = enc.open() + b"".join(enc.chunk(c) for c in answer)
        raw += enc.fail("upstream_error", "the upstream broke") if fail_after else enc.close(rec)
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    return handle


def client(script: Script, fail_after: bool = False) -> openai.OpenAI:
    """An openai SDK client whose requests the frontend answers in memory."""
    return openai.OpenAI(
        api_key="test-key",
        base_url="http://127.0.0.1/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler(script, fail_after))),
        max_retries=0,
    )


def text_answer(text: str) -> Script:
    def script(parsed: Parsed) -> Completion | list[Any]:
        if parsed.stream:
            return [chunk({"content": text[:2]}), chunk({"content": text[2:]}, "stop")]
        return Completion(
            message={"role": "assistant", "content": text}, finish_reason="stop", usage=None
        )

    return script


def test_sdk_create_plain_and_streamed() -> None:
    c = client(text_answer("Hello!"))
    resp = c.responses.create(model="chat", input="Hi", instructions="x")
    assert resp.output_text == "Hello!"
    assert resp.usage is not None and resp.usage.total_tokens == 7
    events = list(c.responses.create(model="chat", input="Hi", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello!"
    with c.responses.stream(model="chat", input="Hi") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == "Hello!" and final.output_text == "Hello!"


def test_sdk_parse_and_stream_with_a_format() -> None:
    class City(BaseModel):
        name: str

    c = client(text_answer('{"name":"Paris"}'))
    out = c.responses.parse(model="chat", input="Capital of France?", text_format=City)
    assert out.output_parsed == City(name="Paris")
    with c.responses.stream(model="chat", input="Capital?", text_format=City) as s:
        final = s.get_final_response()
    assert final.output_parsed == City(name="Paris")


def test_sdk_tool_call_stream() -> None:
    def script(parsed: Parsed) -> Completion | list[Any]:
        assert parsed.request["tools"][0]["function"]["name"] == "get_weather"
        return TOOL_STREAM

    with client(script).responses.stream(model="chat", input="Weather?", tools=[WEATHER]) as s:  # type: ignore[list-item]
        final = s.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.arguments) for c in calls] == [
        ("call_1", '{"location":"Paris"}'),
        ("call_2", "{}"),
    ]


def test_sdk_raises_on_the_error_event() -> None:
    c = client(text_answer("Hello!"), fail_after=True)
    with pytest.raises(openai.APIError, match="the upstream broke"):
        list(c.responses.create(model="chat", input="Hi", stream=True))
    with (
        pytest.raises(openai.APIError, match="the upstream broke"),
        c.responses.stream(model="chat", input="Hi") as s,
    ):
        list(s)


def test_sdk_sees_a_refusal_as_bad_request() -> None:
    c = client(text_answer("x"))
    with pytest.raises(openai.BadRequestError) as info:
        c.responses.create(model="chat", input="Hi", previous_response_id="resp_1")
    assert info.value.param == "previous_response_id"


def weather_agent_script(parsed: Parsed) -> Completion | list[Any]:
    """Call `weather` first; once its output is in the history, answer with it."""
    last = parsed.request["messages"][-1]
    if last["role"] == "tool":
        text = "It is " + last["content"]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        delta: dict[str, Any] = {"content": text}
        finish = "stop"
    else:
        call = {"name": "weather", "arguments": '{"city":"Paris"}'}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_9", "type": "function", "function": call}],
        }
        delta = {"tool_calls": [{"index": 0, "id": "call_9", "function": call}]}
        finish = "tool_calls"
    if parsed.stream:
        return [chunk(delta, finish)]
    return Completion(message=message, finish_reason=finish, usage=None)


def test_agents_sdk_default_mode_with_a_tool() -> None:
    """The OpenAI Agents SDK in its default mode (the Responses API), run and streamed: it
    sends the whole history in `input` each turn, which the frontend translates."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    seen: list[Parsed] = []

    def script(parsed: Parsed) -> Completion | list[Any]:
        seen.append(parsed)
        return weather_agent_script(parsed)

    @agents.function_tool
    def weather(city: str) -> str:
        """The weather of a city."""
        return "sunny in " + city

    sdk = openai.AsyncOpenAI(
        api_key="test-key",
        base_url="http://127.0.0.1/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler(script))),
        max_retries=0,
    )
    agent = agents.Agent(
        name="a",
        instructions="Help.",
        tools=[weather],
        model=agents.OpenAIResponsesModel(model="chat", openai_client=sdk),
    )

    async def run_both() -> tuple[Any, Any]:
        result = await agents.Runner.run(agent, "Weather in Paris?")
        streamed = agents.Runner.run_streamed(agent, "Weather in Paris?")
        async for _ in streamed.stream_events():
            pass
        return result, streamed

    result, streamed = asyncio.run(run_both())
    assert result.final_output == "It is sunny in Paris"
    assert seen[1].request["messages"][-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny in Paris"},
    ]
    assert streamed.final_output == "It is sunny in Paris"
    assert [p.stream for p in seen] == [False, False, True, True]


def test_langchain_use_responses_api() -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        model="chat",
        api_key="test-key",
        base_url="http://127.0.0.1/v1",
        use_responses_api=True,
        http_client=httpx.Client(transport=httpx.MockTransport(handler(text_answer("Hi there")))),
        max_retries=0,
    )
    message = llm.invoke("hello")
    assert message.text == "Hi there"
    assert message.usage_metadata is not None and message.usage_metadata["total_tokens"] == 7
    assert "".join(c.text for c in llm.stream("hello")) == "Hi there"
