"""The OpenAI adapter in process, through the chat handler over ASGI: answers relayed with
every field the provider sent, malformed payloads classified before and after the commit,
gateway-only fields stripped, parameters mapped per model kind, and `n > 1`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.adapters import Call, RelayChunk, Usage
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport, Pause, sse
from runtime.adapters.openai import OpenAIAdapter
from runtime.errors import UpstreamError
from tests.conformance.matrix import capture
from tests.unit import scripted as s

Handler = Callable[[MockRequest], MockResponse]

ANSWER: dict[str, Any] = {
    "id": "chatcmpl-up",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": {
                "content": [{"token": "Hello", "logprob": -0.3, "bytes": [72], "top_logprobs": []}],
                "refusal": None,
            },
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Hi!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        },
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 12,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "priority",
    "system_fingerprint": "fp_fc9f1d7035",
}


def gateway(
    answer: Handler,
    *,
    adapter: str = "openai",
    caps: tuple[str, ...] = ("streaming", "tools"),
    backup: bool = False,
    stream: bool = False,
) -> tuple[s.Gateway, MockTransport, s.ScriptedAdapter]:
    """Route `r` over an OpenAIAdapter on the in-memory transport (and, with `backup`, a
    scripted provider `b` after it)."""
    m = s.model("m", caps=caps)
    prov = dataclasses.replace(
        s.provider("o", m), adapter=adapter, base_url="https://upstream.test/v1"
    )
    transport = MockTransport(answer)
    steps: list[s.Step] = [s.Stream(("from ", "b"))] if stream else [s.Reply("from b")]
    spare = s.ScriptedAdapter(s.provider("b", s.model("m")), {"m": steps})
    cands = [("o", "m"), ("b", "m")] if backup else [("o", "m")]
    providers = [prov, s.provider("b", s.model("m"))] if backup else [prov]
    cfg = s.config(providers, [s.route("r", cands)])
    adapters: dict[str, Any] = {"o": OpenAIAdapter(prov, transport)}
    if backup:
        adapters["b"] = spare
    return s.gateway(cfg, adapters), transport, spare


def post(gw: s.Gateway, body: dict[str, Any]) -> s.Response:
    return asyncio.run(s.post(gw.handler, body))


def reply(doc: Any, status: int = 200) -> Handler:
    return lambda req: MockResponse(status, orjson.dumps(doc))


def stream_of(*events: Any) -> Handler:
    return lambda req: MockResponse(200, sse(*events, "[DONE]"))


def chunk(delta: dict[str, Any], index: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}],
        **extra,
    }


# --- 1. non-streamed answers keep every field ---------------------------------------------------


def test_a_non_streamed_answer_keeps_every_field_the_provider_sent() -> None:
    gw, _, _ = gateway(reply(ANSWER))
    resp = post(gw, s.chat("r", n=2, logprobs=True))
    assert resp.status == 200
    got = resp.json()
    assert got["id"].startswith("chatcmpl-") and got["id"] != "chatcmpl-up"
    assert got["object"] == "chat.completion"
    assert got["model"] == "gpt-4o-2024-08-06"
    for key in ("choices", "usage", "service_tier", "system_fingerprint"):
        assert got[key] == ANSWER[key], key
    rec = gw.sink.records[0]
    assert (rec.input_tokens, rec.output_tokens) == (1117, 46)


def test_usage_details_fill_cached_and_reasoning_tokens() -> None:
    adapter = OpenAIAdapter(
        dataclasses.replace(s.provider("o"), adapter="openai"), MockTransport(reply(ANSWER))
    )
    result = asyncio.run(adapter.complete(Call({"messages": []}, s.model("m"), {}, "r1")))
    assert result.usage == Usage(1117, 46, cached_input_tokens=1024, reasoning_tokens=12)


def test_streamed_usage_details_fill_cached_and_reasoning_tokens() -> None:
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 20,
        "total_tokens": 70,
        "prompt_tokens_details": {"cached_tokens": 32},
        "completion_tokens_details": {"reasoning_tokens": 8},
    }
    events = [chunk({"content": "hi"}), {**chunk({}), "choices": [], "usage": usage}]
    adapter = OpenAIAdapter(
        dataclasses.replace(s.provider("o"), adapter="openai"),
        MockTransport(stream_of(*events)),
    )

    async def go() -> Usage | None:
        stream = await adapter.open_stream(Call({"messages": []}, s.model("m"), {}, "r1"))
        _ = [c async for c in stream]
        return stream.usage

    assert asyncio.run(go()) == Usage(50, 20, cached_input_tokens=32, reasoning_tokens=8)


def test_an_answer_without_usage_gets_the_gateways_usage() -> None:
    doc = {k: v for k, v in ANSWER.items() if k != "usage"}
    gw, _, _ = gateway(reply(doc))
    got = post(gw, s.chat("r")).json()
    assert set(got["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert got["service_tier"] == "priority"


# --- 2. malformed payloads ------------------------------------------------------------------


MALFORMED_FIRST: dict[str, Any] = {
    "choices_of_numbers": {"choices": [1]},
    "choices_not_a_list": {"choices": {"index": 0}},
    "delta_not_an_object": {"choices": [{"index": 0, "delta": "hi"}]},
    "usage_not_numeric": {"choices": [], "usage": {"prompt_tokens": "x", "completion_tokens": 1}},
    "usage_details_not_numeric": {
        "choices": [],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": "many"},
        },
    },
    "content_not_a_string": {"choices": [{"index": 0, "delta": {"content": 5}}]},
    "tool_calls_not_a_list": {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]},
    "not_an_object": [1, 2],
    "invalid_json": "{not json",
}


def _raw(doc: Any) -> bytes:
    return doc.encode() if isinstance(doc, str) else orjson.dumps(doc)


@pytest.mark.parametrize("name", sorted(MALFORMED_FIRST))
def test_a_malformed_first_chunk_is_upstream_malformed(name: str) -> None:
    raw = _raw(MALFORMED_FIRST[name])
    adapter = OpenAIAdapter(
        dataclasses.replace(s.provider("o"), adapter="openai"),
        MockTransport(lambda req: MockResponse(200, [b"data: " + raw + b"\n\n"])),
    )

    async def go() -> None:
        stream = await adapter.open_stream(Call({"messages": []}, s.model("m"), {}, "r1"))
        _ = [c async for c in stream]

    with pytest.raises(UpstreamError) as info:
        asyncio.run(go())
    assert (info.value.error_class, info.value.code) == ("server_error", "upstream_malformed")


@pytest.mark.parametrize("name", sorted(MALFORMED_FIRST))
def test_a_malformed_first_chunk_falls_back_to_the_next_candidate(name: str) -> None:
    raw = _raw(MALFORMED_FIRST[name])
    gw, _, spare = gateway(
        lambda req: MockResponse(200, [b"data: " + raw + b"\n\n"]), backup=True, stream=True
    )
    resp = post(gw, s.chat("r", stream=True))
    assert resp.status == 200
    assert len(spare.calls) == 1
    attempts = gw.sink.records[0].attempts
    assert [a["outcome"] for a in attempts][-1] == "ok"
    assert attempts[0]["code"] == "upstream_malformed"


MALFORMED_ANSWERS: dict[str, Any] = {
    "choices_of_numbers": {**ANSWER, "choices": [1]},
    "choices_not_a_list": {**ANSWER, "choices": "x"},
    "no_choices": {**ANSWER, "choices": []},
    "message_not_an_object": {**ANSWER, "choices": [{"index": 0, "message": "hi"}]},
    "usage_not_numeric": {**ANSWER, "usage": {"prompt_tokens": "x", "completion_tokens": 1}},
    "usage_negative": {**ANSWER, "usage": {"prompt_tokens": -1, "completion_tokens": 1}},
    "usage_not_an_object": {**ANSWER, "usage": "lots"},
    "not_an_object": ["x"],
}


@pytest.mark.parametrize("name", sorted(MALFORMED_ANSWERS))
def test_a_malformed_answer_falls_back_as_upstream_malformed(name: str) -> None:
    gw, _, _ = gateway(reply(MALFORMED_ANSWERS[name]), backup=True)
    resp = post(gw, s.chat("r"))
    assert resp.status == 200
    assert resp.json()["choices"][0]["message"]["content"] == "from b"
    assert gw.sink.records[0].attempts[0]["code"] == "upstream_malformed"


AFTER_COMMIT: dict[str, bytes] = {
    "invalid_json": b"{not json",
    "invalid_json_in_braces": b'{"choices":[{"index":0,"delta":{"content":"x"}}]]}',
    "truncated_json": b'{"choices":[{"index":0,"delta":{"content":"x"}}]',
    "not_an_object": b'["x"]',
    "choices_of_numbers": b'{"choices":[1]}',
    "choices_not_a_list": b'{"choices":"x"}',
    "delta_not_an_object": b'{"choices":[{"index":0,"delta":7}]}',
    "usage_not_numeric": b'{"choices":[],"usage":{"prompt_tokens":"x","completion_tokens":1}}',
}


@pytest.mark.parametrize("name", sorted(AFTER_COMMIT))
def test_a_malformed_chunk_after_the_commit_ends_the_stream_with_an_error_event(
    name: str,
) -> None:
    first = orjson.dumps(chunk({"content": "Hel"}))
    second = orjson.dumps(chunk({"content": "lo"}))
    parts = [b"data: " + p + b"\n\n" for p in (first, second, AFTER_COMMIT[name])]
    gw, _, spare = gateway(lambda req: MockResponse(200, [*parts, b"data: [DONE]\n\n"]))
    resp = post(gw, s.chat("r", stream=True))
    assert resp.status == 200
    events = resp.events()
    assert [e["choices"][0]["delta"]["content"] for e in events[:2]] == ["Hel", "lo"]
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert "[DONE]" not in events
    rec = gw.sink.records[0]
    assert rec.broke_after_commit and rec.error_code == "stream_broken_after_commit"
    assert rec.attempts[-1]["code"] == "upstream_malformed"
    assert spare.calls == []


def test_plain_chunks_after_the_commit_are_relayed_unread() -> None:
    events = [chunk({"role": "assistant", "content": ""}), chunk({"content": "a"})]
    events += [chunk({"content": "b"}), chunk({"content": "c"})]
    adapter = OpenAIAdapter(
        dataclasses.replace(s.provider("o"), adapter="openai"), MockTransport(stream_of(*events))
    )

    async def go() -> list[RelayChunk]:
        stream = await adapter.open_stream(Call({"messages": []}, s.model("m"), {}, "r1"))
        return [c async for c in stream]

    got = asyncio.run(go())
    assert [c.data for c in got] == [orjson.dumps(e).decode() for e in events]
    assert [c.choices is None for c in got] == [False, False, True, True]


# --- 3. gateway-only fields never go upstream -------------------------------------------------


def sent(
    request: dict[str, Any], caps: tuple[str, ...] = ("streaming",), native: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """The body the adapter sends upstream for `request`, and its notes."""
    prov = dataclasses.replace(
        s.provider("o"),
        adapter="openai" if native else "openai-compatible",
        base_url="https://upstream.test/v1",
    )
    req, call, refused = capture(OpenAIAdapter, prov, request, False, s.model("m", caps=caps))
    assert req is not None and refused is None
    out: dict[str, Any] = req.json()
    return out, call.notes


def test_reasoning_and_tool_call_extras_are_stripped_from_the_history() -> None:
    messages = [
        {"role": "user", "content": "17 * 23?"},
        {
            "role": "assistant",
            "content": "391",
            "reasoning_content": "17 * 23 = 391",
            "thinking_blocks": [{"type": "thinking", "thinking": "...", "signature": "c2ln"}],
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                    "extra_content": {"google": {"thought_signature": "dGg="}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ]
    request = {"model": "r", "messages": messages}
    snapshot = orjson.dumps(request)
    body, _ = sent(request)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "391",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    assert body["messages"][0] == messages[0]
    assert orjson.dumps(request) == snapshot  # the client's body is not mutated


def test_cache_control_and_thinking_are_dropped_with_a_note() -> None:
    request = {
        "model": "r",
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}
                ],
            },
            {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object"}},
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "function",
                "function": {"name": "g", "cache_control": {"type": "ephemeral"}},
            },
        ],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    body, notes = sent(request)
    assert body["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "long"}]},
        {"role": "user", "content": "hi"},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "g"}},
    ]
    assert "thinking" not in body
    assert len(notes) == 3
    assert all("cache_control" in n or "thinking" in n for n in notes)


def test_a_clean_body_passes_unchanged_without_notes() -> None:
    request = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    body, notes = sent(request)
    assert body == {**request, "model": "up-m"}
    assert notes == []


# --- 4. parameters per model kind -------------------------------------------------------------

SAMPLING = {
    "temperature": 0.2,
    "top_p": 0.9,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.3,
    "logprobs": True,
    "top_logprobs": 3,
    "logit_bias": {"50256": -100},
}


def test_a_reasoning_model_gets_max_completion_tokens_and_no_sampling() -> None:
    request = {"model": "r", "messages": [], "max_tokens": 300, "seed": 7, **SAMPLING}
    body, notes = sent(request, ("streaming", "reasoning"))
    assert body == {"model": "up-m", "messages": [], "max_completion_tokens": 300, "seed": 7}
    assert any("max_completion_tokens" in n for n in notes)
    assert any("`temperature`" in n and "`logit_bias`" in n for n in notes)


def test_a_model_without_reasoning_gets_no_reasoning_effort() -> None:
    request = {"model": "r", "messages": [], "reasoning_effort": "high", "max_tokens": 9}
    body, notes = sent(request)
    assert body == {"model": "up-m", "messages": [], "max_tokens": 9}
    assert notes == ["dropped `reasoning_effort`: the model is not a reasoning model"]


def test_a_reasoning_model_keeps_reasoning_effort() -> None:
    request = {"model": "r", "messages": [], "reasoning_effort": "high"}
    body, notes = sent(request, ("reasoning",))
    assert body["reasoning_effort"] == "high"
    assert notes == []


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("caps", [(), ("reasoning",)])
def test_both_limits_send_max_completion_tokens(native: bool, caps: tuple[str, ...]) -> None:
    request = {"model": "r", "messages": [], "max_tokens": 100, "max_completion_tokens": 500}
    body, notes = sent(request, caps, native)
    assert body["max_completion_tokens"] == 500 and "max_tokens" not in body
    assert any("max_tokens" in n for n in notes)


def test_an_openai_compatible_server_keeps_sampling_and_max_tokens() -> None:
    request = {"model": "r", "messages": [], "max_tokens": 300, **SAMPLING}
    body, notes = sent(request, ("reasoning",), native=False)
    assert body == {**request, "model": "up-m"}
    assert notes == []


def test_the_notes_reach_the_attempt_trail() -> None:
    gw, transport, _ = gateway(reply(ANSWER), caps=("streaming", "reasoning"))
    resp = post(gw, s.chat("r", max_tokens=50, temperature=0.3))
    assert resp.status == 200
    sent = transport.requests[0].json()
    assert sent["max_completion_tokens"] == 50 and "temperature" not in sent
    assert len(gw.sink.records[0].attempts[0]["notes"]) == 2


# --- 5. n > 1 ---------------------------------------------------------------------------------


def test_n_2_streamed_relays_both_choices() -> None:
    events = [
        chunk({"role": "assistant", "content": ""}, 0),
        chunk({"role": "assistant", "content": ""}, 1),
        chunk({"content": "Hello"}, 0),
        chunk({"content": "Hi"}, 1),
    ]
    gw, transport, _ = gateway(stream_of(*events))
    resp = post(gw, s.chat("r", n=2, stream=True))
    assert transport.requests[0].json()["n"] == 2
    got = [e for e in resp.events() if e != "[DONE]"]
    assert [(e["choices"][0]["index"], e["choices"][0]["delta"]) for e in got] == [
        (e["choices"][0]["index"], e["choices"][0]["delta"]) for e in events
    ]
    assert resp.events()[-1] == "[DONE]"


def test_n_2_non_streamed_returns_both_choices() -> None:
    gw, transport, _ = gateway(reply(ANSWER))
    got = post(gw, s.chat("r", n=2)).json()
    assert transport.requests[0].json()["n"] == 2
    assert [c["message"]["content"] for c in got["choices"]] == ["Hello!", "Hi!"]


# --- any payload: relayed, or upstream_malformed; never another exception ----------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
DELTA = st.fixed_dictionaries(
    {},
    optional={
        "content": JSON,
        "role": JSON,
        "refusal": JSON,
        "tool_calls": st.lists(
            st.fixed_dictionaries({}, optional={"index": JSON, "function": JSON}), max_size=2
        )
        | JSON,
    },
)
CHOICE = st.fixed_dictionaries({}, optional={"index": JSON, "delta": DELTA | JSON})
CHUNK = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.lists(CHOICE | JSON, max_size=2) | JSON,
        "usage": st.fixed_dictionaries(
            {}, optional={"prompt_tokens": JSON, "completion_tokens": JSON}
        )
        | JSON,
        "model": JSON,
    },
)


@settings(max_examples=150, deadline=None)
@given(payload=CHUNK | JSON, after_commit=st.booleans())
def test_any_chunk_is_relayed_or_upstream_malformed(payload: Any, after_commit: bool) -> None:
    events: list[Any] = [chunk({"content": "a"})] if after_commit else []
    events += [payload, chunk({"content": "b"})]
    gw, _, _ = gateway(stream_of(*events))
    resp = post(gw, s.chat("r", stream=True))
    assert resp.status in (200, 502)
    rec = gw.sink.records[0]
    if rec.status != 200 or rec.broke_after_commit:
        assert rec.attempts[-1].get("code") == "upstream_malformed", rec.attempts
        if after_commit:
            assert resp.events()[-1]["error"]["code"] == "upstream_stream_broken"


@settings(max_examples=150, deadline=None)
@given(payload=st.fixed_dictionaries({}, optional={"choices": JSON, "usage": JSON}) | JSON)
def test_any_answer_is_relayed_or_upstream_malformed(payload: Any) -> None:
    gw, _, _ = gateway(reply(payload))
    resp = post(gw, s.chat("r"))
    assert resp.status in (200, 502)
    if resp.status == 502:
        assert gw.sink.records[0].attempts[-1].get("code") == "upstream_malformed"


# --- thinking from an OpenAI-compatible server is progress ------------------------------------


def test_streamed_reasoning_content_keeps_the_first_byte_timeout_from_firing() -> None:
    """vLLM and DeepSeek stream `delta.reasoning_content` before the answer: the route's
    first_byte_timeout_s (1 s here) is about silence, so 1.6 s of thinking is not abandoned."""
    parts: list[Any] = []
    for _ in range(4):
        parts += [Pause(0.4), *sse(chunk({"reasoning_content": "thinking… "}))]
    parts += sse(chunk({"content": "42"}), "[DONE]")
    gw, _, spare = gateway(
        lambda req: MockResponse(200, parts),
        adapter="openai-compatible",
        backup=True,
        stream=True,
    )
    resp = post(gw, s.chat("r", stream=True))
    assert resp.status == 200
    assert spare.calls == []
    assert b'"42"' in resp.body
    assert [a["outcome"] for a in gw.sink.records[0].attempts] == ["ok"]
