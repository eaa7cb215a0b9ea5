"""runtime/request_check.py: every malformed request is a 400 naming the field at fault, every
request the adapters are held to (tests/conformance/matrix.py) passes unchanged, and the
effective output limit is one integer whatever form it was sent in."""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest

from runtime.errors import GatewayError
from runtime.records import RequestRecord
from runtime.request_check import (
    MAX_DEPTH,
    MAX_MODEL_CHARS,
    QUOTE_CHARS,
    check,
    output_limit,
    parse,
)
from tests.conformance.matrix import CASES, WEATHER_TOOL


def record() -> RequestRecord:
    return RequestRecord.begin("req_1", "test", "", "")


def base(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    return body


_MARKER = re.compile(rb'"\\u0000deep:([ol]):([0-9]+)\\u0000"')


def encode(body: Any) -> bytes:
    """`body` as JSON, with each `nested`/`nested_list` marker spelled out (orjson refuses to
    write more than 254 levels, so deep values are written as text)."""

    def spell(m: re.Match[bytes]) -> bytes:
        n = int(m.group(2))
        return b'{"a":' * n + b"1" + b"}" * n if m.group(1) == b"o" else b"[" * n + b"]" * n

    return _MARKER.sub(spell, orjson.dumps(body))


def refused(body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(encode(body), record())
    err = info.value
    assert err.status == 400
    assert err.body()["error"]["type"] == "invalid_request_error"
    return err


def nested(depth: int) -> Any:
    """`depth` levels of objects around 1 (a marker `encode` spells out)."""
    return f"\x00deep:o:{depth}\x00"


def nested_list(depth: int) -> Any:
    """`depth` levels of arrays (a marker `encode` spells out)."""
    return f"\x00deep:l:{depth}\x00"


ASSISTANT_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ],
}


# The cases and every known field of the wrong type: (body, param).
HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("stream_options not an object", base(stream=True, stream_options=5), "stream_options"),
    ("stream_options a list", base(stream=True, stream_options=[1]), "stream_options"),
    (
        "stream_options without stream",
        base(stream_options={"include_usage": True}),
        "stream_options",
    ),
    (
        "stream_options with stream false",
        base(stream=False, stream_options={"include_usage": True}),
        "stream_options",
    ),
    (
        "include_usage a string",
        base(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
    ),
    (
        "tool_calls: 5",
        base(messages=[{"role": "user", "content": "x"}, {**ASSISTANT_CALL, "tool_calls": 5}]),
        "messages[1].tool_calls",
    ),
    (
        "a tool call a string",
        base(messages=[{**ASSISTANT_CALL, "tool_calls": ["call"]}]),
        "messages[0].tool_calls[0]",
    ),
    (
        "tool call arguments an object",
        base(
            messages=[
                {
                    **ASSISTANT_CALL,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
    ),
    (
        "tool call id too long",
        base(
            messages=[
                {
                    **ASSISTANT_CALL,
                    "tool_calls": [
                        {
                            "id": "c" * 300,
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].id",
    ),
    ('"stream": "false"', base(stream="false"), "stream"),
    ('"stream": 1', base(stream=1), "stream"),
    ("messages an object", base(messages={"role": "user"}), "messages"),
    ("messages empty", base(messages=[]), "messages"),
    ("a message a string", base(messages=["hi"]), "messages[0]"),
    ("role missing", base(messages=[{"content": "hi"}]), "messages[0].role"),
    ("role a number", base(messages=[{"role": 1, "content": "hi"}]), "messages[0].role"),
    ("role unknown", base(messages=[{"role": "robot", "content": "hi"}]), "messages[0].role"),
    ("content a number", base(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("content missing", base(messages=[{"role": "user"}]), "messages[0].content"),
    (
        "content null for user",
        base(messages=[{"role": "user", "content": None}]),
        "messages[0].content",
    ),
    (
        "content parts empty",
        base(messages=[{"role": "user", "content": []}]),
        "messages[0].content",
    ),
    (
        "a content part a string",
        base(messages=[{"role": "user", "content": ["hi"]}]),
        "messages[0].content[0]",
    ),
    (
        "part type a number",
        base(messages=[{"role": "user", "content": [{"type": 3}]}]),
        "messages[0].content[0].type",
    ),
    (
        "text part text a list",
        base(messages=[{"role": "user", "content": [{"type": "text", "text": ["a"]}]}]),
        "messages[0].content[0].text",
    ),
    (
        "image_url a string",
        base(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]),
        "messages[0].content[0].image_url",
    ),
    (
        "image detail unknown",
        base(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "u", "detail": 2}}],
                }
            ]
        ),
        "messages[0].content[0].image_url.detail",
    ),
    (
        "tool message without tool_call_id",
        base(messages=[{"role": "tool", "content": "18 C"}]),
        "messages[0].tool_call_id",
    ),
    (
        "name a number",
        base(messages=[{"role": "user", "content": "x", "name": 5}]),
        "messages[0].name",
    ),
    (
        "name too long",
        base(messages=[{"role": "user", "content": "x", "name": "n" * 65}]),
        "messages[0].name",
    ),
    ("tools an object", base(tools={"type": "function"}), "tools"),
    ("a tool a string", base(tools=["get_weather"]), "tools[0]"),
    ("tool type unknown", base(tools=[{"type": "web", "function": {}}]), "tools[0].type"),
    (
        "tool function a list",
        base(tools=[{"type": "function", "function": []}]),
        "tools[0].function",
    ),
    (
        "tool name with a dot",
        base(tools=[{"type": "function", "function": {"name": "a.b"}}]),
        "tools[0].function.name",
    ),
    (
        "tool name too long",
        base(tools=[{"type": "function", "function": {"name": "f" * 65}}]),
        "tools[0].function.name",
    ),
    (
        "tool parameters a string",
        base(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        "tools[0].function.parameters",
    ),
    (
        "tool strict a string",
        base(tools=[{"type": "function", "function": {"name": "f", "strict": "true"}}]),
        "tools[0].function.strict",
    ),
    ("tool_choice unknown", base(tools=[WEATHER_TOOL], tool_choice="any"), "tool_choice"),
    ("tool_choice a number", base(tools=[WEATHER_TOOL], tool_choice=1), "tool_choice"),
    (
        "tool_choice function a string",
        base(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": "f"}),
        "tool_choice.function",
    ),
    ("response_format a string", base(response_format="json"), "response_format"),
    ("response_format type unknown", base(response_format={"type": "xml"}), "response_format.type"),
    (
        "json_schema missing",
        base(response_format={"type": "json_schema"}),
        "response_format.json_schema",
    ),
    (
        "json_schema schema a list",
        base(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": []}}),
        "response_format.json_schema.schema",
    ),
    ("n a string", base(n="2"), "n"),
    ("n zero", base(n=0), "n"),
    ("n a fraction", base(n=1.5), "n"),
    ("stop a number", base(stop=5), "stop"),
    ("stop a list of numbers", base(stop=["a", 5]), "stop[1]"),
    ("temperature a string", base(temperature="0.5"), "temperature"),
    ("temperature out of range", base(temperature=3), "temperature"),
    ("temperature a boolean", base(temperature=True), "temperature"),
    ("top_p out of range", base(top_p=1.5), "top_p"),
    ("max_tokens a string", base(max_tokens="5000"), "max_tokens"),
    ("max_tokens a fraction", base(max_tokens=5000.5), "max_tokens"),
    ("max_tokens a boolean", base(max_tokens=True), "max_tokens"),
    ("max_tokens zero", base(max_tokens=0), "max_tokens"),
    ("max_tokens negative", base(max_tokens=-1), "max_tokens"),
    ("max_tokens huge float", base(max_tokens=1e20), "max_tokens"),
    ("max_completion_tokens a list", base(max_completion_tokens=[1]), "max_completion_tokens"),
    (
        "both limits disagree",
        base(max_tokens=5000, max_completion_tokens=10),
        "max_tokens",
    ),
    ("seed a string", base(seed="7"), "seed"),
    ("logprobs a string", base(logprobs="true"), "logprobs"),
    ("top_logprobs over 20", base(logprobs=True, top_logprobs=21), "top_logprobs"),
    ("user a number", base(user=5), "user"),
    ("user too long", base(user="u" * 257), "user"),
    ("metadata a list", base(metadata=["a"]), "metadata"),
    ("metadata value a number", base(metadata={"a": 1}), "metadata.a"),
    ("metadata too many pairs", base(metadata={str(i): "v" for i in range(17)}), "metadata"),
    ("reasoning_effort unknown", base(reasoning_effort="extreme"), "reasoning_effort"),
    ("reasoning_effort a number", base(reasoning_effort=3), "reasoning_effort"),
    ("parallel_tool_calls a string", base(parallel_tool_calls="no"), "parallel_tool_calls"),
    ("logit_bias a list", base(logit_bias=[1]), "logit_bias"),
    ("functions an object", base(functions={}), "functions"),
    ("function_call unknown", base(function_call="always"), "function_call"),
    ("model a number", base(model=5), "model"),
    ("model null", base(model=None), "model"),
    ("model empty", base(model=""), "model"),
    ("model missing", {"messages": [{"role": "user", "content": "x"}]}, "model"),
    ("messages missing", {"model": "chat"}, "messages"),
    ("messages null", base(messages=None), "messages"),
    ("thinking a string", base(thinking="on"), "thinking"),
    (
        "thinking_blocks a number",
        base(messages=[{"role": "assistant", "content": "391", "thinking_blocks": 5}]),
        "messages[0].thinking_blocks",
    ),
    (
        "reasoning_content a list",
        base(messages=[{"role": "assistant", "content": "391", "reasoning_content": ["a"]}]),
        "messages[0].reasoning_content",
    ),
    (
        "cache_control a string",
        base(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": "x"}]}
            ]
        ),
        "messages[0].content[0].cache_control",
    ),
    (
        "tool cache_control a number",
        base(tools=[{**WEATHER_TOOL, "cache_control": 1}]),
        "tools[0].cache_control",
    ),
]


@pytest.mark.parametrize(
    ("body", "param"), [(b, p) for _, b, p in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_a_malformed_field_is_a_400_naming_it(body: dict[str, Any], param: str) -> None:
    err = refused(body)
    assert err.param == param
    assert err.code == "invalid_request"
    assert f"`{param}`" in err.message or param == "stream_options"


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_request_of_the_adapters_matrix_passes(name: str) -> None:
    body = copy.deepcopy(CASES[name][0])
    if name == "both_limits":  # 256 vs 512: OpenAI refuses the pair, so do we
        assert refused(body).param == "max_tokens"
        return
    checked = parse(orjson.dumps(body), record())
    assert checked == CASES[name][0]


def test_unknown_top_level_fields_pass_through() -> None:
    body = base(top_k=40, safe_prompt=True, extra_body={"x": [1, {"y": 2}]})
    assert parse(orjson.dumps(body), record()) == body


def test_an_unknown_field_nested_300_deep_is_refused_with_its_path() -> None:
    err = refused(base(vendor=nested(300)))
    assert err.param is not None and err.param.startswith("vendor.a.a.a")
    assert err.param.count(".a") == MAX_DEPTH - 1  # the first object past the limit
    assert f"deeper than {MAX_DEPTH}" in err.message


@pytest.mark.parametrize(
    ("body", "prefix"),
    [
        (base(tools=nested_list(1000)), "tools"),
        (
            base(
                tools=[{"type": "function", "function": {"name": "f", "parameters": nested(1000)}}]
            ),
            "tools[0].function.parameters.a",
        ),
        (
            base(
                messages=[
                    {"role": "user", "content": [{"type": "text", "text": "x", "v": nested(1000)}]}
                ]
            ),
            "messages[0].content[0].v.a",
        ),
        (base(messages=[{"role": "user", "content": nested_list(1000)}]), "messages[0].content"),
        (
            base(
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": nested(200)},
                }
            ),
            "response_format.json_schema.schema.a",
        ),
        (base(metadata=nested(100)), "metadata"),
        (
            base(messages=[{"role": "user", "content": "x", "extra": nested(1000)}]),
            "messages[0].extra",
        ),
        (
            base(
                messages=[
                    {
                        **ASSISTANT_CALL,
                        "tool_calls": [{**ASSISTANT_CALL["tool_calls"][0], "x": nested(500)}],
                    }
                ]
            ),
            "messages[0].tool_calls[0].x",
        ),
    ],
)
def test_nesting_1000_deep_anywhere_is_a_400(body: dict[str, Any], prefix: str) -> None:
    err = refused(body)
    assert err.param is not None and err.param.startswith(prefix)


def test_a_long_unknown_key_is_quoted_not_echoed() -> None:
    err = refused({**base(), "k" * 100_000: nested(100)})
    assert err.param is not None and err.param.startswith("k" * QUOTE_CHARS + "....a")
    assert len(err.message) < 2 * MAX_DEPTH * (QUOTE_CHARS + 8)


def test_nesting_up_to_the_limit_passes() -> None:
    # the body is level 1, `vendor`'s object level 2: MAX_DEPTH - 1 more levels fit
    assert parse(encode(base(vendor=nested(MAX_DEPTH - 1))), record())
    refused(base(vendor=nested(MAX_DEPTH)))


def test_a_json_schema_of_ordinary_depth_passes() -> None:
    schema = {"type": "object", "properties": {"a": nested(40)}}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    parse(encode(base(tools=[tool])), record())


def test_a_body_deeper_than_the_json_decoder_takes_is_a_400() -> None:
    err = refused_raw(b'{"model":"chat","x":' + b"[" * 2000 + b"]" * 2000 + b"}")
    assert err.code == "invalid_json"


def refused_raw(raw: bytes) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(raw, record())
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("raw", [b"", b"[]", b'"x"', b"5", b"null", b"{", b"\xff"])
def test_not_an_object_is_a_400(raw: bytes) -> None:
    refused_raw(raw)


def test_a_long_model_is_refused_quoting_64_characters_and_recorded_cut() -> None:
    model = "m" * 25_000_000
    rec = record()
    with pytest.raises(GatewayError) as info:
        parse(orjson.dumps(base(model=model)), rec)
    err = info.value
    assert err.status == 400 and err.param == "model"
    assert len(err.message) < 200
    assert "m" * QUOTE_CHARS + "..." in err.message and "m" * (QUOTE_CHARS + 1) not in err.message
    assert rec.requested_model == "m" * QUOTE_CHARS + "..."


def test_a_model_at_the_limit_is_kept_whole() -> None:
    rec = record()
    parse(orjson.dumps(base(model="m" * MAX_MODEL_CHARS)), rec)
    assert rec.requested_model == "m" * MAX_MODEL_CHARS


def test_the_record_keeps_model_and_stream_of_a_refused_request() -> None:
    rec = record()
    with pytest.raises(GatewayError):
        parse(orjson.dumps(base(stream=True, tools=5)), rec)
    assert rec.requested_model == "chat" and rec.stream is True


def test_a_string_stream_does_not_stream() -> None:
    rec = record()
    with pytest.raises(GatewayError):
        parse(orjson.dumps(base(stream="false")), rec)
    assert rec.stream is False


@pytest.mark.parametrize(
    ("fields", "limit", "sent"),
    [
        ({"max_tokens": 5000}, 5000, {"max_tokens": 5000}),
        ({"max_tokens": 5000.0}, 5000, {"max_tokens": 5000}),
        ({"max_completion_tokens": 5000.0}, 5000, {"max_completion_tokens": 5000}),
        (
            {"max_tokens": 300, "max_completion_tokens": 300.0},
            300,
            {"max_tokens": 300, "max_completion_tokens": 300},
        ),
        # null means "not sent": no adapter sees `max_completion_tokens: null` beside a limit
        ({"max_tokens": 5000, "max_completion_tokens": None}, 5000, {"max_tokens": 5000}),
        ({"max_tokens": None, "max_completion_tokens": 40}, 40, {"max_completion_tokens": 40}),
        ({}, None, {}),
    ],
)
def test_the_effective_output_limit_is_one_integer(
    fields: dict[str, Any], limit: int | None, sent: dict[str, Any]
) -> None:
    checked = parse(orjson.dumps(base(**fields)), record())
    assert output_limit(checked) == limit
    assert {k: v for k, v in checked.items() if k.startswith("max_")} == sent
    for value in sent.values():
        assert type(value) is int


def test_output_limit_of_an_unchecked_request_is_the_largest() -> None:
    # the router may be called without the check (tests, tools): the cap still holds
    assert output_limit({"max_tokens": 9000, "max_completion_tokens": 10}) == 9000
    assert output_limit({"max_tokens": "9000"}) is None
    assert output_limit({"max_tokens": True}) is None


def test_nulls_of_optional_fields_are_dropped() -> None:
    body = base(stream=None, stream_options=None, tools=None, temperature=None, user=None)
    assert parse(orjson.dumps(body), record()) == base()


def test_integral_floats_become_integers() -> None:
    checked = parse(orjson.dumps(base(n=2.0, seed=7.0, top_logprobs=3.0, logprobs=True)), record())
    assert (checked["n"], checked["seed"], checked["top_logprobs"]) == (2, 7, 3)
    assert all(type(checked[k]) is int for k in ("n", "seed", "top_logprobs"))


def test_check_is_idempotent() -> None:
    body = base(max_tokens=10.0, tools=[WEATHER_TOOL], stream=True, stream_options=None)
    check(body)
    once = copy.deepcopy(body)
    check(body)
    assert body == once
