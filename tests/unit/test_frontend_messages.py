"""The Anthropic Messages API frontend (issue 13): requests checked and translated, answers
and streams in Anthropic's shape, proven with the official `anthropic` SDK's own types and
clients (`Message.model_validate`, `RawMessageStreamEvent`, its stream accumulator, and the
SDK itself over an in-memory httpx transport)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import anthropic
import httpx2 as httpx  # the HTTP library the anthropic SDK 2.x runs on
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

from runtime import request_check
from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.anthropic_request import build_request
from runtime.adapters.base import (
    Call,
    Chunk,
    Completion,
    NativeEvent,
    NativeRequest,
    RelayChunk,
)
from runtime.adapters.mock_transport import MockResponse, MockTransport, sse
from runtime.config import ModelConfig
from runtime.errors import GatewayError, UpstreamError
from runtime.frontends.base import Frontend, Parsed
from runtime.frontends.messages import (
    COUNT_TOKENS_ESTIMATE_HEADER,
    MessagesEncoder,
    MessagesFrontend,
)
from runtime.records import RequestRecord
from tests.conformance.matrix import provider_config

FRONTEND = MessagesFrontend()
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
PNG = "iVBORw0KGgo="


def record(**overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": "req_abc123",
        "ts": 0.0,
        "environment": "test",
        "key_id": "k1",
        "org": "acme",
        "requested_model": None,
        "route": None,
        "provider": "openai",
        "upstream_model": "gpt-up",
        "status": 0,
        "error_code": None,
        "latency_ms": 0.0,
        "ttfb_ms": None,
        "input_tokens": None,
        "output_tokens": None,
        "usage_estimated": False,
        "cost_usd": None,
        "stream": False,
        "attempts": [],
        "fell_back": False,
        "broke_after_commit": False,
        "skipped": [],
        "price_table_hash": "p",
        "config_hash": "c",
    }
    values.update(overrides)
    return RequestRecord(**values)


def body(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": "claude-route",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }
    doc.update(fields)
    return doc


def parse(doc: Any, rec: RequestRecord | None = None) -> Parsed:
    return FRONTEND.parse(orjson.dumps(doc), rec or record())


def refused(doc: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(doc)
    assert info.value.status == 400
    return info.value


def test_it_is_a_frontend() -> None:
    frontend: Frontend = FRONTEND
    assert (frontend.endpoint, frontend.api) == ("/v1/messages", "messages")


# --- parse: the 400 matrix --------------------------------------------------------------

USER = {"role": "user", "content": "hi"}


def with_block(block: Any, role: str = "user") -> dict[str, Any]:
    return body(messages=[USER, {"role": "assistant", "content": "ok"},
                          {"role": role, "content": [block]}])  # fmt: skip


B = "messages[2].content[0]"  # the block `with_block` puts in

INVALID: list[tuple[Any, str | None]] = [
    ({"model": "r", "messages": [USER]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [USER]}, "model"),
    ({"model": "r", "max_tokens": 5}, "messages"),
    (body(model="x" * 257), "model"),
    (body(model=5), "model"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens="100"), "max_tokens"),
    (body(max_tokens=10.5), "max_tokens"),
    (body(messages=[]), "messages"),
    (body(messages=["hi"]), "messages[0]"),
    (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
    (body(messages=[{"role": "user"}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (with_block({"type": "tool_use", "id": "t", "name": "f", "input": {}}), B + ".type"),
    (with_block({"type": "thinking", "thinking": "x", "signature": "s"}), B + ".type"),
    (with_block({"type": "tool_result", "tool_use_id": "t"}, "assistant"), B + ".type"),
    (with_block({"type": "text"}), B + ".text"),
    (with_block({"type": "text", "text": "x", "cache_control": {"type": "forever"}}),
     B + ".cache_control.type"),
    (with_block({"type": "image",
                 "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}),
     B + ".source.media_type"),
    (with_block({"type": "image", "source": {"type": "url", "url": "ftp://x"}}),
     B + ".source.url"),
    (with_block({"type": "image", "source": {"type": "file", "file_id": "f"}}),
     B + ".source"),
    (with_block({"type": "image"}), B + ".source"),
    (with_block({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}),
     B + ".source"),
    (with_block({"type": "tool_result", "tool_use_id": 7}), B + ".tool_use_id"),
    (with_block({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}),
     B + ".is_error"),
    (with_block({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "video"}]}),
     B + ".content[0].type"),
    (with_block({"type": "tool_use", "id": "t", "name": "f", "input": "{}"}, "assistant"),
     B + ".input"),
    (with_block({"type": "thinking", "thinking": "x"}, "assistant"), B + ".signature"),
    (with_block({"type": "redacted_thinking"}, "assistant"), B + ".data"),
    (body(system=5), "system"),
    (body(system=[{"type": "image"}]), "system[0].type"),
    (body(temperature=1.5), "temperature"),
    (body(top_p=-0.1), "top_p"),
    (body(top_k=-1), "top_k"),
    (body(stop_sequences="END"), "stop_sequences"),
    (body(stop_sequences=["a", 1]), "stop_sequences[1]"),
    (body(stream="true"), "stream"),
    (body(metadata={"user_id": 5}), "metadata.user_id"),
    (body(tools=[{"name": "bad name", "input_schema": {"type": "object"}}]), "tools[0].name"),
    (body(tools=[{"name": "f"}]), "tools[0].input_schema"),
    (body(tools=[{"name": "f", "input_schema": {}, "strict": 1}]), "tools[0].strict"),
    (body(tool_choice={"type": "required"}), "tool_choice.type"),
    (body(tool_choice={"type": "tool"}), "tool_choice.name"),
    (body(tool_choice={"type": "auto", "disable_parallel_tool_use": "no"}),
     "tool_choice.disable_parallel_tool_use"),
    (body(thinking={"type": "on"}), "thinking.type"),
    (body(thinking={"type": "enabled"}), "thinking.budget_tokens"),
    (body(thinking={"type": "enabled", "budget_tokens": 512}), "thinking.budget_tokens"),
    (body(thinking={"type": "enabled", "budget_tokens": 2048}), "thinking.budget_tokens"),
    (body(thinking={"type": "adaptive", "display": "full"}), "thinking.display"),
    (body(output_config={"effort": "extreme"}), "output_config.effort"),
    (body(output_config={"format": {"type": "json_schema"}}), "output_config.format.schema"),
    (body(service_tier="priority"), "service_tier"),
    (body(cache_control={"type": "ephemeral", "ttl": "2h"}), "cache_control.ttl"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "param"), INVALID, ids=[p or "body" for _, p in INVALID])
def test_an_invalid_field_is_a_400_naming_its_path(doc: Any, param: str) -> None:
    exc = refused(doc)
    assert exc.param == param
    assert f"`{param}`" in exc.message


def test_bodies_that_are_not_a_json_object_are_400() -> None:
    for raw in (b"{", b"[1]", b'"x"'):
        with pytest.raises(GatewayError) as info:
            FRONTEND.parse(raw, record())
        assert info.value.status == 400


def test_nesting_deeper_than_64_levels_is_refused_at_its_path() -> None:
    deep: Any = {}
    for _ in range(70):
        deep = {"a": deep}
    exc = refused(body(tools=[{"name": "f", "input_schema": {"type": "object", "x": deep}}]))
    assert exc.param is not None and exc.param.startswith("tools[0].input_schema.x.a")
    exc = refused(body(beta_thing=deep))
    assert exc.param is not None and exc.param.startswith("beta_thing.a")


def test_the_record_gets_the_model_and_stream_even_when_refused() -> None:
    rec = record()
    with pytest.raises(GatewayError):
        FRONTEND.parse(orjson.dumps({"model": "m" * 300, "stream": True, "messages": []}), rec)
    assert rec.requested_model == "m" * 64 + "..."
    assert rec.stream is True


def test_every_documented_request_parses() -> None:
    """The examples of Anthropic's API reference and SDK docstrings (MessageCreateParams)."""
    examples = [
        body(),
        body(messages=[{"role": "user", "content": "Hello there."},
                       {"role": "assistant", "content": "Hi, I'm Claude. How can I help you?"},
                       {"role": "user", "content": "Can you explain LLMs in plain English?"}]),
        body(messages=[{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}]),
        body(messages=[{"role": "user", "content":
                        "What's the Greek name for Sun? (A) Sol (B) Helios (C) Sun"},
                       {"role": "assistant", "content": "The best answer is ("}]),
        body(system=[{"type": "text", "text": "You are terse.",
                      "cache_control": {"type": "ephemeral", "ttl": "1h"}}]),
        body(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]),
        body(context_management={"edits": []}),  # a beta field sent as extra_body
    ]  # fmt: skip
    for doc in examples:
        parsed = parse(doc)
        assert parsed.native == NativeRequest("messages", doc)


def test_optional_fields_sent_as_null_are_not_set() -> None:
    doc = body(system=None, cache_control=None, inference_geo=None, speed=None, tools=None,
               thinking=None, metadata={"user_id": None})  # fmt: skip
    request = parse(doc).request
    assert request == {"model": "claude-route", "max_tokens": 1024,
                       "messages": [{"role": "user", "content": "Hello, Claude"}]}  # fmt: skip


def test_integral_floats_are_taken_as_integers() -> None:
    doc = body(max_tokens=4096.0, thinking={"type": "enabled", "budget_tokens": 2048.0})
    native = parse(doc).native.body
    assert (native["max_tokens"], native["thinking"]["budget_tokens"]) == (4096, 2048)
    assert type(native["max_tokens"]) is int and type(native["thinking"]["budget_tokens"]) is int


# --- translation ------------------------------------------------------------------------


def test_a_full_conversation_translates_to_a_valid_chat_request() -> None:
    doc = body(
        system="Be brief.",
        stream=True,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        tools=[
            {"name": "get_weather", "description": "Weather", "strict": True,
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "bash_20250124", "name": "bash"},
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Look it up.", "signature": "sig-1"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                 "content": [{"type": "text", "text": "timeout"},
                             {"type": "image", "source": {"type": "url", "url": "https://x.test/s.png"}}]},
                {"type": "text", "text": "Try again"},
            ]},
        ],
    )  # fmt: skip
    parsed = parse(doc)
    assert parsed.builtin_tools == ("bash_20250124",)
    assert parsed.stream is True
    assert parsed.request == {
        "model": "claude-route",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
            ]},
            {"role": "assistant", "content": "Checking.",
             "tool_calls": [{"id": "toolu_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}],
             "reasoning_content": "Look it up.",
             "thinking_blocks": [{"type": "thinking", "thinking": "Look it up.",
                                  "signature": "sig-1"}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: timeout"},
            {"role": "user", "content": [  # in the order of the blocks
                {"type": "text", "text": "(images of tool result toolu_1)"},
                {"type": "image_url", "image_url": {"url": "https://x.test/s.png"}},
                {"type": "text", "text": "Try again"},
            ]},
        ],
        "max_tokens": 1024,
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": True,
        "stop": ["END"],
        "user": "u-1",
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather", "strict": True,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }  # fmt: skip
    # the chat path's own validator takes the translation as it is
    request_check.check(copy.deepcopy(parsed.request))
    # and the native body is the client's, top_k and the server tool included
    assert parsed.native.body["top_k"] == 40
    assert parsed.native.body is not parsed.request


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice_maps(choice: dict[str, Any], expected: Any) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    assert parse(body(tools=tools, tool_choice=choice)).request["tool_choice"] == expected


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 2048}, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, "medium"),
        ({"type": "enabled", "budget_tokens": 8192}, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, "high"),
        ({"type": "enabled", "budget_tokens": 60000}, "high"),
        ({"type": "adaptive"}, "medium"),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_maps_to_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    request = parse(body(max_tokens=64000, thinking=thinking)).request
    assert request.get("reasoning_effort") == effort


def test_adaptive_thinking_takes_the_output_config_effort() -> None:
    doc = body(thinking={"type": "adaptive"}, output_config={"effort": "low"})
    assert parse(doc).request["reasoning_effort"] == "low"


def test_the_adapter_budgets_survive_the_round_trip() -> None:
    """reasoning_effort -> Anthropic's budget (the adapter) -> reasoning_effort (here)."""
    from runtime.adapters.anthropic_request import THINKING_BUDGETS

    for effort in ("low", "medium", "high"):
        thinking = {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}
        doc = body(max_tokens=64000, thinking=thinking)
        assert parse(doc).request["reasoning_effort"] == effort


def test_structured_output_becomes_a_strict_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    doc = body(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert parse(doc).request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def test_documents_become_file_parts() -> None:
    doc = body(messages=[{"role": "user", "content": [
        {"type": "document", "title": "r.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}},
    ]}])  # fmt: skip
    parts = parse(doc).request["messages"][0]["content"]
    assert parts == [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=",
                                  "filename": "r.pdf"}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk=",
                                  "filename": "document.txt"}},
    ]  # fmt: skip


def test_server_tool_blocks_in_the_history_need_a_native_candidate() -> None:
    doc = with_block(
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
         "input": {"query": "x"}}, "assistant")  # fmt: skip
    assert parse(doc).builtin_tools == ("server_tool_use",)


def test_system_messages_in_the_list_and_cached_system_blocks() -> None:
    cache = {"type": "ephemeral"}
    doc = body(
        system=[
            {"type": "text", "text": "A", "cache_control": cache},
            {"type": "text", "text": "B"},
        ],
        messages=[{"role": "system", "content": "C"}, USER],
    )
    messages = parse(doc).request["messages"]
    assert messages[:2] == [
        {"role": "system", "content": [{"type": "text", "text": "A", "cache_control": cache},
                                       {"type": "text", "text": "B"}]},
        {"role": "system", "content": "C"},
    ]  # fmt: skip


def test_the_translation_reaches_anthropic_again_as_the_same_conversation() -> None:
    """Messages -> chat (here) -> Messages (the Anthropic adapter): the turns, the signed
    thinking and the tool round trip come back as the client sent them."""
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "sig-1"},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
    ]  # fmt: skip
    doc = body(messages=turns, tools=[{"name": "w", "input_schema": {"type": "object"}}])
    model = ModelConfig("claude", "claude-sonnet-4-5", 200_000, 8192, frozenset(), None)
    sent = build_request(Call(parse(doc).request, model, {}, "r"))
    assert sent["messages"] == turns


# --- completion -------------------------------------------------------------------------


def answered(**overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "input_tokens": 1000,
        "output_tokens": 50,
        "cached_input_tokens": 600,
        "cache_write_tokens": 100,
        "cache_write_1h_tokens": 50,
    }
    values.update(overrides)
    return record(**values)


MESSAGE = {
    "role": "assistant",
    "content": "Let me check.",
    "reasoning_content": "The user wants weather.",
    "thinking_blocks": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig-9"}
    ],
    "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
    ],
}  # fmt: skip


def translated(message: dict[str, Any], finish: str, doc: dict[str, Any] | None = None) -> Any:
    parsed = parse(doc or body())
    raw = FRONTEND.completion(answered(), parsed, Completion(message, finish, None))
    return orjson.loads(raw)


def test_a_translated_answer_is_an_anthropic_message() -> None:
    out = translated(MESSAGE, "tool_calls")
    Message.model_validate(out)
    assert out == {
        "id": "msg_abc123",
        "type": "message",
        "role": "assistant",
        "model": "gpt-up",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig-9"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        # input_tokens excludes the 600 read and the 150 written
        "usage": {"input_tokens": 250, "cache_creation_input_tokens": 150,
                  "cache_read_input_tokens": 600, "output_tokens": 50},
    }  # fmt: skip


def test_unsigned_reasoning_is_a_thinking_block_with_an_empty_signature() -> None:
    out = translated({"role": "assistant", "content": "4", "reasoning_content": "2+2"}, "stop")
    Message.model_validate(out)
    assert out["content"][0] == {"type": "thinking", "thinking": "2+2", "signature": ""}


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
     ("content_filter", "refusal"), (None, "end_turn")],
)  # fmt: skip
def test_finish_reasons_map_to_stop_reasons(finish: str | None, stop_reason: str) -> None:
    out = translated({"role": "assistant", "content": "x"}, finish)  # type: ignore[arg-type]
    assert out["stop_reason"] == stop_reason


def test_a_text_ending_in_a_stop_sequence_is_stop_sequence() -> None:
    out = translated({"role": "assistant", "content": "one two END"}, "stop",
                     body(stop_sequences=["STOP", "END"]))  # fmt: skip
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")


def test_a_refusal_is_text_with_stop_reason_refusal() -> None:
    out = translated({"role": "assistant", "content": None, "refusal": "I can't."}, "stop")
    Message.model_validate(out)
    assert (out["content"], out["stop_reason"]) == (
        [{"type": "text", "text": "I can't."}],
        "refusal",
    )


def test_a_passthrough_answer_is_relayed_as_sent() -> None:
    native = {"id": "msg_01XF", "type": "message", "role": "assistant", "model": "claude-x",
              "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
              "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
              "container": None}  # fmt: skip
    done = Completion({}, "stop", None, native=native)
    assert orjson.loads(FRONTEND.completion(answered(), parse(body()), done)) == native


# --- streams ----------------------------------------------------------------------------


def events_of(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        out.append((name[7:], orjson.loads(data[6:])))
    return out


def run_stream(chunks: list[Any], rec: RequestRecord, doc: dict[str, Any] | None = None) -> bytes:
    parsed = parse(doc or body(stream=True))
    enc = FRONTEND.encoder(rec, parsed, native=False)
    raw = enc.open() + b"".join(enc.chunk(c) for c in chunks) + enc.close(rec)
    return raw


def accumulate(raw: bytes) -> Message:
    """Every event validated with the SDK's type, and the stream accumulated as its
    MessageStream does."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for name, doc in events_of(raw):
        event = EVENTS.validate_python(doc)
        assert event.type == name
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "finish_reason": finish}]


STREAM = [
    Chunk(choice({"role": "assistant", "content": ""}), content=False),
    Chunk(choice({"reasoning_content": "The user "}), content=False, reasoning=True),
    Chunk(choice({"reasoning_content": "wants weather."}), content=False, reasoning=True),
    Chunk(choice({"thinking_blocks": MESSAGE["thinking_blocks"]}), content=False, reasoning=True),
    Chunk(choice({"content": "Let me "}), content=True),
    RelayChunk('{"choices":[{"index":0,"delta":{"content":"check."}}]}', content=True),
    Chunk(choice({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": ""}}]}),
          content=True),
    Chunk(choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
          content=True),
    RelayChunk('{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
               '"function":{"arguments":"\\"Paris\\"}"}}]}}]}', content=True),
    Chunk(choice({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                  "function": {"name": "now", "arguments": ""}}]}), content=True),
    Chunk(choice({}, "tool_calls"), content=False),
]  # fmt: skip


def test_a_translated_stream_accumulates_to_the_non_streamed_message() -> None:
    rec = answered()
    streamed = accumulate(run_stream(STREAM, rec))
    whole = Message.model_validate(translated(MESSAGE, "tool_calls"))
    assert streamed.model_dump() == whole.model_dump()


def test_a_translated_stream_has_anthropics_event_sequence() -> None:
    names = [name for name, _ in events_of(run_stream(STREAM, answered()))]
    assert names == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop",  # thinking, thinking, signature
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip


def test_the_encoder_counts_output_characters() -> None:
    parsed = parse(body(stream=True))
    enc = FRONTEND.encoder(answered(), parsed, native=False)
    enc.open()
    for c in STREAM:
        enc.chunk(c)
    expected = len("The user wants weather.") + len("Let me check.")
    expected += len("get_weather") + len('{"city": "Paris"}') + len("now")
    assert enc.chars == expected


def test_a_whole_thinking_block_and_a_redacted_one_stream_as_blocks() -> None:
    chunks = [
        Chunk(choice({"thinking_blocks": [{"type": "thinking", "thinking": "Hm.",
                                           "signature": "s1"}]}), content=False),
        Chunk(choice({"thinking_blocks": [{"type": "redacted_thinking", "data": "ZW5j"}]}),
              content=False),
        Chunk(choice({"content": "4"}, "stop"), content=True),
    ]  # fmt: skip
    message = accumulate(run_stream(chunks, answered()))
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "thinking", "thinking": "Hm.", "signature": "s1"},
        {"type": "redacted_thinking", "data": "ZW5j"},
        {"type": "text", "text": "4"},
    ]
    assert message.stop_reason == "end_turn"


def test_an_empty_answer_streams_a_message_without_content() -> None:
    message = accumulate(run_stream([Chunk(choice({}, "length"), content=False)], answered()))
    assert (message.content, message.stop_reason) == ([], "max_tokens")


def test_a_streamed_stop_sequence_is_recognised() -> None:
    chunks = [
        Chunk(choice({"content": "a E"}), True),
        Chunk(choice({"content": "ND"}, "stop"), True),
    ]
    message = accumulate(run_stream(chunks, answered(), body(stream=True, stop_sequences=["END"])))
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


ANTHROPIC_MODEL = ModelConfig("claude", "claude-up", 200_000, 8192, frozenset({"reasoning"}), None)

# The event sequence of Anthropic's streaming docs (extended thinking, then a tool call):
# https://docs.anthropic.com/en/docs/build-with-claude/streaming
DOCUMENTED = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
     "model": "claude-up", "content": [], "stop_reason": None, "stop_sequence": None,
     "usage": {"input_tokens": 472, "output_tokens": 2}}},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "thinking_delta", "thinking": "I need to find the GCD of 1071 and 462"}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "text_delta", "text": "Okay, let's check the weather"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use",
     "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": "ncisco, CA\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
]  # fmt: skip


def test_a_documented_anthropic_stream_survives_chat_and_back() -> None:
    """Anthropic's documented events -> the Anthropic adapter's chat chunks -> this encoder:
    the SDK accumulates the same message, signature and tool input included."""

    async def chunks() -> list[Any]:
        adapter = AnthropicAdapter(
            provider_config("anthropic", "https://anthropic.test", 5.0, ANTHROPIC_MODEL),
            MockTransport(lambda _r: MockResponse(200, sse(*DOCUMENTED))),
        )
        call = Call({"model": "r", "messages": [USER]}, ANTHROPIC_MODEL, {}, "r")
        return [c async for c in await adapter.open_stream(call)]

    message = accumulate(run_stream(asyncio.run(chunks()), answered(output_tokens=89)))
    original = None
    bufs: dict[int, bytes] = {}
    for doc in DOCUMENTED:
        original = accumulate_event(
            event=EVENTS.validate_python(doc), current_snapshot=original, json_bufs=bufs
        )
    assert original is not None
    assert message.model_dump()["content"] == original.model_dump()["content"]
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("data", ["{", "[]", '{"choices": 5}'])
def test_a_malformed_relayed_chunk_is_upstream_malformed(data: str) -> None:
    enc = FRONTEND.encoder(answered(), parse(body(stream=True)), native=False)
    with pytest.raises(UpstreamError) as info:
        enc.chunk(RelayChunk(data, content=True))
    assert (info.value.error_class, info.value.code) == ("server_error", "upstream_malformed")


def test_a_native_stream_is_relayed_event_by_event() -> None:
    parsed = parse(body(stream=True))
    enc = FRONTEND.encoder(answered(), parsed, native=True)
    data = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}'
    event = NativeEvent("content_block_delta", data, orjson.loads(data), True, chars=2)
    assert enc.open() == b""
    assert enc.chunk(event) == f"event: content_block_delta\ndata: {data}\n\n".encode()
    assert enc.close(answered()) == b""
    assert enc.chars == 2


# --- the SDK as the client (in-memory transport) ----------------------------------------


def sdk(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://127.0.0.1:1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def test_the_sdk_streams_the_translated_events() -> None:
    raw = run_stream(STREAM, answered())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    with sdk(handler).messages.stream(
        model="r", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Let me check."
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[2].input == {"city": "Paris"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("code", "kind"),
    # the codes runtime/chat.py ends a committed stream with
    [("upstream_stream_broken", "api_error"), ("request_timeout", "timeout_error"),
     ("gateway_shutting_down", "overloaded_error")],
)  # fmt: skip
def test_a_failed_stream_ends_with_an_error_event_the_sdk_raises(code: str, kind: str) -> None:
    enc: MessagesEncoder = FRONTEND.encoder(answered(), parse(body(stream=True)), native=False)
    raw = enc.open() + enc.chunk(Chunk(choice({"content": "Hel"}), True))
    raw += enc.fail(code, "the upstream broke")
    [*_, (name, doc)] = events_of(raw)
    assert name == "error"
    assert doc == {"type": "error", "error": {"type": kind, "message": "the upstream broke"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    stream = sdk(handler).messages.create(
        model="r", max_tokens=10, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(anthropic.APIStatusError) as info:
        for _ in stream:
            pass
    assert info.value.body == doc


# --- errors -----------------------------------------------------------------------------

ERRORS = [
    (400, "invalid_request_error", anthropic.BadRequestError),
    (401, "authentication_error", anthropic.AuthenticationError),
    (403, "permission_error", anthropic.PermissionDeniedError),
    (404, "not_found_error", anthropic.NotFoundError),
    (413, "request_too_large", anthropic.APIStatusError),
    (429, "rate_limit_error", anthropic.RateLimitError),
    (500, "api_error", anthropic.InternalServerError),
    (502, "api_error", anthropic.InternalServerError),
    (503, "overloaded_error", anthropic.InternalServerError),
    (504, "api_error", anthropic.InternalServerError),
    (529, "overloaded_error", anthropic.OverloadedError),
]


@pytest.mark.parametrize(("status", "kind", "cls"), ERRORS)
def test_errors_take_anthropics_shape_and_the_sdk_reads_them(
    status: int, kind: str, cls: type[Exception]
) -> None:
    raw = FRONTEND.error_body(GatewayError(status, "some_code", "what went wrong"))
    doc = orjson.loads(raw)
    assert doc == {"type": "error", "error": {"type": kind, "message": "what went wrong"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=raw, headers={"content-type": "application/json"})

    with pytest.raises(cls) as info:
        sdk(handler).messages.create(model="r", max_tokens=5, messages=[USER])  # type: ignore[list-item]
    assert isinstance(info.value, anthropic.APIStatusError)
    assert info.value.body == doc


def test_a_parse_error_reads_as_the_sdk_expects() -> None:
    exc = refused(body(temperature=3))
    doc = orjson.loads(FRONTEND.error_body(exc))
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["message"].startswith("`temperature`")


# --- count_tokens -----------------------------------------------------------------------


def test_count_tokens_is_an_estimate_flagged_as_one() -> None:
    doc = {"model": "r", "system": "x" * 40, "messages": [{"role": "user", "content": "y" * 400}]}
    out = FRONTEND.count_tokens(orjson.dumps(doc))
    MessageTokensCount.model_validate(out)
    # 4 chars a token, 4 per message: system (4 + 10) + user (4 + 100)
    assert out == {"input_tokens": 118, "estimated": True}
    assert COUNT_TOKENS_ESTIMATE_HEADER.startswith("x-switchyard-")


def test_count_tokens_counts_images_and_tools_and_needs_no_max_tokens() -> None:
    base = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
    plain = FRONTEND.count_tokens(orjson.dumps(base))["input_tokens"]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    more = {**base, "messages": [{"role": "user", "content": [image]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search"}]}  # fmt: skip
    assert FRONTEND.count_tokens(orjson.dumps(more))["input_tokens"] > plain + 700


def test_count_tokens_refuses_what_parse_refuses() -> None:
    with pytest.raises(GatewayError) as info:
        FRONTEND.count_tokens(orjson.dumps({"model": "r", "messages": [{"role": "bot"}]}))
    assert info.value.param == "messages[0].role"


def test_the_sdk_reads_count_tokens() -> None:
    out = orjson.dumps(FRONTEND.count_tokens(orjson.dumps(body())))

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/messages/count_tokens"
        return httpx.Response(200, content=out, headers={"content-type": "application/json"})

    counted = sdk(handler).messages.count_tokens(model="r", messages=[USER])  # type: ignore[list-item]
    assert counted.input_tokens == orjson.loads(out)["input_tokens"]
