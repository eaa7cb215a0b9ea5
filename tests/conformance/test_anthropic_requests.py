"""Every request of the matrix, through the Anthropic adapter, validated against the official
SDK's `MessageCreateParams` (streamed and not) with extra keys forbidden, plus what each case
must hold on Anthropic (docs/runtime.md, section "Anthropic")."""

from __future__ import annotations

import base64
import copy
import dataclasses
from typing import Any

import pydantic
import pytest

from runtime import tokens
from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.base import Call
from runtime.config import ModelConfig
from tests.conformance.anthropic_types import validate
from tests.conformance.matrix import CASES, MODEL, PNG_1PX, WEATHER_TOOL, capture, provider_config

PROVIDER = provider_config("anthropic", "https://anthropic.test", 5.0, MODEL)

VARIANTS = [(name, stream) for name in CASES for stream in (False, True)]
# The matrix model's id names no version (adaptive thinking); the same cases also go to a
# model of each thinking form by its upstream id (docs/runtime.md, "Anthropic").
BUDGETED = dataclasses.replace(MODEL, upstream="claude-sonnet-4-5-20250929")
SONNET_4_6 = dataclasses.replace(MODEL, upstream="claude-sonnet-4-6")
OPUS_4_7 = dataclasses.replace(MODEL, upstream="claude-opus-4-7")
MODELS = {"unversioned": MODEL, "budgeted": BUDGETED, "sonnet46": SONNET_4_6, "opus47": OPUS_4_7}
REASONING = [n for n in CASES if n.startswith("reasoning_") and n != "reasoning_round_trip"]


def sent(
    name: str, stream: bool, model: ModelConfig = MODEL
) -> tuple[dict[str, Any] | None, Call, str | None]:
    request, _ = CASES[name]
    req = dict(request)
    if stream:
        req["stream"] = True
    else:
        req.pop("stream", None)
        req.pop("stream_options", None)
    mock, call, refused = capture(AnthropicAdapter, PROVIDER, req, stream, model=model)
    return (None if mock is None else mock.json()), call, refused


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize(("name", "stream"), VARIANTS)
def test_every_case_is_a_valid_messages_request(name: str, stream: bool, model: str) -> None:
    body, call, refused = sent(name, stream, MODELS[model])
    if name == "n_2":
        assert body is None and refused == "n > 1: Anthropic answers one choice"
        return
    assert refused is None and body is not None, call.notes
    validate(body, stream)
    assert body.get("stream", False) is stream
    assert not {"temperature", "top_p", "top_k"} & body.keys()
    assert all(s.strip() for s in body.get("stop_sequences", ()))
    assert body["messages"] and body["messages"][0]["role"] == "user"
    assert "extra_content" not in repr(body)
    assert "reasoning_content" not in repr(body) and "thinking_blocks" not in repr(body)


def test_near_window_max_tokens_fits_the_window() -> None:
    body, _, _ = sent("near_window", False)
    assert body is not None
    request, _ = CASES["near_window"]
    assert 1 <= body["max_tokens"] <= MODEL.context_window - tokens.prompt_tokens(request)


@pytest.mark.parametrize("name", [n for n in REASONING if n != "reasoning_none"])
def test_reasoning_before_claude_4_6_is_a_budget_within_max_tokens(name: str) -> None:
    body, _, _ = sent(name, False, BUDGETED)
    assert body is not None
    thinking = body["thinking"]
    assert thinking["type"] == "enabled" and "effort" not in body.get("output_config", {})
    assert 1024 <= thinking["budget_tokens"] < body["max_tokens"] <= MODEL.max_output_tokens  # type: ignore[operator]


@pytest.mark.parametrize("model", ["unversioned", "sonnet46", "opus47"])
@pytest.mark.parametrize("name", [n for n in REASONING if n != "reasoning_none"])
def test_reasoning_from_claude_4_6_is_adaptive_with_an_effort(name: str, model: str) -> None:
    body, _, _ = sent(name, False, MODELS[model])
    assert body is not None
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    effort = CASES[name][0]["reasoning_effort"]
    expected = {"minimal": "low", "xhigh": "high" if model == "sonnet46" else "xhigh"}
    assert body["output_config"]["effort"] == expected.get(effort, effort)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_reasoning_none_sends_no_thinking(model: str) -> None:
    body, _, _ = sent("reasoning_none", False, MODELS[model])
    assert body is not None and "thinking" not in body and "output_config" not in body


@pytest.mark.parametrize(
    "native",
    [
        {"thinking": {"type": "adaptive", "display": "omitted"}},
        {"thinking": {"type": "enabled", "budget_tokens": 2048, "display": "summarized"}},
        {"thinking": {"type": "disabled"}},
        {"thinking": {"type": "between_tools"}, "output_config": {"effort": "low"}},
        {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}},
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_native_thinking_and_output_config_are_sent_as_given(
    native: dict[str, Any], stream: bool
) -> None:
    req = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4096}
    req.update(copy.deepcopy(native), reasoning_effort="high")
    if stream:
        req["stream"] = True
    mock, _, _ = capture(AnthropicAdapter, PROVIDER, req, stream, model=OPUS_4_7)
    assert mock is not None
    body = mock.json()
    validate(body, stream)
    for key, value in native.items():
        assert body[key] == value


def test_signatures_are_round_tripped() -> None:
    body, _, _ = sent("reasoning_round_trip", False)
    assert body is not None
    assistant = body["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "17 * 23 = 391",
        "signature": "c2ln",
    }


def test_cache_control_is_kept() -> None:
    body, _, _ = sent("cache_control", False)
    assert body is not None
    assert body["system"] == [
        {
            "type": "text",
            "text": "A long reference document.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}


def test_system_only_has_a_user_turn() -> None:
    body, call, _ = sent("system_only", False)
    assert body is not None
    assert body["system"] == "Say hello." and len(body["messages"]) == 1
    assert call.notes


@pytest.mark.parametrize("name", ["sampling_both", "temperature", "top_p"])
def test_sampling_parameters_are_dropped_with_a_note(name: str) -> None:
    body, call, _ = sent(name, False)
    assert body is not None and not {"temperature", "top_p", "top_k"} & body.keys()
    assert [n for n in call.notes if "sampling parameters" in n]


def test_whitespace_stops_are_dropped() -> None:
    assert "stop_sequences" not in sent("stop_newline", False)[0]  # type: ignore[operator]
    body, _, _ = sent("stop_list", False)
    assert body is not None and body["stop_sequences"] == ["END", "STOP"]


def test_strict_json_schema_is_structured_output() -> None:
    body, _, _ = sent("json_schema_strict", False)
    assert body is not None and body["output_config"]["format"]["type"] == "json_schema"
    tool_body, _, _ = sent("rich_schema_tool", False)
    assert tool_body is not None and tool_body["tools"][0]["strict"] is True


# --- content Anthropic reads, and what skips the candidate -----------------------------------

TEXT_B64 = base64.b64encode("Zwei Zeilen.\nÜber alles.".encode()).decode()


def _one_part(part: dict[str, Any], **fields: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": "What is this?"}, part]
    return {"model": "m", "messages": [{"role": "user", "content": content}], **fields}


@pytest.mark.parametrize(
    ("part", "source"),
    [
        *[
            (
                {"type": "image_url", "image_url": {"url": f"data:{t};base64,{PNG_1PX}"}},
                {"type": "base64", "media_type": t, "data": PNG_1PX},
            )
            for t in ("image/png", "image/jpeg", "image/gif", "image/webp")
        ],
        (
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PNG_1PX}"}},
            {"type": "base64", "media_type": "application/pdf", "data": PNG_1PX},
        ),
        (
            {"type": "file", "file": {"file_data": "https://example.com/a.pdf"}},
            {"type": "url", "url": "https://example.com/a.pdf"},
        ),
        (
            {"type": "file", "file": {"file_data": f"data:text/plain;base64,{TEXT_B64}"}},
            {"type": "text", "media_type": "text/plain", "data": "Zwei Zeilen.\nÜber alles."},
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_images_and_documents_are_sources_the_sdk_declares(
    part: dict[str, Any], source: dict[str, Any], stream: bool
) -> None:
    req = _one_part(part, **({"stream": True} if stream else {}))
    mock, _, refused = capture(AnthropicAdapter, PROVIDER, req, stream)
    assert refused is None and mock is not None
    body = mock.json()
    validate(body, stream)
    assert body["messages"][0]["content"][1]["source"] == source


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (
            _one_part({"type": "image_url", "image_url": {"url": "data:image/heic;base64,AAAA"}}),
            "image type 'image/heic': Anthropic takes image/jpeg, image/png, image/gif, image/webp",
        ),
        (
            _one_part({"type": "file", "file": {"file_data": "data:text/csv;base64,YSxi"}}),
            "file type 'text/csv': Anthropic takes PDF and plain text documents",
        ),
        (
            _one_part({"type": "file", "file": {"file_id": "file-abc"}}),
            "a file part by `file_id`: Anthropic cannot read OpenAI's stored files",
        ),
        (
            _one_part({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
            "content part 'input_audio': Anthropic takes text, images and PDF or text files",
        ),
        (
            {"model": "m", "messages": [{"role": "function", "name": "f", "content": "1"}]},
            "message role 'function': Anthropic takes system, user, assistant, tool",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto"}},
            },
            "tool_choice {'type': 'allowed_tools', 'allowed_tools': {'mode': 'auto'}}: "
            "Anthropic takes auto, none, required, a function",
        ),
    ],
)
def test_what_anthropic_cannot_read_skips_the_candidate(
    request_: dict[str, Any], reason: str
) -> None:
    mock, _, refused = capture(AnthropicAdapter, PROVIDER, request_, False)
    assert mock is None and refused == reason


# --- the validator itself refuses what the SDK does not declare -----------------------------


def _plain() -> dict[str, Any]:
    body, _, _ = sent("tool_results", False)
    assert body is not None
    return body


@pytest.mark.parametrize(
    "spoil",
    [
        lambda b: b.__setitem__("bogus", 1),
        lambda b: b.__setitem__("n", 2),
        lambda b: b.__setitem__("temperature", 0.5),
        lambda b: b.__setitem__("top_p", 0.9),
        lambda b: b.__setitem__("top_k", 40),
        lambda b: b.__setitem__("thinking", {"type": "adaptive", "effort": "high"}),
        lambda b: b.__setitem__("output_config", {"effort": "minimal"}),
        lambda b: b["messages"][0]["content"][0].__setitem__("bogus", 1),
        lambda b: b["messages"][1]["content"][0].__setitem__("extra_content", {}),
        lambda b: b["tools"][0].__setitem__("parameters", {}),
        lambda b: b.__setitem__("tool_choice", {"type": "required"}),
        lambda b: b.__setitem__("thinking", {"type": "enabled"}),
        lambda b: b["messages"][0].__setitem__("role", "tool"),
    ],
)
def test_the_validator_refuses_unknown_or_wrong_keys(spoil: Any) -> None:
    body = copy.deepcopy(_plain())
    validate(body, False)
    spoil(body)
    with pytest.raises((pydantic.ValidationError, ValueError)):
        validate(body, False)


def test_the_validator_refuses_a_stream_flag_of_the_wrong_variant() -> None:
    body = _plain()
    with pytest.raises(pydantic.ValidationError):
        validate({**body, "stream": True}, False)
    with pytest.raises(pydantic.ValidationError):
        validate(body, True)
