"""Upstream errors, classified and said plainly: each provider's documented error bodies map to
the right class, and through the chat handler (in process, the real adapters over the
in-memory transport) the client's answer, the record and the log carry no credential, say
what went wrong, and tell the SDKs whether a retry can help.

Error bodies are the providers' documented shapes:
- OpenAI: platform.openai.com/docs/guides/error-codes (429 "You exceeded your current quota"
  with type/code `insufficient_quota`; 403 "Country, region, or territory not supported",
  code `unsupported_country_region_territory`).
- Anthropic: docs.claude.com/en/api/errors and the SDK's `ErrorResponse` (402 `billing_error`,
  `anthropic.types.shared.BillingErrorObject`; the 400 `invalid_request_error` "Your credit
  balance is too low to access the Anthropic API", as anthropic-sdk-typescript#618 quotes it).
- Gemini: ai.google.dev/gemini-api/docs/troubleshooting (400 FAILED_PRECONDITION "User
  location is not supported for the API use."; 429 RESOURCE_EXHAUSTED with a
  google.rpc.QuotaFailure whose quotaId names the quota, as in google-gemini/gemini-cli#8437).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from typing import Any

import orjson
import pytest
from anthropic.types.shared import ErrorResponse
from openai.types.shared import ErrorObject

from runtime.adapters import anthropic, gemini, openai
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport, sse
from runtime.adapters.openai import OpenAIAdapter
from runtime.chat import ChatHandler
from runtime.errors import UpstreamError, from_upstream
from runtime.limits import LocalLimiter
from runtime.metrics import Metrics
from runtime.router import Router
from runtime.services import Services
from tests.unit.scripted import (
    ListSink,
    OneKey,
    Reply,
    Response,
    ScriptedAdapter,
    Step,
    Stream,
    chat,
    config,
    model,
    post,
    provider,
    route,
)

# The gateway's credential for provider "a": no known key shape, so only its registration
# (the value the adapter sent) can find it in an echo.
A_SECRET = "corp-a-credential-5e4d3c2b1a"
BASE_URL = "https://a.example/v1"
_FROM_B = Reply("from b")

# --- classification of documented error bodies -----------------------------------------------


def _openai(status: int, message: str, etype: str, code: str | None) -> UpstreamError:
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    ErrorObject.model_validate(body["error"])  # the SDK's own type of the error object
    return openai.map_error(status, body, None)


def test_openai_insufficient_quota_is_quota_exhausted_not_a_rate() -> None:
    msg = "You exceeded your current quota, please check your plan and billing details."
    assert _openai(429, msg, "insufficient_quota", "insufficient_quota").error_class == (
        "quota_exhausted"
    )
    assert _openai(429, msg, "insufficient_quota", None).error_class == "quota_exhausted"
    rate = "Rate limit reached for gpt-4o in organization org-x on requests per min (RPM)"
    assert _openai(429, rate, "requests", "rate_limit_exceeded").error_class == "rate_limited"


def test_openai_region_block_is_a_configuration_error() -> None:
    err = _openai(
        403,
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    )
    assert err.error_class == "upstream_config"
    assert _openai(
        401, "Incorrect API key provided", "invalid_request_error", None
    ).error_class == ("auth")


def test_anthropic_billing_errors_are_quota_exhausted() -> None:
    billing = {"type": "error", "error": {"type": "billing_error", "message": "Billing issue"}}
    assert ErrorResponse.model_validate(billing).error.type == "billing_error"
    assert anthropic.map_error(402, billing, None).error_class == "quota_exhausted"
    credit = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Your credit balance is too low to access the Anthropic API. Please go "
            "to Plans & Billing to upgrade or purchase credits.",
        },
    }
    assert ErrorResponse.model_validate(credit).error.type == "invalid_request_error"
    assert anthropic.map_error(400, credit, None).error_class == "quota_exhausted"
    event = {"type": "error", "error": {"type": "billing_error", "message": "no credit"}}
    assert anthropic.stream_error(event).error_class == "quota_exhausted"
    rate = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert anthropic.map_error(429, rate, None).error_class == "rate_limited"


def _gemini_429(*quota_ids: str, message: str = "You exceeded your current quota.") -> Any:
    return {
        "error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": q} for q in quota_ids],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "39s"},
            ],
        }
    }


def test_gemini_daily_or_zero_quota_is_exhausted_a_minute_quota_is_a_rate() -> None:
    day = _gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    assert gemini.map_error(429, day, None).error_class == "quota_exhausted"
    minute = _gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    err = gemini.map_error(429, minute, None)
    assert (err.error_class, err.retry_after) == ("rate_limited", 39.0)
    both = _gemini_429(
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    )
    assert gemini.map_error(429, both, None).error_class == "rate_limited"
    zero = _gemini_429(
        message="* Quota exceeded for metric: generate_content_free_tier_requests, limit: 0, "
        "model: gemini-2.5-pro"
    )
    assert gemini.map_error(429, zero, None).error_class == "quota_exhausted"
    odd = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"violations": 5}]}}
    assert gemini.map_error(429, odd, None).error_class == "rate_limited"  # not a crash


def test_gemini_location_block_is_a_configuration_error() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "User location is not supported for the API use.",
            "status": "FAILED_PRECONDITION",
        }
    }
    assert gemini.map_error(400, body, None).error_class == "upstream_config"
    other = {"error": {"code": 400, "message": "bad", "status": "FAILED_PRECONDITION"}}
    assert gemini.map_error(400, other, None).error_class == "bad_request"


# --- what the client is told -----------------------------------------------------------------


def test_an_auth_failure_names_the_refused_credential_by_its_secret_name() -> None:
    err = UpstreamError("auth", "Incorrect API key provided", status=401)
    out = from_upstream(err, "openai", secret_names=("OPENAI_API_KEY",))
    assert (out.status, out.code) == (502, "upstream_auth_failed")
    assert out.message == (
        "openai: the gateway's credential for openai (secret OPENAI_API_KEY) was refused by "
        "the provider (HTTP 401): Incorrect API key provided"
    )
    assert out.headers == {"x-should-retry": "false"}
    byok = from_upstream(err, "openai", secret_names=("OPENAI_API_KEY",), byok=True)
    assert "the org's own (BYOK) credential for openai was refused" in byok.message


def test_quota_exhaustion_is_a_503_the_sdks_do_not_retry() -> None:
    err = UpstreamError("quota_exhausted", "no credit", status=429, retry_after=30)
    out = from_upstream(err, "openai")
    assert (out.status, out.code) == (503, "upstream_quota_exhausted")
    assert out.headers == {"x-should-retry": "false"}  # and no Retry-After
    rate = from_upstream(UpstreamError("rate_limited", "slow", status=429, retry_after=7), "x")
    assert rate.headers == {"retry-after": "7"}


def test_a_configuration_error_names_the_base_url() -> None:
    err = UpstreamError("upstream_config", "redirected", status=301)
    out = from_upstream(err, "openai", base_url="http://old.example/v1")
    assert (out.status, out.code) == (502, "upstream_config_error")
    assert "openai: the gateway's setup for this provider (base_url http://old.example/v1)" in (
        out.message
    )
    assert out.headers == {"x-should-retry": "false"}


# --- through the chat handler, with the real OpenAI adapter ------------------------------------


class OwnKeys:
    """A BYOK cache stand-in: org `acme` has its own credential for provider `a`."""

    def credentials(self, org: str, provider: str) -> dict[str, str] | None:
        return {"api_key": BYOK_SECRET} if (org, provider) == ("acme", "a") else None


BYOK_SECRET = "acme-own-credential-77aa66bb"


def _gateway(
    answer: Any, *, fallback: bool, b_step: Step = _FROM_B, byok: bool = False
) -> tuple[ChatHandler, ListSink, MockTransport, ScriptedAdapter]:
    """Provider `a` (the OpenAI adapter over `answer`) then, when `fallback`, `b` (scripted);
    with `byok`, org acme sends its own credential to `a`."""
    a = dataclasses.replace(provider("a", model("one")), adapter="openai", base_url=BASE_URL)
    b = provider("b", model("two"))
    chain = [("a", "one"), ("b", "two")] if fallback else [("a", "one")]
    cfg = config([a, b], [route("r", chain)])
    if byok:
        acme = dataclasses.replace(cfg.orgs["acme"], byok_providers=frozenset({"a"}))
        cfg = dataclasses.replace(cfg, orgs={"acme": acme})
    transport = MockTransport(answer)
    scripted = ScriptedAdapter(b, {"two": [b_step]})
    adapters: dict[str, Any] = {"a": OpenAIAdapter(a, transport), "b": scripted}
    creds: dict[str, dict[str, str] | None] = {
        "a": {"api_key": A_SECRET},
        "b": {"api_key": "b-credential-0000"},
    }
    sink = ListSink()
    services = Services(
        config=cfg,
        router=Router(cfg, adapters, creds, OwnKeys() if byok else None, rng=random.Random(0)),  # type: ignore[arg-type]
        limits=LocalLimiter(cfg.limits, cfg.workers),
        records=sink,
        metrics=Metrics(),
        keys=OneKey(),
    )
    return ChatHandler(services), sink, transport, scripted


def _ask(handler: ChatHandler, stream: bool = False) -> Response:
    return asyncio.run(post(handler, chat("r", stream=stream)))


def _echo(request: MockRequest) -> str:
    """What a careless upstream repeats: the Authorization header it got."""
    return f"invalid credential; you sent Authorization: {request.headers['authorization']}"


def _clean(*texts: str) -> None:
    for text in texts:
        assert A_SECRET not in text, text


def test_an_echoed_key_in_an_auth_error_reaches_nobody(caplog: pytest.LogCaptureFixture) -> None:
    def answer(request: MockRequest) -> MockResponse:
        body = {"error": {"message": _echo(request), "type": "invalid_request_error", "code": 1}}
        return MockResponse(401, orjson.dumps(body))

    handler, sink, _, _ = _gateway(answer, fallback=False)
    with caplog.at_level(logging.INFO):
        resp = _ask(handler)
    assert resp.status == 502
    assert resp.headers["x-should-retry"] == "false"
    error = resp.json()["error"]
    assert error["code"] == "upstream_auth_failed"
    assert error["message"].startswith(
        "a: the gateway's credential for a (secret A_KEY) was refused by the provider (HTTP 401)"
    )
    assert "Authorization: Bearer [redacted]" in error["message"]
    (rec,) = sink.records
    assert (rec.status, rec.error_code) == (502, "upstream_auth_failed")
    assert [a["outcome"] for a in rec.attempts] == ["auth"]
    _clean(resp.body.decode(), repr(rec), caplog.text)
    assert "Bearer [redacted]" in caplog.text  # the log says it too, scrubbed


def test_a_refused_byok_credential_is_named_as_the_orgs_own_and_never_shown() -> None:
    def answer(request: MockRequest) -> MockResponse:
        body = {"error": {"message": _echo(request), "type": "invalid_request_error"}}
        return MockResponse(401, orjson.dumps(body))

    handler, sink, transport, _ = _gateway(answer, fallback=False, byok=True)
    resp = _ask(handler)
    assert transport.requests[0].headers["authorization"] == f"Bearer {BYOK_SECRET}"
    error = resp.json()["error"]
    assert (resp.status, error["code"]) == (502, "upstream_auth_failed")
    assert error["message"].startswith(
        "a: the org's own (BYOK) credential for a was refused by the provider (HTTP 401)"
    )
    for text in (resp.body.decode(), repr(sink.records[0])):
        assert BYOK_SECRET not in text


def test_an_auth_failure_falls_back_to_another_provider() -> None:
    handler, sink, _, b = _gateway(
        lambda r: MockResponse(401, b'{"error": {"message": "bad key"}}'), fallback=True
    )
    resp = _ask(handler)
    assert resp.status == 200
    assert resp.json()["choices"][0]["message"]["content"] == "from b"
    assert [a["outcome"] for a in sink.records[0].attempts] == ["auth", "ok"]
    assert len(b.calls) == 1


def test_an_echoed_key_in_a_plain_text_error_body_is_scrubbed() -> None:
    def answer(request: MockRequest) -> MockResponse:
        text = "x" * 240 + " " + _echo(request)  # the key straddles the 300-character cut
        return MockResponse(502, text.encode(), {"content-type": "text/plain"})

    handler, sink, _, _ = _gateway(answer, fallback=False)
    resp = _ask(handler)
    assert (resp.status, resp.json()["error"]["code"]) == (502, "upstream_error")
    _clean(resp.body.decode(), repr(sink.records[0]))
    assert A_SECRET[:6] not in resp.body.decode()  # no prefix left by the cut either


def test_an_echoed_key_in_a_stream_error_event_is_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(request: MockRequest) -> MockResponse:
        content = {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
        error = {"error": {"message": f"upstream broke, key {A_SECRET}", "type": "server_error"}}
        return MockResponse(200, sse(content, error), {"content-type": "text/event-stream"})

    handler, sink, _, _ = _gateway(answer, fallback=True)
    with caplog.at_level(logging.INFO):
        resp = _ask(handler, stream=True)
    events = resp.events()
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert "upstream broke, key [redacted]" in events[-1]["error"]["message"]
    (rec,) = sink.records
    assert rec.broke_after_commit and rec.status == 200
    _clean(resp.body.decode(), repr(rec), caplog.text)


def test_a_redirect_is_a_configuration_error_naming_provider_and_base_url() -> None:
    def answer(request: MockRequest) -> MockResponse:
        return MockResponse(301, b"", {"location": "https://elsewhere.example/v1?key=leak42x"})

    handler, sink, _, _ = _gateway(answer, fallback=False)
    resp = _ask(handler)
    assert resp.status == 502
    assert resp.headers["x-should-retry"] == "false"
    error = resp.json()["error"]
    assert error["code"] == "upstream_config_error"
    assert error["message"].startswith(
        f"a: the gateway's setup for this provider (base_url {BASE_URL})"
    )
    assert "HTTP 301" in error["message"] and "key=[redacted]" in error["message"]
    assert [(a["outcome"], a.get("code")) for a in sink.records[0].attempts] == [
        ("upstream_config", "upstream_redirect")
    ]
    handler, sink, _, _ = _gateway(answer, fallback=True)
    assert _ask(handler).status == 200  # another provider may serve


def test_quota_exhaustion_ends_as_a_503_without_retry_after() -> None:
    def answer(request: MockRequest) -> MockResponse:
        body = {
            "error": {
                "message": "You exceeded your current quota, please check your plan and "
                "billing details.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        }
        return MockResponse(429, orjson.dumps(body), {"retry-after": "20"})

    handler, sink, _, _ = _gateway(answer, fallback=False)
    resp = _ask(handler)
    assert (resp.status, resp.json()["error"]["code"]) == (503, "upstream_quota_exhausted")
    assert resp.headers["x-should-retry"] == "false"
    assert "retry-after" not in resp.headers
    assert [a["outcome"] for a in sink.records[0].attempts] == ["quota_exhausted"]
    handler, sink, _, _ = _gateway(answer, fallback=True)
    assert _ask(handler).status == 200


def test_a_provider_bad_request_falls_back_by_default() -> None:
    handler, sink, _, _ = _gateway(
        lambda r: MockResponse(400, b'{"error": {"message": "top_p and temperature"}}'),
        fallback=True,
    )
    resp = _ask(handler)
    assert resp.status == 200
    assert [a["outcome"] for a in sink.records[0].attempts] == ["bad_request", "ok"]


# --- malformed payloads ----------------------------------------------------------------------

_HEL = {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
_STOP = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def _stream(*events: Any) -> Any:
    return lambda r: MockResponse(200, sse(*events), {"content-type": "text/event-stream"})


def test_a_non_numeric_usage_after_the_commit_ends_with_an_error_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": "many", "completion_tokens": 2}}
    handler, sink, transport, _ = _gateway(_stream(_HEL, _STOP, usage, "[DONE]"), fallback=True)
    with caplog.at_level(logging.INFO):
        resp = _ask(handler, stream=True)
    assert resp.status == 200
    events = resp.events()
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert "usage prompt_tokens is not a token count" in events[-1]["error"]["message"]
    (rec,) = sink.records
    assert (rec.status, rec.error_code, rec.broke_after_commit) == (
        200,
        "stream_broken_after_commit",
        True,
    )
    assert [(a["outcome"], a.get("code")) for a in rec.attempts] == [
        ("broken_after_commit", "upstream_malformed")
    ]
    assert "stream broke after commit" in caplog.text and "not a token count" in caplog.text
    assert transport.requests and len(transport.requests) == 1  # no fallback after commit


def test_a_first_chunk_with_unreadable_choices_falls_back() -> None:
    handler, sink, _, _ = _gateway(
        _stream({"choices": [1]}, _HEL, "[DONE]"), fallback=True, b_step=Stream(("hel", "lo"))
    )
    resp = _ask(handler, stream=True)
    assert resp.status == 200
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in resp.events()[:-1])
    assert text == "hello"
    assert [(a["outcome"], a.get("code")) for a in sink.records[0].attempts] == [
        ("server_error", "upstream_malformed"),
        ("ok", None),
    ]


def test_a_completion_the_gateway_cannot_read_is_a_502_not_a_500() -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "up-one",
        "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [1]}}],
    }
    handler, sink, _, _ = _gateway(lambda r: MockResponse(200, orjson.dumps(body)), fallback=False)
    resp = _ask(handler)
    assert (resp.status, resp.json()["error"]["code"]) == (502, "upstream_error")
    (rec,) = sink.records
    assert (rec.status, rec.error_code) == (502, "upstream_error")
    assert [(a["outcome"], a.get("code")) for a in rec.attempts] == [
        ("server_error", "upstream_malformed")
    ]


def test_a_first_content_chunk_the_gateway_cannot_read_is_a_502_before_the_commit() -> None:
    bad = {"choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": None}]}
    handler, sink, _, _ = _gateway(_stream(bad, _HEL, "[DONE]"), fallback=False)
    resp = _ask(handler, stream=True)
    assert (resp.status, resp.json()["error"]["code"]) == (502, "upstream_error")
    (rec,) = sink.records
    assert (rec.status, rec.error_code, rec.broke_after_commit) == (502, "upstream_error", False)
    assert [(a["outcome"], a.get("code")) for a in rec.attempts] == [
        ("server_error", "upstream_malformed")
    ]


def test_the_gateways_own_refusals_say_a_retry_will_not_help() -> None:
    handler, _, _, _ = _gateway(lambda r: MockResponse(200, b"{}"), fallback=False)
    resp = asyncio.run(post(handler, {"model": "r", "messages": []}))
    assert (resp.status, resp.headers["x-should-retry"]) == (400, "false")
    resp = asyncio.run(post(handler, chat("r"), token="wrong"))
    assert (resp.status, resp.headers["x-should-retry"]) == (401, "false")
