"""Every request of the matrix, as GeminiAdapter sends it, validated against google-genai's own
types with unknown fields forbidden (`google.genai.types` models refuse extras), plus what each
case must carry on Gemini's wire."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pydantic
import pytest
from google.genai import _common, types

from runtime.adapters.gemini import GeminiAdapter
from tests.conformance.matrix import CASES, RICH_SCHEMA, capture, provider_config

PROVIDER = provider_config("gemini", "http://gemini.test/v1beta", 2.0)
# The cases of the matrix as it stood when the Gemini adapter was held to it: Gemini serves all.
SERVED = {
    "plain", "system", "developer", "system_parts", "system_only", "multi_turn", "tool_results",
    "rich_schema_tool", "tool_choice_auto", "tool_choice_none", "tool_choice_required",
    "tool_choice_named", "parallel_tool_calls_off", "image_url", "image_base64", "json_object",
    "json_schema_strict", "stop_newline", "stop_list", "sampling_both", "temperature", "top_p",
    "penalties_seed", "max_tokens", "max_completion_tokens", "both_limits", "n_2",
    "reasoning_low", "reasoning_medium", "reasoning_high", "reasoning_round_trip",
    "tool_call_extras", "logprobs", "stream_usage", "stream_tools", "near_window",
}  # fmt: skip


class GenerateContentBody(_common.BaseModel):
    """The REST body of `models.generateContent` (camelCase on the wire), built from the SDK's
    own part types; like them it forbids unknown fields (`_common.BaseModel`: extra="forbid")."""

    contents: list[types.Content]
    system_instruction: types.Content | None = None
    generation_config: types.GenerationConfig | None = None
    tools: list[types.Tool] | None = None
    tool_config: types.ToolConfig | None = None


def validate(raw: bytes) -> GenerateContentBody:
    return GenerateContentBody.model_validate_json(raw)


def sent(name: str) -> tuple[dict[str, Any], str]:
    request, stream = CASES[name]
    req, _call, refused = capture(GeminiAdapter, PROVIDER, request, stream)
    assert refused is None, refused
    assert req is not None
    validate(req.body)
    body: dict[str, Any] = req.json()
    return body, req.url


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_case_validates_against_the_sdk_types(name: str) -> None:
    request, stream = CASES[name]
    req, _call, refused = capture(GeminiAdapter, PROVIDER, request, stream)
    if name in SERVED:
        assert refused is None and req is not None
    if req is None:
        assert isinstance(refused, str) and refused  # skipped with a reason, nothing sent
        return
    body = validate(req.body)
    assert body.contents, "Gemini needs at least one content"
    for node in walk(req.json()):
        enum = node.get("enum")
        assert not (isinstance(enum, list) and None in enum), "null in an enum"
        for key in ("reasoning_content", "thinking_blocks", "extra_content", "oneOf"):
            assert key not in node


def test_an_unknown_field_fails_the_validation() -> None:
    body, _ = sent("plain")

    with pytest.raises(pydantic.ValidationError, match="extra"):
        validate(orjson.dumps({**body, "generationConfig": {"maxTokens": 5}}))
    with pytest.raises(pydantic.ValidationError, match="extra"):
        validate(orjson.dumps({**body, "contents": [{"role": "user", "parts": [{"txt": "x"}]}]}))


@pytest.mark.parametrize("name", ["rich_schema_tool", "json_schema_strict"])
def test_rich_schema_keeps_every_constraint(name: str) -> None:
    body, _ = sent(name)
    if name == "rich_schema_tool":
        schema = body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]
    else:
        schema = body["generationConfig"]["responseJsonSchema"]
        assert body["generationConfig"]["responseMimeType"] == "application/json"

    props = schema["properties"]
    assert props["priority"] == {
        "anyOf": [{"type": "string", "enum": ["low", "high"]}, {"type": "null"}]
    }
    assert props["target"] == {"anyOf": RICH_SCHEMA["properties"]["target"]["oneOf"]}
    assert props["address"] == {"$ref": "#/$defs/address"}
    assert schema["$defs"] == RICH_SCHEMA["$defs"]
    assert schema["additionalProperties"] is False
    assert props["labels"]["additionalProperties"] == {"type": "string"}


def test_tool_results_carry_their_ids_and_names() -> None:
    body, _ = sent("tool_results")

    model, results = body["contents"][1], body["contents"][2]
    assert [p["functionCall"]["id"] for p in model["parts"]] == ["call_paris_1", "call_rome_1"]
    assert [(p["functionResponse"]["id"], p["functionResponse"]["name"]) for p in results["parts"]
            if "functionResponse" in p] == [
        ("call_paris_1", "get_weather"),
        ("call_rome_1", "get_weather"),
    ]  # fmt: skip


def test_thought_signature_goes_back_on_its_part() -> None:
    body, _ = sent("tool_call_extras")

    part = body["contents"][1]["parts"][0]
    assert part["thoughtSignature"] == "dGhvdWdodA=="
    assert part["functionCall"]["id"] == "call_g_1"


@pytest.mark.parametrize(
    ("name", "budget"),
    [("reasoning_low", 1024), ("reasoning_medium", 8192), ("reasoning_high", 24576)],
)
def test_reasoning_cases_set_thinking_config(name: str, budget: int) -> None:
    body, _ = sent(name)

    assert body["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": True,
        "thinkingBudget": budget,
    }


def test_other_providers_thinking_is_not_sent_back() -> None:
    body, _ = sent("reasoning_round_trip")

    assert b"17 * 23 = 391" not in orjson.dumps(body)
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "391"}]}


def test_system_only_has_contents() -> None:
    body, _ = sent("system_only")

    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hello."}]}]


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("n_2", {"candidateCount": 2}),
        ("stop_newline", {"stopSequences": ["\n"]}),
        ("stop_list", {"stopSequences": ["END", " ", "\n\n", "STOP"]}),
        ("sampling_both", {"temperature": 0.2, "topP": 0.9}),
        ("penalties_seed", {"presencePenalty": 0.5, "frequencyPenalty": 0.3, "seed": 7}),
        ("both_limits", {"maxOutputTokens": 512}),
        ("logprobs", {"responseLogprobs": True, "logprobs": 3}),
        ("json_object", {"responseMimeType": "application/json"}),
    ],
)
def test_generation_config(name: str, config: dict[str, Any]) -> None:
    body, _ = sent(name)

    assert body["generationConfig"] == config


@pytest.mark.parametrize("name", ["stream_usage", "stream_tools"])
def test_streams_use_the_sse_method(name: str) -> None:
    _, url = sent(name)

    assert url.endswith(":streamGenerateContent?alt=sse")
