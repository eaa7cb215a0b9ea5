"""Fault injection: every upstream failure × streaming on/off × a fallback available or not.

The gateway is the real `python -m runtime serve`; the client is the official openai SDK; the
upstream is the fake OpenAI server, told what to do wrong. Each case asserts what the client
saw AND what the request record says. Before the commit point a failure falls back invisibly
(or, with no fallback left, becomes a clean error); after it, the stream ends with an error
event, nothing is spliced from another provider, and the record says it broke after commit.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from runtime.errors import CLIENT_STATUS
from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import FAKE_KEYS, Gateway, runtime_config

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


# --- what a provider says that must not pass through -------------------------------------------
# A raw OpenAI-format upstream that answers each request with what a test scripted: an error
# that echoes the credential it got, or a stream with a malformed payload. The gateway is the
# real one; every check covers what the client got, the SQLite record and the gateway's log.


class RawUpstream:
    """An OpenAI-format server on 127.0.0.1 answering each request with the next scripted
    `(request) -> web.StreamResponse` function."""

    def __init__(self) -> None:
        self.script: list[Callable[[web.Request], Awaitable[web.StreamResponse]]] = []
        self.seen = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> RawUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen += 1
        return await self.script.pop(0)(request)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


OPENAI_KEY = FAKE_KEYS["OPENAI_API_KEY"]  # no key shape: only its registration finds it


def _echo(request: web.Request) -> str:
    return f"denied; you sent authorization: {request.headers['authorization']} and {OPENAI_KEY}"


def _chunk(content: str) -> bytes:
    doc = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def _sse(request: web.Request, *events: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for ev in events:
        await resp.write(ev)
        await asyncio.sleep(0.005)
    await resp.write_eof()
    return resp


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def raw_gw(
    raw: RawUpstream, fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = runtime_config(raw.url, fakes.anthropic.url, fakes.gemini.url, timeout_s=TIMEOUT_S)
    gw = Gateway(config, Path(tmp_path_factory.mktemp("raw")))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def raw_client(raw_gw: Gateway, raw: RawUpstream) -> Iterator[openai.OpenAI]:
    raw.script.clear()
    yield openai.OpenAI(
        base_url=raw_gw.url + "/v1", api_key=raw_gw.key(), max_retries=0, timeout=15
    )
    assert raw.script == [], "a scripted answer was not used"


def _no_key(gw: Gateway, rid: str, *seen: str) -> dict[str, Any]:
    """The request's record, after checking that no text anyone sees carries the key."""
    rec = gw.record(rid)
    for text in (*seen, json.dumps(rec), gw.log.read_text()):
        assert OPENAI_KEY not in text
    return rec


def test_an_echoed_key_in_an_error_body_reaches_no_client_record_or_log(
    raw_client: openai.OpenAI, raw: RawUpstream, raw_gw: Gateway
) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        body = {"error": {"message": _echo(request), "type": "invalid_request_error"}}
        return web.json_response(body, status=401)

    raw.script.append(refuse)
    error, rid = _status_error(raw_client, "solo")
    assert (error.status_code, error.response.headers["x-should-retry"]) == (502, "false")
    body: Any = error.body
    assert body["code"] == "upstream_auth_failed"
    assert body["message"].startswith(
        "openai: the gateway's credential for openai (secret OPENAI_API_KEY) was refused"
    )
    assert "authorization: Bearer [redacted] and [redacted]" in body["message"]
    rec = _no_key(raw_gw, rid, error.response.text)
    assert [a["outcome"] for a in rec["attempts"]] == ["auth"]
    assert "authorization: Bearer [redacted]" in raw_gw.log.read_text()


def test_an_echoed_key_in_a_plain_text_error_body_is_scrubbed(
    raw_client: openai.OpenAI, raw: RawUpstream, raw_gw: Gateway
) -> None:
    async def proxy_error(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="bad gateway: " + _echo(request))

    raw.script.append(proxy_error)
    error, rid = _status_error(raw_client, "solo")
    assert error.status_code == 502
    assert "bad gateway: denied; you sent authorization: Bearer [redacted]" in error.response.text
    _no_key(raw_gw, rid, error.response.text)


def test_an_echoed_key_in_a_stream_error_event_is_scrubbed(
    raw_client: openai.OpenAI, raw: RawUpstream, raw_gw: Gateway
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        event = {"error": {"message": _echo(request), "type": "server_error"}}
        return await _sse(
            request, _chunk("Hello"), b"data: " + json.dumps(event).encode() + b"\n\n"
        )

    raw.script.append(broken)
    rid, text, error = _call(raw_client, "to-anthropic", True)
    assert text == "Hello"
    assert isinstance(error, openai.APIError)
    assert "Bearer [redacted] and [redacted]" in error.message
    rec = _no_key(raw_gw, rid, error.message, str(error.body))
    assert (rec["status"], rec["broke_after_commit"]) == (200, 1)


def _status_error(client: openai.OpenAI, route: str) -> tuple[openai.APIStatusError, str]:
    rid, _, error = _call(client, route, False)
    assert isinstance(error, openai.APIStatusError), error
    return error, rid


# Malformed payloads: before the commit they fall back (or end in a clean 502), after it the
# stream ends with an error event and the record says it broke — never a 500, never a cut.
MALFORMED_FIRST = {"choices": [1], "model": "gpt-4o-2024-08-06"}


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "alone"])
def test_a_first_chunk_with_unreadable_choices_never_gives_a_500(
    fallback: bool, raw_client: openai.OpenAI, raw: RawUpstream, raw_gw: Gateway
) -> None:
    async def bad_first(request: web.Request) -> web.StreamResponse:
        return await _sse(
            request, b"data: " + json.dumps(MALFORMED_FIRST).encode() + b"\n\n", b"data: [DONE]\n\n"
        )

    raw.script.append(bad_first)
    rid, text, error = _call(raw_client, "to-anthropic" if fallback else "solo", True)
    rec = raw_gw.record(rid)
    assert (rec["attempts"][0]["outcome"], rec["attempts"][0].get("code")) == (
        "server_error",
        "upstream_malformed",
    )
    if fallback:
        assert error is None and text.startswith("Hello from fake-anthropic")
        assert rec["status"] == 200 and rec["provider"] == "anthropic"
    else:
        assert isinstance(error, openai.APIStatusError) and error.status_code == 502
        assert (rec["status"], rec["error_code"]) == (502, "upstream_error")


AFTER_CONTENT: dict[str, bytes] = {
    # The final usage chunk with a count that is not a number.
    "non-numeric-usage": b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],'
    b'"usage":{"prompt_tokens":"many","completion_tokens":2,"total_tokens":3}}\n\n',
    # A payload that is not JSON at all.
    "invalid-json": b"data: {not json\n\n",
}


@pytest.mark.parametrize("payload", list(AFTER_CONTENT))
def test_a_malformed_payload_after_the_commit_ends_with_an_error_event(
    payload: str, raw_client: openai.OpenAI, raw: RawUpstream, raw_gw: Gateway
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return await _sse(request, _chunk("Hello"), AFTER_CONTENT[payload], b"data: [DONE]\n\n")

    raw.script.append(broken)
    rid, text, error = _call(raw_client, "to-anthropic", True)
    assert text == "Hello"
    assert isinstance(error, openai.APIError), error  # the SDK raised on the error event
    rec = raw_gw.record(rid)
    assert (rec["status"], rec["error_code"], rec["broke_after_commit"]) == (
        200,
        "stream_broken_after_commit",
        1,
    )
    assert [(a["outcome"], a.get("code")) for a in rec["attempts"]] == [
        ("broken_after_commit", "upstream_malformed")
    ]
    assert rec["provider"] == "openai" and rec["fell_back"] == 0


# Failures a retry cannot fix: the official SDK, allowed retries, sends the request once.
async def _quota(request: web.Request) -> web.StreamResponse:
    body = {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    return web.json_response(body, status=429, headers={"retry-after": "1"})


async def _redirect(request: web.Request) -> web.StreamResponse:
    return web.Response(status=307, headers={"location": "https://moved.example/v1"})


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [(_quota, 503, "upstream_quota_exhausted"), (_redirect, 502, "upstream_config_error")],
    ids=["quota", "redirect"],
)
def test_a_final_error_a_retry_cannot_fix_is_not_retried_by_the_sdk(
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
    status: int,
    code: str,
    raw_client: openai.OpenAI,
    raw: RawUpstream,
    raw_gw: Gateway,
) -> None:
    raw.script.extend([answer] * 3)
    before = raw.seen
    retrying = raw_client.with_options(max_retries=2)
    with pytest.raises(openai.APIStatusError) as info:
        retrying.chat.completions.create(model="solo", messages=[{"role": "user", "content": "hi"}])
    raw.script.clear()
    error = info.value
    assert (error.status_code, error.code) == (status, code)
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert raw.seen - before == 1  # the SDK did not retry
    if code == "upstream_config_error":
        assert f"base_url {raw.url}/v1" in error.message and "HTTP 307" in error.message


@pytest.mark.parametrize("answer", [_quota, _redirect], ids=["quota", "redirect"])
def test_quota_and_redirects_fall_back_to_another_provider(
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
    raw_client: openai.OpenAI,
    raw: RawUpstream,
    raw_gw: Gateway,
) -> None:
    raw.script.append(answer)
    rid, text, error = _call(raw_client, "to-anthropic", False)
    assert error is None and text.startswith("Hello from fake-anthropic")
    rec = raw_gw.record(rid)
    assert [a["outcome"] for a in rec["attempts"]] == [
        "quota_exhausted" if answer is _quota else "upstream_config",
        "ok",
    ]
