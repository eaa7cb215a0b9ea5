"""Fault injection: every upstream failure × streaming on/off × a fallback available or not.

The gateway is the real `python -m runtime serve`; the client is the official openai SDK; the
upstream is the fake OpenAI server, told what to do wrong. Each case asserts what the client
saw AND what the request record says. Before the commit point a failure falls back invisibly
(or, with no fallback left, becomes a clean error); after it, the stream ends with an error
event, nothing is spliced from another provider, and the record says it broke after commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from runtime.errors import CLIENT_STATUS
from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, runtime_config

TIMEOUT_S = 1.0  # provider timeout_s of the matrix gateway
FIRST_BYTE_S = 0.5  # routes' first_byte_timeout_s

# name -> (fault, error classes the attempt may be recorded with)
PRE_COMMIT: dict[str, tuple[Fault, set[str]]] = {
    "429": (
        Fault("status", status=429, message="Rate limit reached", headers={"retry-after": "7"}),
        {"rate_limited"},
    ),
    "500": (Fault("status", status=500), {"server_error"}),
    "502": (Fault("status", status=502), {"server_error"}),
    "503": (Fault("status", status=503), {"server_error", "overloaded"}),
    "529": (Fault("status", status=529, message="Overloaded"), {"overloaded"}),
    "timeout-before-headers": (Fault("delay_headers", delay=TIMEOUT_S + 1.0), {"timeout"}),
    "timeout-before-first-chunk": (Fault("delay_first_chunk", delay=TIMEOUT_S + 1.0), {"timeout"}),
    "connection-reset": (Fault("reset"), {"connect_error"}),
    "malformed-body": (Fault("malformed"), {"server_error"}),
}
# Faults that happen after the first content chunk when streaming (before it otherwise).
MID_STREAM: dict[str, Fault] = {
    "stream-dropped": Fault("drop_mid_stream"),
    "error-event": Fault("error_event"),
    "no-terminator": Fault("no_terminator"),
}
# Attempts abandoned after the provider started generating (a stream opened with a 2xx, a
# plain call that timed out with no error status): billed as an estimate (docs/runtime.md).
BILLED = {
    ("timeout-before-headers", False),
    ("timeout-before-first-chunk", False),
    ("timeout-before-first-chunk", True),
    ("malformed-body", True),
}

CASES: list[tuple[str, bool, bool]] = []
for _name in PRE_COMMIT:
    for _stream in (False, True):
        for _fallback in (True, False):
            CASES.append((_name, _stream, _fallback))
for _fallback in (True, False):
    CASES.append(("stream-dropped", False, _fallback))  # non-streamed: the body is cut short
    for _name in MID_STREAM:
        CASES.append((_name, True, _fallback))


@pytest.fixture(scope="module")
def matrix_gw(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = runtime_config(
        fakes.openai.url,
        fakes.anthropic.url,
        fakes.gemini.url,
        timeout_s=TIMEOUT_S,
        first_byte_timeout_s=FIRST_BYTE_S,
    )
    gw = Gateway(config, Path(tmp_path_factory.mktemp("matrix")))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(matrix_gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=matrix_gw.url + "/v1", api_key=matrix_gw.key(), max_retries=0, timeout=15
    )


def _fault(name: str) -> Fault:
    return PRE_COMMIT[name][0] if name in PRE_COMMIT else MID_STREAM[name]


def _call(client: openai.OpenAI, route: str, stream: bool) -> tuple[str, str, Exception | None]:
    """(request id, text the client received, the exception the SDK raised or None)."""
    messages: Any = [{"role": "user", "content": "fault matrix"}]
    text = ""
    try:
        if stream:
            raw = client.chat.completions.with_raw_response.create(
                model=route, messages=messages, stream=True
            )
            rid = raw.headers["x-request-id"]
            try:
                for chunk in raw.parse():
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
            except openai.APIError as exc:
                return rid, text, exc
            return rid, text, None
        raw = client.chat.completions.with_raw_response.create(model=route, messages=messages)
        completion = raw.parse()
        return raw.headers["x-request-id"], completion.choices[0].message.content or "", None
    except openai.APIStatusError as exc:
        return exc.response.headers["x-request-id"], text, exc


@pytest.mark.parametrize(
    ("fault", "stream", "fallback"),
    CASES,
    ids=[f"{f}-{'stream' if s else 'plain'}-{'fallback' if fb else 'alone'}" for f, s, fb in CASES],
)
def test_fault(
    fault: str,
    stream: bool,
    fallback: bool,
    matrix_gw: Gateway,
    client: openai.OpenAI,
    clean_fakes: Fakes,
) -> None:
    clean_fakes.openai.push(_fault(fault))
    route = "to-anthropic" if fallback else "solo"
    rid, text, error = _call(client, route, stream)
    rec = matrix_gw.record(rid)
    assert rec["stream"] == int(stream)
    assert rec["route"] == route

    after_commit = stream and fault in MID_STREAM
    if after_commit:
        # Committed to OpenAI's answer: part of it arrived, then an error event; no fallback.
        assert isinstance(error, openai.APIError), error
        full = "Hello from fake-openai: fault matrix"
        assert text and full.startswith(text), text  # OpenAI's own words only, up to the break
        assert "fake-anthropic" not in text
        assert len(clean_fakes.anthropic.requests) == 0
        assert rec["status"] == 200
        assert rec["broke_after_commit"] == 1
        assert rec["error_code"] == "stream_broken_after_commit"
        assert [a["outcome"] for a in rec["attempts"]] == ["broken_after_commit"]
        assert rec["provider"] == "openai"
        assert rec["fell_back"] == 0
        return

    allowed = PRE_COMMIT[fault][1] if fault in PRE_COMMIT else {"server_error"}
    first = rec["attempts"][0]
    assert first["provider"] == "openai"
    assert first["outcome"] in allowed, first
    assert rec["broke_after_commit"] == 0
    if fallback:
        # Invisible to the client: a clean answer from the next candidate, nothing spliced.
        assert error is None, error
        assert text.startswith("Hello from fake-anthropic"), text
        assert "fake-openai" not in text
        assert rec["status"] == 200
        assert rec["provider"] == "anthropic"
        assert [a["outcome"] for a in rec["attempts"]] == [first["outcome"], "ok"]
        assert rec["fell_back"] == 1
        assert rec["input_tokens"] and rec["output_tokens"]
        assert rec["cost_usd"] is not None and rec["cost_usd"] > 0
    else:
        status, code = CLIENT_STATUS[first["outcome"]]
        assert isinstance(error, openai.APIStatusError), error
        assert error.status_code == status
        body: Any = error.body
        assert body["code"] == code
        assert text == ""
        assert rec["status"] == status
        assert rec["error_code"] == code
        assert len(rec["attempts"]) == 1
        assert rec["fell_back"] == 0
        if (fault, stream) in BILLED:
            # The provider started generating and bills it: an estimate, in the budgets too.
            assert first["cost_estimated"] is True and first["cost_usd"] > 0
            assert rec["cost_usd"] == rec["abandoned_cost_usd"] == first["cost_usd"]
        else:
            assert "cost_usd" not in first
            assert rec["cost_usd"] is None
        if fault == "429":
            assert error.response.headers["retry-after"] == "7"
