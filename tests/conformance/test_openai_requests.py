"""Every case of the request matrix (tests/conformance/matrix.py) through OpenAIAdapter, as
`openai` and as `openai-compatible`, on a reasoning model and on one without reasoning: the
upstream body must validate against the official SDK's request type
(`openai.types.chat.completion_create_params.CompletionCreateParamsNonStreaming` /
`...Streaming`) with extra keys forbidden at every level (messages, content parts, tools,
tool calls), and hold what the adapter promises for the case."""

from __future__ import annotations

import collections.abc
import dataclasses
from typing import Any, get_args

import pydantic
import pytest
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from typing_extensions import get_type_hints, is_typeddict

from runtime.adapters.openai import REASONING_REFUSES, OpenAIAdapter
from runtime.config import ModelConfig, ProviderConfig
from tests.conformance.matrix import CASES, MODEL, capture

GATEWAY_ONLY = ("reasoning_content", "thinking_blocks", "extra_content", "cache_control")
PLAIN_MODEL = dataclasses.replace(MODEL, capabilities=MODEL.capabilities - {"reasoning"})


def _forbid_extras(tp: Any, seen: set[Any]) -> None:
    """Set `extra="forbid"` on `tp` and every TypedDict reachable from it (pydantic reads a
    TypedDict's config from `__pydantic_config__`; the SDK's own allow extra keys)."""
    if isinstance(tp, type) and is_typeddict(tp):
        if tp in seen:
            return
        seen.add(tp)
        tp.__pydantic_config__ = pydantic.ConfigDict(extra="forbid")  # type: ignore[attr-defined]
        for hint in get_type_hints(tp, include_extras=True).values():
            _forbid_extras(hint, seen)
        return
    for arg in get_args(tp):
        _forbid_extras(arg, seen)


_SEEN: set[Any] = set()
_forbid_extras(CompletionCreateParamsNonStreaming, _SEEN)
_forbid_extras(CompletionCreateParamsStreaming, _SEEN)
NON_STREAMING = pydantic.TypeAdapter(CompletionCreateParamsNonStreaming)
STREAMING = pydantic.TypeAdapter(CompletionCreateParamsStreaming)


def _drain(value: Any) -> None:
    """Consume what pydantic validates lazily (`Iterable[...]` fields such as `messages`)."""
    if isinstance(value, dict):
        for v in value.values():
            _drain(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _drain(v)
    elif isinstance(value, (str, bytes, int, float, type(None))):
        return
    elif isinstance(value, collections.abc.Iterator):
        for v in value:
            _drain(v)


def validate(body: dict[str, Any], stream: bool) -> None:
    """Raise pydantic.ValidationError unless `body` is a request the SDK's type describes."""
    _drain((STREAMING if stream else NON_STREAMING).validate_python(body))


def provider(adapter: str) -> ProviderConfig:
    base_url = None if adapter == "openai" else "https://compatible.test/v1"
    return ProviderConfig(adapter, adapter, base_url, {"api_key": "K"}, False, 5.0, 1.0, {})  # type: ignore[arg-type]


def _keys(value: Any) -> set[str]:
    """Every dict key anywhere in `value`."""
    out: set[str] = set()
    if isinstance(value, dict):
        out.update(value)
        for v in value.values():
            out |= _keys(v)
    elif isinstance(value, list):
        for v in value:
            out |= _keys(v)
    return out


@pytest.mark.parametrize("model", [MODEL, PLAIN_MODEL], ids=["reasoning", "plain"])
@pytest.mark.parametrize("adapter", ["openai", "openai-compatible"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_is_a_valid_request(case: str, adapter: str, model: ModelConfig) -> None:
    request, stream = CASES[case]
    sent, call, refused = capture(OpenAIAdapter, provider(adapter), request, stream, model)
    assert refused is None  # OpenAI takes every case of the matrix (n > 1 included)
    assert sent is not None
    body = sent.json()
    validate(body, stream)
    assert body["model"] == "upstream-m"
    assert not _keys(body["messages"]) & set(GATEWAY_ONLY)
    assert not _keys(body.get("tools") or []) & set(GATEWAY_ONLY)
    assert "thinking" not in body
    assert not ("max_tokens" in body and "max_completion_tokens" in body)
    if stream:
        assert body["stream"] is True and body["stream_options"]["include_usage"] is True
    else:
        assert "stream" not in body and "stream_options" not in body
    reasoning = "reasoning" in model.capabilities
    if not reasoning:
        assert "reasoning_effort" not in body
    elif "reasoning_effort" in request:
        assert body["reasoning_effort"] == request["reasoning_effort"]
    if reasoning and adapter == "openai":
        assert "max_tokens" not in body
        assert not set(REASONING_REFUSES) & set(body)
        limit = request.get("max_completion_tokens", request.get("max_tokens"))
        assert body.get("max_completion_tokens") == limit
    if adapter == "openai-compatible":
        for key in ("temperature", "top_p", "presence_penalty", "seed", "stop", "logprobs"):
            assert body.get(key) == request.get(key), key
    if request.get("n"):
        assert body["n"] == request["n"]
    # Whatever changed from the client's body is said in the notes.
    changed = {k for k in set(request) | set(body) if request.get(k) != body.get(k)}
    changed -= {"model", "stream", "stream_options", "messages", "tools"}
    assert not changed or call.notes, (changed, call.notes)


def test_the_reasoning_round_trip_drops_the_thinking_but_keeps_the_answer() -> None:
    request, stream = CASES["reasoning_round_trip"]
    sent, _, _ = capture(OpenAIAdapter, provider("openai"), request, stream)
    assert sent is not None
    assistant = sent.json()["messages"][1]
    assert assistant == {"role": "assistant", "content": "391"}


def test_tool_call_extras_are_dropped_but_the_call_is_kept() -> None:
    request, stream = CASES["tool_call_extras"]
    sent, _, _ = capture(OpenAIAdapter, provider("openai"), request, stream)
    assert sent is not None
    (tc,) = sent.json()["messages"][1]["tool_calls"]
    assert tc == {
        "id": "call_g_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }


# --- the validation itself refuses what OpenAI does not define ------------------------------

BASE: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "body",
    [
        {**BASE, "messages": [{"role": "assistant", "content": "x", "reasoning_content": "r"}]},
        {
            **BASE,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}
            ],
        },
        {
            **BASE,
            "tools": [
                {"type": "function", "function": {"name": "f"}, "cache_control": {"type": "x"}}
            ],
        },
        {
            **BASE,
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                            "extra_content": {},
                        }
                    ],
                }
            ],
        },
        {**BASE, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    ],
    ids=[
        "reasoning_content",
        "part_cache_control",
        "tool_cache_control",
        "extra_content",
        "thinking",
    ],
)
def test_an_unknown_key_fails_the_validation(body: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        validate(body, False)


def test_a_known_body_passes_the_validation() -> None:
    validate(BASE, False)
    validate({**BASE, "stream": True, "stream_options": {"include_usage": True}}, True)
