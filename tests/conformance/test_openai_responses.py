"""OpenAI's documented answers (tests/conformance/fixtures/openai/, each with its source)
validated against the official SDK response types (`openai.types.chat.ChatCompletion`,
`ChatCompletionChunk`, no field the type does not know), then fed through OpenAIAdapter and
the chat handler in process: the client gets every field the provider sent — choices with
their logprobs and tool calls, usage with its details, `service_tier`, `system_fingerprint` —
with only `id` and `created` set by the gateway (streamed chunks are relayed as sent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from runtime.adapters import Usage
from runtime.adapters.openai import parse_completion
from tests.unit import scripted as s
from tests.unit.test_openai_adapter import gateway, post, reply, stream_of

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
COMPLETIONS = sorted(p.name for p in FIXTURES.glob("completion_*.json"))
STREAMS = sorted(p.name for p in FIXTURES.glob("stream_*.json"))


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    assert doc.pop("_source").strip(), f"{name} names no source"
    return doc


def no_extras(model: Any, where: str = "$") -> None:
    """Fail when a pydantic model, or one nested in it, kept a field its type does not know."""
    if isinstance(model, pydantic.BaseModel):
        assert not model.model_extra, (
            f"{where}: fields the SDK type does not know: {model.model_extra}"
        )
        for name in type(model).model_fields:
            no_extras(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, list):
        for i, item in enumerate(model):
            no_extras(item, f"{where}[{i}]")


def test_every_fixture_names_its_source() -> None:
    assert len(COMPLETIONS) >= 5 and len(STREAMS) >= 2
    sources = (FIXTURES / "SOURCES.md").read_text()
    for name in COMPLETIONS + STREAMS:
        assert name in sources


@pytest.mark.parametrize("name", COMPLETIONS)
def test_a_completion_fixture_is_a_chat_completion(name: str) -> None:
    no_extras(ChatCompletion.model_validate(load(name)))


@pytest.mark.parametrize("name", STREAMS)
def test_a_stream_fixture_is_chat_completion_chunks(name: str) -> None:
    for chunk in load(name)["chunks"]:
        no_extras(ChatCompletionChunk.model_validate(chunk))


@pytest.mark.parametrize("name", COMPLETIONS)
def test_the_client_gets_every_field_of_a_completion(name: str) -> None:
    doc = load(name)
    gw, _, _ = gateway(reply(doc))
    resp = post(gw, s.chat("r", n=len(doc["choices"])))
    assert resp.status == 200
    got = resp.json()
    no_extras(ChatCompletion.model_validate(got))
    assert got["id"].startswith("chatcmpl-") and got["id"] != doc["id"]
    assert set(got) == set(doc)
    for key in set(doc) - {"id", "created"}:
        assert got[key] == doc[key], key
    rec = gw.sink.records[0]
    u = doc["usage"]
    assert (rec.input_tokens, rec.output_tokens) == (u["prompt_tokens"], u["completion_tokens"])
    assert not rec.usage_estimated


@pytest.mark.parametrize("name", STREAMS)
def test_the_client_gets_every_chunk_as_sent(name: str) -> None:
    chunks = load(name)["chunks"]
    gw, _, _ = gateway(stream_of(*chunks))
    resp = post(gw, s.chat("r", stream=True, stream_options={"include_usage": True}))
    assert resp.status == 200
    events = resp.events()
    assert events[-1] == "[DONE]"
    assert events[:-1] == chunks
    for event in events[:-1]:
        no_extras(ChatCompletionChunk.model_validate(event))
    u = chunks[-1]["usage"]
    rec = gw.sink.records[0]
    assert (rec.input_tokens, rec.output_tokens) == (u["prompt_tokens"], u["completion_tokens"])


def test_usage_details_reach_the_adapters_usage() -> None:
    cached = parse_completion(load("completion_usage_details.json")).usage
    thought = parse_completion(load("completion_reasoning.json")).usage
    assert cached == Usage(1117, 46, cached_input_tokens=1024)
    assert thought == Usage(25, 1186, reasoning_tokens=1024)
