"""GeminiAdapter over the in-memory transport: the issue-11 rules for Gemini (ids, thought
signatures and thoughts, finish reasons, thinking settings, usage, limits, malformed payloads).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime.adapters import Call
from runtime.adapters.base import Chunk, Completion
from runtime.adapters.gemini import GeminiAdapter, build_request, parse_response
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport, sse
from runtime.config import ModelConfig
from runtime.errors import Unservable, UpstreamError
from tests.conformance.matrix import MODEL, capture, provider_config

PROVIDER = provider_config("gemini", "http://gemini.test/v1beta", 2.0)
FLASH_25 = ModelConfig("f", "gemini-2.5-flash", 1_048_576, 65_536, MODEL.capabilities, None)
FLASH_3 = ModelConfig("f3", "gemini-3-flash-preview", 1_048_576, 65_536, MODEL.capabilities, None)
PLAIN = ModelConfig("p", "gemini-2.0-flash", 1_048_576, 8192, frozenset({"tools"}), None)
HELLO: dict[str, Any] = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}


def answer(*parts: dict[str, Any], finish: str = "STOP", **extra: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": list(parts)}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
        **extra,
    }


def sent(request: dict[str, Any], model: ModelConfig = FLASH_25) -> tuple[dict[str, Any], Call]:
    req, call, refused = capture(GeminiAdapter, PROVIDER, request, False, model)
    assert refused is None and req is not None
    body: dict[str, Any] = req.json()
    return body, call


def run(doc: Any, request: dict[str, Any] = HELLO) -> Completion:
    def handler(_req: MockRequest) -> MockResponse:
        import orjson

        return MockResponse(200, orjson.dumps(doc))

    adapter = GeminiAdapter(PROVIDER, MockTransport(handler))
    return asyncio.run(adapter.complete(Call(request, FLASH_25, {"api_key": "k"}, "r1")))


def stream(*events: Any) -> tuple[list[Chunk], UpstreamError | None]:
    chunks: list[Chunk] = []

    async def go() -> None:
        adapter = GeminiAdapter(PROVIDER, MockTransport(lambda _r: MockResponse(200, sse(*events))))
        result = await adapter.open_stream(Call(HELLO, FLASH_25, {"api_key": "k"}, "r1"))
        async for chunk in result:
            assert isinstance(chunk, Chunk)
            chunks.append(chunk)

    try:
        asyncio.run(go())
    except UpstreamError as err:
        return chunks, err
    return chunks, None


# --- tool-call ids and thought signatures ------------------------------------------------------


def test_calls_without_a_gemini_id_get_ids_unique_across_turns() -> None:
    doc = answer({"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"name": "f"}})

    ids = [tc["id"] for _ in range(3) for tc in parse_response(doc).message["tool_calls"]]

    assert len(set(ids)) == 6 and all(i.startswith("call_") and len(i) > 12 for i in ids)


def test_ids_and_signature_go_back_on_the_next_turn() -> None:
    doc = answer(
        {"functionCall": {"id": "g-1", "name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"}
    )
    call = parse_response(doc).message["tool_calls"][0]
    assert call["id"] == "g-1"
    assert call["extra_content"] == {"google": {"thought_signature": "c2ln"}}

    body, _ = sent(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "g-1", "content": "done"},
            ]
        }
    )

    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"id": "g-1", "name": "f", "args": {"a": 1}},
                    "thoughtSignature": "c2ln",
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"id": "g-1", "name": "f", "response": {"content": "done"}}}
            ],
        },
    ]


def test_other_providers_thinking_and_extras_are_not_sent() -> None:
    body, _ = sent(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": "a",
                    "reasoning_content": "hmm",
                    "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "s"}],
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                            "extra_content": {"other": {"x": 1}},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "r"},
            ]
        }
    )

    assert body["contents"][1] == {
        "role": "model",
        "parts": [{"text": "a"}, {"functionCall": {"id": "toolu_1", "name": "f", "args": {}}}],
    }


# --- thoughts and thinking settings ------------------------------------------------------------


def test_thought_parts_are_reasoning_content_never_content() -> None:
    result = parse_response(answer({"text": "let me think", "thought": True}, {"text": "42"}))

    assert result.message == {
        "role": "assistant",
        "content": "42",
        "reasoning_content": "let me think",
    }


def test_streamed_thoughts_are_progress_not_content() -> None:
    thought = answer({"text": "hmm", "thought": True}, finish="STOP")
    thought["candidates"][0].pop("finishReason")

    chunks, err = stream(thought, answer({"text": "42"}))

    assert err is None
    reasoning = [c for c in chunks if c.reasoning]
    assert [c.choices[0]["delta"] for c in reasoning] == [{"reasoning_content": "hmm"}]
    assert reasoning[0].content is False
    assert "".join(c.choices[0]["delta"].get("content") or "" for c in chunks) == "42"


@pytest.mark.parametrize(
    ("model", "effort", "config"),
    [
        (FLASH_25, "low", {"includeThoughts": True, "thinkingBudget": 1024}),
        (FLASH_25, "medium", {"includeThoughts": True, "thinkingBudget": 8192}),
        (FLASH_25, "high", {"includeThoughts": True, "thinkingBudget": 24576}),
        (FLASH_25, "none", {"includeThoughts": False, "thinkingBudget": 0}),
        (FLASH_3, "low", {"includeThoughts": True, "thinkingLevel": "LOW"}),
        (FLASH_3, "high", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ],
)
def test_reasoning_effort_becomes_thinking_config(
    model: ModelConfig, effort: str, config: dict[str, Any]
) -> None:
    body, _ = sent({**HELLO, "reasoning_effort": effort}, model)

    assert body["generationConfig"]["thinkingConfig"] == config


def test_reasoning_effort_on_a_model_without_reasoning_is_dropped_with_a_note() -> None:
    body, call = sent({**HELLO, "reasoning_effort": "high"}, PLAIN)

    assert "generationConfig" not in body
    assert call.notes == ["dropped `reasoning_effort`: the model is not marked `reasoning`"]


# --- finish reasons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("LANGUAGE", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons_map(reason: str, finish: str) -> None:
    assert parse_response(answer({"text": "x"}, finish=reason)).finish_reason == finish


@pytest.mark.parametrize(
    "reason",
    [
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
        "OTHER",
        "FINISH_REASON_UNSPECIFIED",
        "SOMETHING_NEW",
    ],
)
def test_a_failed_answer_falls_back_as_malformed(reason: str) -> None:
    with pytest.raises(UpstreamError) as info:
        run(answer(finish=reason))

    assert (info.value.error_class, info.value.code) == ("server_error", "upstream_malformed")


def test_streamed_malformed_function_call_ends_the_stream_with_an_error() -> None:
    first = answer({"text": "Let me call"})
    first["candidates"][0].pop("finishReason")

    chunks, err = stream(first, answer(finish="MALFORMED_FUNCTION_CALL"))

    assert any(c.content for c in chunks)
    assert err is not None and err.code == "upstream_malformed"


# --- usage -------------------------------------------------------------------------------------


def test_usage_reads_cached_thoughts_and_tool_use_tokens() -> None:
    doc = answer({"text": "x"})
    doc["usageMetadata"] = {
        "promptTokenCount": 1000,
        "cachedContentTokenCount": 800,
        "toolUsePromptTokenCount": 50,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 300,
        "totalTokenCount": 1370,
    }

    usage = parse_response(doc).usage

    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens) == (1050, 800)
    assert (usage.output_tokens, usage.reasoning_tokens) == (320, 300)


def test_streamed_usage_has_the_same_details() -> None:
    last = answer({"text": "x"})
    last["usageMetadata"] = {
        "promptTokenCount": 10,
        "cachedContentTokenCount": 4,
        "candidatesTokenCount": 1,
        "thoughtsTokenCount": 7,
    }

    chunks, err = stream(last)

    assert err is None and chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert (usage.input_tokens, usage.cached_input_tokens) == (10, 4)
    assert (usage.output_tokens, usage.reasoning_tokens) == (8, 7)


# --- parameters --------------------------------------------------------------------------------


def test_n_maps_to_candidate_count_up_to_the_limit() -> None:
    body, _ = sent({**HELLO, "n": 2})
    assert body["generationConfig"]["candidateCount"] == 2

    _, _, refused = capture(GeminiAdapter, PROVIDER, {**HELLO, "n": 9}, False, FLASH_25)
    assert refused is not None and "at most 8" in refused


def test_more_than_five_stop_sequences_is_unservable_whitespace_is_kept() -> None:
    body, _ = sent({**HELLO, "stop": ["\n", " "]})
    assert body["generationConfig"]["stopSequences"] == ["\n", " "]

    with pytest.raises(Unservable):
        build_request({**HELLO, "stop": ["a", "b", "c", "d", "e", "f"]})


def test_logprobs_are_asked_for_and_returned_in_openai_shape() -> None:
    body, _ = sent({**HELLO, "logprobs": True, "top_logprobs": 2})
    assert body["generationConfig"] == {"responseLogprobs": True, "logprobs": 2}

    doc = answer({"text": "Hi"})
    doc["candidates"][0]["logprobsResult"] = {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}],
        "topCandidates": [
            {
                "candidates": [
                    {"token": "Hi", "logProbability": -0.1},
                    {"token": "Hey", "logProbability": -2.5},
                ]
            }
        ],
    }
    [choice] = parse_response(doc).extra["choices"]
    assert choice["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]},
                ],
            }
        ],
        "refusal": None,
    }


def test_system_only_request_sends_the_system_text_as_the_user_turn() -> None:
    body, call = sent({"messages": [{"role": "system", "content": "Say hello."}]})

    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hello."}]}]
    assert "systemInstruction" not in body
    assert call.notes == ["sent the system-only prompt as the user turn: Gemini needs a user turn"]


def test_parallel_tool_calls_off_is_dropped_with_a_note() -> None:
    _, call = sent({**HELLO, "parallel_tool_calls": False})

    assert call.notes == ["dropped `parallel_tool_calls`: Gemini has no switch for parallel calls"]


# --- malformed payloads ------------------------------------------------------------------------


MALFORMED: list[Any] = [
    {"candidates": "nope"},
    {"candidates": [1]},
    {"candidates": [{"content": "x", "finishReason": "STOP"}]},
    {"candidates": [{"content": {"parts": "x"}, "finishReason": "STOP"}]},
    {"candidates": [{"content": {"parts": [1]}, "finishReason": "STOP"}]},
    {"candidates": [{"content": {"parts": [{"text": 5}]}, "finishReason": "STOP"}]},
    {"candidates": [{"content": {"parts": [{"functionCall": "f"}]}, "finishReason": "STOP"}]},
    {**answer({"text": "x"}), "usageMetadata": {"promptTokenCount": "many"}},
    {**answer({"text": "x"}), "usageMetadata": {"promptTokenCount": 1, "thoughtsTokenCount": []}},
    {**answer({"text": "x"}), "usageMetadata": "x"},
]


@pytest.mark.parametrize("doc", MALFORMED)
def test_malformed_answers_are_upstream_malformed(doc: Any) -> None:
    with pytest.raises(UpstreamError) as info:
        run(doc)

    assert (info.value.error_class, info.value.code) == ("server_error", "upstream_malformed")


@pytest.mark.parametrize("doc", MALFORMED)
def test_malformed_stream_events_are_upstream_malformed(doc: Any) -> None:
    _, err = stream(doc)

    assert err is not None
    assert (err.error_class, err.code) == ("server_error", "upstream_malformed")


def test_gemini_3_cannot_switch_thinking_off_so_none_is_minimal_with_a_note() -> None:
    body, call = sent({**HELLO, "reasoning_effort": "none"}, FLASH_3)

    assert body["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": False,
        "thinkingLevel": "MINIMAL",
    }
    assert call.notes == [
        "mapped `reasoning_effort: none` to thinkingLevel MINIMAL: Gemini 3 models always think"
    ]


def test_an_empty_text_part_is_not_an_answer() -> None:
    with pytest.raises(UpstreamError) as info:
        run(answer({"text": ""}, finish="OTHER"))

    assert info.value.code == "upstream_malformed"
