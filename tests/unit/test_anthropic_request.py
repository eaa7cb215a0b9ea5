"""The Anthropic adapter's request rules (issue 11): what Anthropic takes, mapped or dropped
with a note, per docs/runtime.md section "Anthropic"."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.anthropic_request import (
    MIN_THINKING_BUDGET,
    SYSTEM_ONLY_USER_TURN,
    THINKING_BUDGETS,
    build_request,
    claude_version,
    strict_schema,
)
from runtime.adapters.base import Call
from runtime.config import ModelConfig
from runtime.errors import Unservable
from tests.conformance.matrix import capture, provider_config

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Hello"}]
REASONING = frozenset({"streaming", "tools", "reasoning"})


# A model id before adaptive thinking (budgets only) and one with it.
BUDGETED = "claude-sonnet-4-5-20250929"
ADAPTIVE = "claude-opus-4-7"


def model(
    capabilities: frozenset[str] = REASONING,
    window: int = 200_000,
    max_output: int | None = 64_000,
    upstream: str = "claude-up",
) -> ModelConfig:
    return ModelConfig("claude", upstream, window, max_output, capabilities, None)


def build(cfg: ModelConfig | None = None, **fields: Any) -> tuple[dict[str, Any], list[str]]:
    """The upstream body and the notes for a request with `fields` (messages default HELLO)."""
    call = Call({"model": "r", "messages": HELLO, **fields}, cfg or model(), {}, "req")
    return build_request(call), call.notes


PROVIDER = provider_config("anthropic", "https://anthropic.test", 5.0)


# --- 1. sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.2, "top_p": 0.9},
        {"temperature": 0.4},
        {"temperature": 1.5},
        {"top_p": 0.5},
        {"top_k": 40},
        {"temperature": 0.3, "top_p": 0.97, "top_k": 5, "reasoning_effort": "low"},
        {"temperature": 0.3, "thinking": {"type": "disabled"}},
    ],
)
def test_sampling_parameters_are_dropped_with_one_note(fields: dict[str, Any]) -> None:
    body, notes = build(**fields)
    assert not {"temperature", "top_p", "top_k"} & body.keys()
    sampling = [n for n in notes if "sampling" in n]
    assert len(sampling) == 1
    named = [k for k in ("temperature", "top_p", "top_k") if k in fields]
    assert sampling[0].startswith("dropped " + ", ".join(f"`{k}`" for k in named) + ":")


def test_sampling_parameters_set_to_null_leave_no_note() -> None:
    body, notes = build(temperature=None, top_p=None)
    assert not {"temperature", "top_p"} & body.keys() and notes == []


# --- 2. stop sequences ---------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["\n", " ", ["\n\n"], ["\t", " "]])
def test_whitespace_only_stop_sequences_are_dropped(stop: Any) -> None:
    body, notes = build(stop=stop)
    assert "stop_sequences" not in body
    assert any("whitespace-only" in n for n in notes)


def test_other_stop_sequences_are_kept() -> None:
    body, notes = build(stop=["END", " ", "\n\n", "STOP"])
    assert body["stop_sequences"] == ["END", "STOP"]
    assert len(notes) == 1


# --- 3. max_tokens -------------------------------------------------------------------------


def test_without_max_tokens_the_output_limit_is_sent_when_it_fits() -> None:
    body, notes = build()
    assert body["max_tokens"] == 64_000 and notes == []


def test_without_max_tokens_a_long_prompt_gets_what_fits_the_window() -> None:
    text = "word " * 150_000  # 750,000 characters: 187,500 estimated tokens
    body, _ = build(messages=[{"role": "user", "content": text}])
    assert body["max_tokens"] == 200_000 - (187_500 + 4)


def test_a_max_tokens_lowered_to_fit_is_noted() -> None:
    _, notes = build(messages=[{"role": "user", "content": "word " * 150_000}])
    assert any("fits the context window" in n for n in notes)


def test_max_tokens_is_never_below_one() -> None:
    body, _ = build(model(window=1000), messages=[{"role": "user", "content": "x" * 8000}])
    assert body["max_tokens"] == 1


def test_without_an_output_limit_the_default_is_sent() -> None:
    assert build(model(max_output=None))[0]["max_tokens"] == 4096


def test_max_completion_tokens_supersedes_max_tokens() -> None:
    assert build(max_completion_tokens=512)[0]["max_tokens"] == 512
    assert build(max_tokens=256)[0]["max_tokens"] == 256
    body, notes = build(max_tokens=256, max_completion_tokens=512)
    assert body["max_tokens"] == 512
    assert any("supersedes" in n for n in notes)


# --- 4. thinking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "version"),
    [
        ("claude-sonnet-4-6", (4, 6)),
        ("claude-haiku-4-5-20251001", (4, 5)),
        ("claude-sonnet-4-20250514", (4, 0)),
        ("claude-3-7-sonnet-20250219", (3, 7)),
        ("claude-3-5-haiku-latest", (3, 5)),
        ("anthropic.claude-opus-4-6-v1", (4, 6)),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", (4, 5)),
        ("claude-opus-4-1@20250805", (4, 1)),
        ("claude-fable-5-1", (5, 1)),
        ("claude-opus-5", (5, 0)),
        ("claude-mythos-preview", None),
        ("claude-up", None),
    ],
)
def test_claude_version_of_a_model_id(upstream: str, version: tuple[int, int] | None) -> None:
    assert claude_version(upstream) == version


@pytest.mark.parametrize("effort", sorted(THINKING_BUDGETS))
@pytest.mark.parametrize("upstream", [BUDGETED, "claude-3-7-sonnet-20250219", "claude-opus-4-1"])
def test_reasoning_effort_before_claude_4_6_is_a_thinking_budget(
    effort: str, upstream: str
) -> None:
    body, notes = build(model(upstream=upstream), reasoning_effort=effort)
    budget = THINKING_BUDGETS[effort]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert MIN_THINKING_BUDGET <= budget < body["max_tokens"]
    assert "output_config" not in body and notes == []


@pytest.mark.parametrize(
    ("effort", "sent"),
    [("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high"),
     ("xhigh", "xhigh")],
)  # fmt: skip
@pytest.mark.parametrize("upstream", [ADAPTIVE, "claude-sonnet-5", "claude-mythos-preview"])
def test_reasoning_effort_from_claude_4_6_is_adaptive_thinking_with_an_effort(
    effort: str, sent: str, upstream: str
) -> None:
    body, _ = build(model(upstream=upstream), reasoning_effort=effort)
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["output_config"] == {"effort": sent}
    assert body["max_tokens"] == 64_000


def test_xhigh_before_claude_4_7_is_sent_as_high_with_a_note() -> None:
    body, notes = build(model(upstream="claude-sonnet-4-6"), reasoning_effort="xhigh")
    assert body["thinking"]["type"] == "adaptive" and body["output_config"] == {"effort": "high"}
    assert any("effort `high`" in n and "4.6" in n for n in notes)


def test_reasoning_effort_none_sends_no_thinking() -> None:
    for upstream in (BUDGETED, ADAPTIVE):
        body, notes = build(model(upstream=upstream), reasoning_effort="none")
        assert "thinking" not in body and "output_config" not in body and notes == []


def test_effort_joins_a_structured_output_format() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": SCHEMA}}
    body, _ = build(model(upstream=ADAPTIVE), reasoning_effort="low", response_format=fmt)
    assert body["output_config"]["effort"] == "low"
    assert body["output_config"]["format"]["type"] == "json_schema"


def test_a_native_output_config_is_sent_as_is() -> None:
    native = {"effort": "max"}
    body, notes = build(model(upstream=ADAPTIVE), output_config=native, reasoning_effort="low")
    assert body["output_config"] == {"effort": "max"}
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert any("own `output_config.effort`" in n for n in notes)
    body, _ = build(output_config={"effort": "medium"}, thinking={"type": "adaptive"})
    assert body["output_config"] == {"effort": "medium"} and body["thinking"] == {
        "type": "adaptive"
    }


def test_max_tokens_is_raised_above_the_budget_within_the_limit() -> None:
    budgeted = model(upstream=BUDGETED)
    body, notes = build(budgeted, reasoning_effort="medium", max_completion_tokens=8000)
    assert body["thinking"]["budget_tokens"] == THINKING_BUDGETS["medium"]
    assert body["max_tokens"] == THINKING_BUDGETS["medium"] + 8000
    assert any("raised max_tokens" in n for n in notes)
    small = model(max_output=10_000, upstream=BUDGETED)
    body, _ = build(small, reasoning_effort="high", max_tokens=100)
    assert body["max_tokens"] == 10_000 and body["thinking"]["budget_tokens"] == 9_999


def test_thinking_is_dropped_when_no_budget_fits() -> None:
    body, notes = build(model(max_output=1000, upstream=BUDGETED), reasoning_effort="low")
    assert "thinking" not in body and any("dropped thinking" in n for n in notes)


def test_reasoning_effort_on_a_model_without_reasoning_is_dropped() -> None:
    body, notes = build(model(frozenset({"streaming"})), reasoning_effort="high")
    assert "thinking" not in body
    assert any("does not reason" in n for n in notes)


def test_a_native_thinking_object_is_sent_as_is() -> None:
    body, _ = build(thinking={"type": "adaptive", "display": "summarized"})
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    body, _ = build(thinking={"type": "enabled", "budget_tokens": 3000})
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 3000}


@pytest.mark.parametrize("upstream", [BUDGETED, ADAPTIVE])
def test_thinking_is_dropped_when_a_tool_is_forced(upstream: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body, notes = build(
        model(upstream=upstream), reasoning_effort="low", tools=[tool], tool_choice="required"
    )
    assert "thinking" not in body and "output_config" not in body
    assert body["tool_choice"] == {"type": "any"}
    assert any("forces a tool" in n for n in notes)


TOOL_CALL = {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL_LOOP: list[dict[str, Any]] = [
    *HELLO,
    {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
]


@pytest.mark.parametrize("upstream", [BUDGETED, ADAPTIVE])
def test_thinking_is_dropped_when_the_answered_tool_turn_has_no_thinking_block(
    upstream: str,
) -> None:
    body, notes = build(model(upstream=upstream), messages=TOOL_LOOP, reasoning_effort="low")
    assert "thinking" not in body and "output_config" not in body
    assert any("carries no thinking block" in n for n in notes)


def test_thinking_is_kept_when_the_tool_turn_starts_with_its_block() -> None:
    signed = {"type": "thinking", "thinking": "t", "signature": "c2ln"}
    turn = {**TOOL_LOOP[1], "thinking_blocks": [signed]}
    body, notes = build(messages=[*HELLO, turn, TOOL_LOOP[2]], reasoning_effort="low")
    assert body["thinking"]["type"] == "adaptive" and notes == []
    # a finished tool loop (a later plain user turn) needs no block either
    later = [*TOOL_LOOP, {"role": "assistant", "content": "done"}, *HELLO]
    body, notes = build(messages=later, reasoning_effort="low")
    assert body["thinking"]["type"] == "adaptive" and notes == []


# --- 5. thinking blocks back ---------------------------------------------------------------


def test_thinking_blocks_go_back_first_in_the_assistant_turn() -> None:
    blocks = [
        {"type": "thinking", "thinking": "17 * 23 = 391", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "ZW5j"},
    ]
    call = {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assistant = {
        "role": "assistant",
        "content": "391",
        "reasoning_content": "17 * 23 = 391",
        "thinking_blocks": blocks,
        "tool_calls": [call],
    }
    body, notes = build(messages=[*HELLO, assistant, {"role": "tool", "tool_call_id": "toolu_1",
                                                      "content": "ok"}])  # fmt: skip
    assert body["messages"][1]["content"] == [
        *blocks,
        {"type": "text", "text": "391"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ]
    assert notes == []


def test_reasoning_content_without_blocks_is_dropped_with_a_note() -> None:
    assistant = {"role": "assistant", "content": "391", "reasoning_content": "think"}
    body, notes = build(messages=[*HELLO, assistant, *HELLO])
    assert body["messages"][1]["content"] == [{"type": "text", "text": "391"}]
    assert any("`reasoning_content`" in n for n in notes)


# --- 6. strict tools and structured outputs ------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "target": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    },
    "required": ["tags", "target"],
}


def test_strict_tools_are_strict_with_a_schema_anthropic_takes() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": SCHEMA, "strict": True}}
    [sent] = build(tools=[tool])[0]["tools"]
    assert sent["strict"] is True
    assert sent["input_schema"] == strict_schema(SCHEMA)
    assert sent["input_schema"]["additionalProperties"] is False
    assert "anyOf" in sent["input_schema"]["properties"]["target"]


def test_strict_json_schema_goes_to_output_config() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA, "strict": True}}
    body, _ = build(response_format=fmt)
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": strict_schema(SCHEMA)}
    }
    assert "system" not in body


def test_json_object_and_loose_schemas_stay_an_instruction() -> None:
    body, _ = build(response_format={"type": "json_object"})
    assert "JSON object" in body["system"] and "output_config" not in body
    loose = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}
    body, _ = build(response_format=loose)
    assert "JSON Schema" in body["system"] and "output_config" not in body


def test_strict_schema_follows_the_sdk_rule() -> None:
    out = strict_schema(
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "description": "A number"},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "pick": {"type": ["string", "null"], "enum": ["a", None]},
                "ref": {"$ref": "#/$defs/x"},
            },
            "$defs": {"x": {"type": "object", "properties": {}, "additionalProperties": True}},
        }
    )
    props = out["properties"]
    assert props["n"] == {"type": "integer", "description": "A number\n\n{minimum: 1}"}
    assert props["when"] == {"type": "string", "format": "date-time"}
    assert props["tags"]["description"] == "{minItems: 2}" and "minItems" not in props["tags"]
    assert props["pick"] == {"enum": ["a", None]}
    assert props["ref"] == {"$ref": "#/$defs/x"}
    assert out["$defs"]["x"]["additionalProperties"] is False


# --- 7. cache_control ----------------------------------------------------------------------

CACHE = {"type": "ephemeral", "ttl": "1h"}


def test_cache_control_on_system_parts_makes_system_a_block_list() -> None:
    messages = [
        {
            "role": "system",
            "content": [{"type": "text", "text": "Big doc", "cache_control": CACHE}],
        },
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": CACHE}]},
    ]
    body, _ = build(messages=messages)
    assert body["system"] == [
        {"type": "text", "text": "Big doc", "cache_control": CACHE},
        {"type": "text", "text": "Be brief."},
    ]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Hi", "cache_control": CACHE}
    ]


def test_cache_control_on_tools_assistant_and_tool_parts_is_kept() -> None:
    tool = {"type": "function", "function": {"name": "f"}, "cache_control": CACHE}
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        *HELLO,
        {"role": "assistant", "content": [{"type": "text", "text": "A", "cache_control": CACHE}],
         "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1",
         "content": [{"type": "text", "text": "R", "cache_control": CACHE}]},
    ]  # fmt: skip
    body, _ = build(messages=messages, tools=[tool])
    assert body["tools"][0]["cache_control"] == CACHE
    assert body["messages"][1]["content"][0] == {
        "type": "text",
        "text": "A",
        "cache_control": CACHE,
    }
    result = body["messages"][2]["content"][0]
    assert result["content"] == [{"type": "text", "text": "R", "cache_control": CACHE}]


def test_without_cache_control_system_stays_a_string() -> None:
    body, _ = build(messages=[{"role": "system", "content": "S"}, *HELLO])
    assert body["system"] == "S"


def test_parameters_without_an_equivalent_are_dropped_with_a_note() -> None:
    body, notes = build(logprobs=True, top_logprobs=3, seed=7, presence_penalty=0.5)
    assert not {"logprobs", "top_logprobs", "seed", "presence_penalty"} & set(body)
    assert notes == [
        "dropped `logprobs`, `top_logprobs`, `presence_penalty`, `seed`: "
        "Anthropic has no equivalent"
    ]


def test_openai_only_parameters_are_dropped_with_a_note() -> None:
    fields: dict[str, Any] = {
        "service_tier": "flex",
        "store": True,
        "metadata": {"k": "v"},
        "prediction": {"type": "content", "content": "x"},
        "prompt_cache_key": "k",
        "verbosity": "low",
        "web_search_options": {},
    }
    body, notes = build(**fields)
    assert not set(fields) & set(body)
    assert notes == [
        "dropped `service_tier`, `store`, `metadata`, `prediction`, `prompt_cache_key`, "
        "`verbosity`: Anthropic has no equivalent"
    ]
    assert build(store=False, metadata={})[1] == []


def test_safety_identifier_is_the_metadata_user_id() -> None:
    assert build(safety_identifier="s-1")[0]["metadata"] == {"user_id": "s-1"}
    assert build(safety_identifier="s-1", user="u-1")[0]["metadata"] == {"user_id": "s-1"}
    assert build(user="u-1")[0]["metadata"] == {"user_id": "u-1"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"modalities": ["text", "audio"]}, "audio output: Anthropic answers in text"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio output: Anthropic answers in text"),
        (
            {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
            "legacy `functions`: Anthropic takes them only as `tools`",
        ),
    ],
)
def test_what_only_openai_can_serve_skips_the_candidate(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Unservable) as caught:
        build(**fields)
    assert caught.value.message == reason
    assert "audio" not in build(modalities=["text"])[0]


# --- 8, 9, 12 ------------------------------------------------------------------------------


def test_n_above_one_skips_the_candidate_before_sending() -> None:
    sent, _, reason = capture(AnthropicAdapter, PROVIDER, {"model": "r", "messages": HELLO, "n": 2},
                              False)  # fmt: skip
    assert sent is None and reason == "n > 1: Anthropic answers one choice"
    with pytest.raises(Unservable):
        build(n=3)


def test_a_system_only_request_gets_one_user_turn() -> None:
    body, notes = build(messages=[{"role": "system", "content": "Say hello."}])
    assert body["system"] == "Say hello."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": SYSTEM_ONLY_USER_TURN}]}
    ]
    assert any("user turn" in n for n in notes)


def test_gateway_extras_on_tool_calls_never_reach_anthropic() -> None:
    call = {
        "id": "call_g_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a": 1}'},
        "extra_content": {"google": {"thought_signature": "dGhvdWdodA=="}},
    }
    body, _ = build(messages=[*HELLO, {"role": "assistant", "content": None, "tool_calls": [call]}])
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_g_1", "name": "f", "input": {"a": 1}}
    ]
    assert b"extra_content" not in repr(body).encode()
