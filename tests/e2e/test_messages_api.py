"""`POST /v1/messages` as users run it: the official `anthropic` SDK (`messages.create`,
`messages.stream`, `messages.count_tokens`) with a gateway key, against `python -m runtime
serve` in front of the fake providers on loopback — text, tools both ways, images and thinking,
each streamed and not, translated for OpenAI and Gemini and passed through to Anthropic, and
each also through a fallback from a failing first candidate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, replace_model, runtime_config

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ"
    "GAhKmMIQAAAABJRU5ErkJggg=="
)
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
THINKING: Any = {"type": "enabled", "budget_tokens": 2048}


@pytest.fixture(scope="module")
def gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The test config with its three providers' models marked `reasoning` (Anthropic's
    `thinking` is a reasoning request)."""
    config = runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url)
    for pid, name in (("openai", "gpt"), ("anthropic", "claude"), ("gemini", "gemini")):
        caps = config.providers[pid].models[name].capabilities | {"reasoning"}
        config = replace_model(config, pid, name, capabilities=caps)
    gw = Gateway(config.with_hash(), Path(tmp_path_factory.mktemp("gateway")))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> anthropic.Anthropic:
    # the SDK sends the key as `x-api-key`, as Claude Code does
    return anthropic.Anthropic(
        base_url=gateway.url, api_key=gateway.key(), max_retries=0, timeout=15
    )


def ask(
    client: anthropic.Anthropic, route: str, stream: bool, **fields: Any
) -> tuple[anthropic.types.Message, dict[str, str]]:
    """The answer (accumulated by the SDK when streamed) and the response headers."""
    fields.setdefault("messages", [{"role": "user", "content": "plain please"}])
    fields.setdefault("max_tokens", 4096)
    if not stream:
        raw = client.messages.with_raw_response.create(model=route, **fields)
        return raw.parse(), dict(raw.headers)
    with client.messages.stream(model=route, **fields) as s:
        text = "".join(s.text_stream)
        message = s.get_final_message()
        headers = dict(s.response.headers)
    assert text == "".join(b.text for b in message.content if b.type == "text")
    return message, headers


def text_of(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


# (route, the fake that fails first or None, the provider that answers)
PATHS = [
    ("gemini-first", None, "gemini"),  # translated
    ("anthropic-first", None, "anthropic"),  # passed through
    ("anthropic-first", "anthropic", "openai"),  # Anthropic fails: translated for OpenAI
    ("chat", "openai", "anthropic"),  # OpenAI fails: passed through to Anthropic
]
IDS = [f"{r}-{f or 'ok'}" for r, f, _ in PATHS]


def fail_first(fakes: Fakes, which: str | None) -> None:
    if which is not None:
        getattr(fakes, which).push(Fault("status", status=500))


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(("route", "failing", "provider"), PATHS, ids=IDS)
def test_text(
    route: str,
    failing: str | None,
    provider: str,
    stream: bool,
    client: anthropic.Anthropic,
    clean_fakes: Fakes,
) -> None:
    fail_first(clean_fakes, failing)
    message, headers = ask(client, route, stream, system="Be brief.")
    assert text_of(message).startswith(f"Hello from fake-{provider}")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert headers["x-switchyard-provider"] == provider
    assert headers["x-request-id"].startswith("req_")
    if provider != "anthropic":  # translated: the id is the gateway's
        assert message.id == "msg_" + headers["x-request-id"][4:]
    assert headers.get("x-switchyard-attempts") == ("2" if failing else "1")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(("route", "failing", "provider"), PATHS, ids=IDS)
def test_tools_both_ways(
    route: str,
    failing: str | None,
    provider: str,
    stream: bool,
    client: anthropic.Anthropic,
    clean_fakes: Fakes,
) -> None:
    fail_first(clean_fakes, failing)
    turns: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    message, _ = ask(client, route, stream, tools=TOOLS, messages=turns)
    assert message.stop_reason == "tool_use"
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input, dict)
    assert set(call.input) == {"city"}
    fail_first(clean_fakes, failing)
    blocks = [b.model_dump(exclude_none=True) for b in message.content]
    turns += [
        {"role": "assistant", "content": blocks},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
    ]  # fmt: skip
    answer, _ = ask(client, route, stream, tools=TOOLS, messages=turns)
    assert answer.stop_reason == "end_turn"
    assert text_of(answer).startswith(f"Hello from fake-{provider}")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(("route", "failing", "provider"), PATHS, ids=IDS)
def test_images(
    route: str,
    failing: str | None,
    provider: str,
    stream: bool,
    client: anthropic.Anthropic,
    clean_fakes: Fakes,
) -> None:
    fail_first(clean_fakes, failing)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    turns = [{"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}]
    message, _ = ask(client, route, stream, messages=turns)
    assert text_of(message).startswith(f"Hello from fake-{provider}")
    sent = getattr(clean_fakes, provider).requests[-1].body
    assert PNG in str(sent)  # the image reached the provider, in its own format


# Thinking: the Gemini fake thinks when asked (includeThoughts) and Anthropic's signs its
# thinking; OpenAI's chat completions return no reasoning text, so no fallback to it here.
THINKERS = [
    ("gemini-first", None, "gemini"),
    ("anthropic-first", None, "anthropic"),
    ("chat", "openai", "anthropic"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(
    ("route", "failing", "provider"), THINKERS, ids=[f"{r}-{f or 'ok'}" for r, f, _ in THINKERS]
)
def test_thinking(
    route: str,
    failing: str | None,
    provider: str,
    stream: bool,
    client: anthropic.Anthropic,
    clean_fakes: Fakes,
) -> None:
    fail_first(clean_fakes, failing)
    message, _ = ask(client, route, stream, thinking=THINKING)
    first = message.content[0]
    assert first.type == "thinking"
    assert first.thinking.startswith("Thinking about: plain please")
    assert text_of(message).startswith(f"Hello from fake-{provider}")
    if provider == "anthropic":
        assert first.signature  # Anthropic's signature, to send back unchanged


def test_thinking_reaches_openai_as_reasoning_effort(
    client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    thinking = {"type": "enabled", "budget_tokens": 8192}
    message, _ = ask(client, "chat", False, max_tokens=16000, thinking=thinking)
    assert text_of(message).startswith("Hello from fake-openai")
    assert clean_fakes.openai.requests[-1].body["reasoning_effort"] == "medium"


def test_a_bad_request_is_anthropics_error(client: anthropic.Anthropic, clean_fakes: Fakes) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="chat",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"temperature": 1.5},  # Anthropic's range is 0 to 1
        )
    body: Any = info.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("`temperature`")
    assert info.value.response.headers["x-request-id"].startswith("req_")
    assert not clean_fakes.openai.requests


def test_a_wrong_key_is_anthropics_authentication_error(gateway: Gateway) -> None:
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="sy_test_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(
            model="chat", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_count_tokens_is_an_estimate_flagged_as_one(
    client: anthropic.Anthropic, clean_fakes: Fakes
) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="chat", system="x" * 40, messages=[{"role": "user", "content": "y" * 400}]
    )
    counted = raw.parse()
    assert counted.input_tokens == 118
    assert raw.headers["x-switchyard-token-estimate"]
    assert not any(f.requests for f in clean_fakes.all())  # no provider was asked
