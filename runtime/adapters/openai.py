"""OpenAI chat completions, and every `openai-compatible` API (Groq, vLLM, Together, ...).

The gateway's own format is OpenAI's, so the request passes through with the upstream model
id swapped in; streaming always asks for usage (`stream_options.include_usage`) so every
record has real token counts — the gateway forwards the usage chunk only if the client asked.
Streamed chunks are `RelayChunk`s carrying their JSON as received, relayed as the provider sent
them; once the first content chunk has passed, plain chunks are not even decoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from runtime.adapters import http
from runtime.adapters.base import Call, Completion, FlushHook, RelayChunk, Usage
from runtime.adapters.transport_base import Headers, HTTPResponse, HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.vocabulary import DEFAULT_BASE_URLS

DEFAULT_BASE_URL = DEFAULT_BASE_URLS["openai"]

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}


class OpenAIAdapter:
    """OpenAI's chat completions (and compatible APIs): the request passes through."""

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport) -> None:
        self.provider = provider
        self.transport = transport
        self.url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self.timeouts = http.Timeouts.of(provider)

    async def complete(self, call: Call) -> Completion:
        """The non-streamed answer (`stream` and `stream_options` are dropped)."""
        return parse_completion(await http.read_json(await self._post(call, False)))

    async def open_stream(self, call: Call) -> OpenAIStream:
        """The streamed answer; usage is always requested from the provider."""
        return OpenAIStream(await self._post(call, True))

    async def _post(self, call: Call, stream: bool) -> HTTPResponse:
        body = dict(call.request)
        body["model"] = call.model.upstream
        if stream:
            body["stream"] = True
            opts = dict(body.get("stream_options") or {})
            opts["include_usage"] = True
            body["stream_options"] = opts
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        headers = {
            "content-type": "application/json",
            "authorization": "Bearer " + call.credentials.get("api_key", ""),
        }
        if "organization" in call.credentials:
            headers["openai-organization"] = call.credentials["organization"]
        return await http.post(
            self.transport,
            self.url,
            headers,
            orjson.dumps(body),
            self.timeouts.pick(stream),
            map_error,
        )


def parse_completion(doc: Any) -> Completion:
    """A chat.completion body -> Completion (several choices are kept in `extra`)."""
    try:
        choice = doc["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise UpstreamError(
            "server_error", "response has no choices[0].message", code="upstream_malformed"
        ) from None
    extra = {k: doc[k] for k in ("system_fingerprint", "service_tier") if doc.get(k) is not None}
    if len(doc["choices"]) > 1:
        extra["choices"] = doc["choices"]
    return Completion(
        message=message,
        finish_reason=choice.get("finish_reason"),
        usage=_usage(doc.get("usage")),
        model=doc.get("model"),
        extra=extra,
    )


class OpenAIStream:
    """OpenAI SSE chunks; the stream is complete only after `data: [DONE]`."""

    def __init__(self, resp: HTTPResponse) -> None:
        self.resp = resp
        self.usage: Usage | None = None
        self.model: str | None = None

    def watch_idle(self, hook: FlushHook) -> bool:
        """The transport awaits `hook` before it waits for the network."""
        self.resp.before_wait = hook
        return True

    async def __aiter__(self) -> AsyncIterator[RelayChunk]:
        done = False
        relay = False  # after the first content chunk: relay plain chunks without decoding
        async for _event, data in http.iter_sse(self.resp):
            if data == "[DONE]":
                done = True
                break
            if relay and _plain(data):
                yield RelayChunk(data, True)
                continue
            doc = http.loads(data)
            if not isinstance(doc, dict):
                raise UpstreamError(
                    "server_error", "stream payload is not an object", code="upstream_malformed"
                )
            if "error" in doc:
                err = map_error(500, doc, None)
                err.code = "stream_error_event"
                raise err
            if self.model is None:
                self.model = doc.get("model")
            usage = _usage(doc.get("usage"))
            if usage is not None:
                self.usage = usage
            choices = doc.get("choices") or []
            content = _has_content(choices)
            relay = relay or content
            yield RelayChunk(data, content, choices, usage)
        if not done:
            raise UpstreamError(
                "server_error", "stream ended without data: [DONE]", code="stream_truncated"
            )

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()


def _plain(data: str) -> bool:
    """True for a chunk that can be relayed without decoding: a JSON object carrying neither an
    error nor usage. `"usage"`/`"error"` can only appear unescaped as keys (or as a whole
    string value, which merely takes the slow path)."""
    if data[:1] != "{" or data[-1:] != "}":
        return False
    if '"error"' in data:
        return False
    return '"usage"' not in data or '"usage":null' in data or '"usage": null' in data


def _has_content(choices: list[dict[str, Any]]) -> bool:
    for c in choices:
        d = c.get("delta") or {}
        if d.get("content") or d.get("tool_calls") or d.get("refusal") or d.get("function_call"):
            return True
    return False


def _usage(u: Any) -> Usage | None:
    if not isinstance(u, dict) or "prompt_tokens" not in u:
        return None
    return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))


def map_error(status: int, body: Any, headers: Headers | None) -> UpstreamError:
    """OpenAI's error body {"error": {"message", "type", "code"}} -> an error class.

    429 `insufficient_quota` (and its codes `credit_balance_exhausted`, the spend limits) is
    quota exhaustion, not a rate; 403 `unsupported_country_region_territory` a region block
    (platform.openai.com/docs/guides/error-codes)."""
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    etype = err.get("type") if isinstance(err, dict) else None
    message = http.error_message(body, f"HTTP {status}")
    if code in _CONTEXT_CODES or "maximum context length" in message:
        cls = "context_length"
    elif status == 429 and (
        code in _QUOTA_CODES or etype in _QUOTA_CODES or "exceeded your current quota" in message
    ):
        cls = "quota_exhausted"  # credits or a spend limit: waiting does not bring it back
    elif status == 403 and (
        code == "unsupported_country_region_territory"
        or "country, region, or territory" in message.lower()
    ):
        cls = "upstream_config"  # a region block: where the gateway runs, not the request
    elif status == 529:
        cls = "overloaded"
    elif etype == "server_error" or status >= 500:
        cls = "overloaded" if status == 503 and "overload" in message.lower() else "server_error"
    else:
        cls = http.status_class(status)
    return UpstreamError(cls, message, status=status, code=str(code or etype or cls))  # type: ignore[arg-type]


# 429 codes and types that mean the account's credit or spend limit is used up.
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "billing_hard_limit_reached",
    }
)
