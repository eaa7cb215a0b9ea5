"""OpenAI chat completions, and every `openai-compatible` API (Groq, vLLM, Together, ...).

The gateway's own format is OpenAI's, so the request passes through with the upstream model
id swapped in, less what only the gateway knows (the reasoning and tool-call extras it hands
back to clients, Anthropic's `cache_control` and `thinking`) and mapped to what the model kind
takes (reasoning models: `max_completion_tokens`, no sampling parameters; the table is in
docs/runtime.md, "OpenAI and openai-compatible"). Streaming always asks for usage
(`stream_options.include_usage`) so every record has real token counts — the gateway forwards
the usage chunk only if the client asked.

Answers are relayed as the provider sent them: a non-streamed body is kept whole in
`Completion.body` (choices with their logprobs, usage with its details, `service_tier`, ...);
streamed chunks are `RelayChunk`s carrying their JSON as received. Every payload is checked
before it is passed on (a JSON object; `choices` a list of objects with object deltas; usage
counts that are integers): a malformed one is `upstream_malformed`. Once the first content
chunk has passed, a plain chunk is only decoded and checked that far, not read further.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from runtime.adapters import http, openai_embeddings, openai_native
from runtime.adapters.base import (
    AdapterDefaults,
    Call,
    Completion,
    Embeddings,
    FlushHook,
    RelayChunk,
    Usage,
)
from runtime.adapters.openai_wire import _count, _detail, _malformed, map_error
from runtime.adapters.transport_base import HTTPResponse, HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.vocabulary import DEFAULT_BASE_URLS

DEFAULT_BASE_URL = DEFAULT_BASE_URLS["openai"]


# What OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, ...) refuse ("Unsupported parameter"),
# per OpenAI's reasoning guide; `max_tokens` is mapped to `max_completion_tokens` instead.
REASONING_REFUSES = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)
# Top-level fields of an answer the gateway sets itself; the rest is relayed as sent.
_GATEWAY_FIELDS = frozenset({"id", "object", "created", "model"})


class OpenAIAdapter(AdapterDefaults):
    """OpenAI's chat completions (and compatible APIs): the request passes through."""

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport) -> None:
        self.provider = provider
        self.transport = transport
        self.url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self.timeouts = http.Timeouts.of(provider)
        self.native = provider.adapter == "openai"  # OpenAI itself, not a compatible server
        # The Responses API passes through to OpenAI itself; a compatible server is translated.
        self.native_apis = frozenset({openai_native.API}) if self.native else frozenset()

    async def complete(self, call: Call) -> Completion:
        """The non-streamed answer (`stream` and `stream_options` are dropped)."""
        return parse_completion(await http.read_json(await self._post(call, False)))

    async def open_stream(self, call: Call) -> OpenAIStream:
        """The streamed answer; usage is always requested from the provider."""
        return OpenAIStream(await self._post(call, True))

    async def complete_native(self, call: Call) -> Completion:
        """A Responses passthrough: OpenAI's `response` object (see openai_native.py)."""
        base = self.provider.base_url or DEFAULT_BASE_URL
        resp = await openai_native.post(self.transport, base, self.timeouts, call, False)
        return openai_native.parse_response(await http.read_json(resp))

    async def open_native_stream(self, call: Call) -> openai_native.ResponsesStream:
        """A streamed Responses passthrough: OpenAI's events, relayed one by one."""
        base = self.provider.base_url or DEFAULT_BASE_URL
        resp = await openai_native.post(self.transport, base, self.timeouts, call, True)
        return openai_native.ResponsesStream(resp)

    async def _post(self, call: Call, stream: bool) -> HTTPResponse:
        body = request_body(call, self.native)
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

    async def embed(self, call: Call) -> Embeddings:
        """`{base}/embeddings`, batched (runtime/adapters/openai_embeddings.py)."""
        headers = {
            "content-type": "application/json",
            "authorization": "Bearer " + call.credentials.get("api_key", ""),
        }
        if "organization" in call.credentials:
            headers["openai-organization"] = call.credentials["organization"]
        url = (self.provider.base_url or DEFAULT_BASE_URL).rstrip("/") + "/embeddings"
        return await openai_embeddings.embed(
            self.transport, url, headers, self.timeouts, map_error, call, self.native
        )


def request_body(call: Call, native: bool) -> dict[str, Any]:
    """The upstream body of `call` (the client's body is not mutated); what was mapped or
    dropped is noted in `call.notes`. `native`: the provider is OpenAI itself."""
    body = dict(call.request)
    body["model"] = call.model.upstream
    notes = call.notes
    messages = body.get("messages")
    if isinstance(messages, list):
        cleaned = _clean_messages(messages, notes)
        if cleaned is not None:
            body["messages"] = cleaned
    tools = body.get("tools")
    if isinstance(tools, list):
        cleaned = _clean_tools(tools, notes)
        if cleaned is not None:
            body["tools"] = cleaned
    if "thinking" in body:
        del body["thinking"]
        notes.append("dropped `thinking`: an Anthropic parameter (OpenAI takes `reasoning_effort`)")
    reasoning = "reasoning" in call.model.capabilities
    if not reasoning and "reasoning_effort" in body:
        del body["reasoning_effort"]
        notes.append("dropped `reasoning_effort`: the model is not a reasoning model")
    if "max_tokens" in body and "max_completion_tokens" in body:
        del body["max_tokens"]
        notes.append("dropped `max_tokens`: `max_completion_tokens` was sent too and wins")
    if native and reasoning:
        if "max_tokens" in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
            notes.append(
                "sent `max_tokens` as `max_completion_tokens`: reasoning models refuse `max_tokens`"
            )
        refused = [k for k in REASONING_REFUSES if k in body]
        for k in refused:
            del body[k]
        if refused:
            names = ", ".join(f"`{k}`" for k in refused)
            notes.append(f"dropped {names}: OpenAI's reasoning models refuse them")
    return body


def _clean_messages(messages: list[Any], notes: list[str]) -> list[Any] | None:
    """The messages less the gateway-only fields (None when there was nothing to remove)."""
    out: list[Any] | None = None
    cache_control = False
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        new = m
        if "reasoning_content" in m or "thinking_blocks" in m or "cache_control" in m:
            cache_control = cache_control or "cache_control" in m
            new = {
                k: v
                for k, v in m.items()
                if k not in ("reasoning_content", "thinking_blocks", "cache_control")
            }
        calls = m.get("tool_calls")
        if isinstance(calls, list) and any(
            isinstance(c, dict) and "extra_content" in c for c in calls
        ):
            new = dict(new)
            new["tool_calls"] = [
                {k: v for k, v in c.items() if k != "extra_content"} if isinstance(c, dict) else c
                for c in calls
            ]
        content = m.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and "cache_control" in p for p in content
        ):
            cache_control = True
            new = dict(new)
            new["content"] = [
                {k: v for k, v in p.items() if k != "cache_control"} if isinstance(p, dict) else p
                for p in content
            ]
        if new is not m:
            if out is None:
                out = list(messages)
            out[i] = new
    if cache_control:
        notes.append("dropped `cache_control` from messages: OpenAI caches prompts by itself")
    return out


def _clean_tools(tools: list[Any], notes: list[str]) -> list[Any] | None:
    """The tools less Anthropic's `cache_control` (None when there was none)."""
    out: list[Any] | None = None
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            continue
        fn = t.get("function")
        in_fn = isinstance(fn, dict) and "cache_control" in fn
        if "cache_control" in t or in_fn:
            new = {k: v for k, v in t.items() if k != "cache_control"}
            if isinstance(fn, dict) and in_fn:
                new["function"] = {k: v for k, v in fn.items() if k != "cache_control"}
            if out is None:
                out = list(tools)
            out[i] = new
    if out is not None:
        notes.append("dropped `cache_control` from tools: OpenAI caches prompts by itself")
    return out


def parse_completion(doc: Any) -> Completion:
    """A chat.completion body -> Completion; the body itself (all choices with their logprobs,
    usage with its details, `service_tier`, ...) is kept in `body` for the client."""
    if not isinstance(doc, dict):
        raise _malformed("response is not a JSON object")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _malformed("response has no choices")
    for c in choices:
        if not isinstance(c, dict) or not isinstance(c.get("message"), dict):
            raise _malformed("response has a choice without a message object")
    usage = _usage(doc.get("usage"))
    skip = _GATEWAY_FIELDS if usage is not None else _GATEWAY_FIELDS | {"usage"}
    model = doc.get("model")
    return Completion(
        message=choices[0]["message"],
        finish_reason=choices[0].get("finish_reason"),
        usage=usage,
        model=model if isinstance(model, str) else None,
        body={k: v for k, v in doc.items() if k not in skip},
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
        relay = False  # after the first content chunk: plain chunks are only checked
        loads = orjson.loads
        for_relay = _for_relay
        async for _event, data in http.iter_sse(self.resp):
            if data == "[DONE]":
                done = True
                break
            try:
                doc = loads(data)
            except orjson.JSONDecodeError:
                raise _malformed("malformed JSON in the stream") from None
            if type(doc) is not dict:
                raise _malformed("stream payload is not an object")
            if relay and for_relay(doc):
                yield RelayChunk(data, True)
                continue
            if "error" in doc:
                err = map_error(500, doc, None)
                err.code = "stream_error_event"
                raise err
            if self.model is None:
                model = doc.get("model")
                self.model = model if isinstance(model, str) else None
            usage = _usage(doc.get("usage"))
            if usage is not None:
                self.usage = usage
            choices = _choices(doc)
            content = _has_content(choices)
            relay = relay or content
            yield RelayChunk(data, content, choices, usage, not content and _thinks(choices))
        if not done:
            raise UpstreamError(
                "server_error", "stream ended without data: [DONE]", code="stream_truncated"
            )

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()


def _for_relay(doc: dict[str, Any]) -> bool:
    """True for a decoded chunk that can be relayed unread: it carries neither an error nor
    usage. Its `choices` must still be a list of objects with object deltas."""
    if "error" in doc or doc.get("usage") is not None:
        return False
    choices = doc.get("choices", ())
    if type(choices) is not list and choices != ():
        raise _malformed("stream chunk's choices are not a list")
    for c in choices:
        if type(c) is not dict or type(c.get("delta", c)) is not dict:
            raise _malformed("stream chunk has a choice or delta that is not an object")
    return True


def _choices(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A chunk's choices, checked down to what the gateway reads (text, tool calls)."""
    choices = doc.get("choices", [])
    if type(choices) is not list:
        raise _malformed("stream chunk's choices are not a list")
    for c in choices:
        if type(c) is not dict:
            raise _malformed("stream chunk has a choice that is not an object")
        d = c.get("delta", {})
        if type(d) is not dict:
            raise _malformed("stream chunk has a delta that is not an object")
        for key in ("content", "refusal"):
            v = d.get(key)
            if v is not None and not isinstance(v, str):
                raise _malformed(f"stream chunk's delta.{key} is not a string")
        calls = d.get("tool_calls")
        if calls is not None:
            if type(calls) is not list:
                raise _malformed("stream chunk's delta.tool_calls is not a list")
            for call in calls:
                fn = call.get("function", {}) if type(call) is dict else None
                if type(fn) is not dict or not all(
                    isinstance(fn.get(k) or "", str) for k in ("name", "arguments")
                ):
                    raise _malformed("stream chunk has a malformed tool call")
    return choices


def _has_content(choices: list[dict[str, Any]]) -> bool:
    for c in choices:
        d = c.get("delta") or {}
        if d.get("content") or d.get("tool_calls") or d.get("refusal") or d.get("function_call"):
            return True
    return False


def _thinks(choices: list[dict[str, Any]]) -> bool:
    """True when a chunk carries thinking (`delta.reasoning_content` or `delta.reasoning`,
    the two names OpenAI-compatible servers use)."""
    for c in choices:
        d = c.get("delta") or {}
        if d.get("reasoning_content") or d.get("reasoning"):
            return True
    return False


def _usage(u: Any) -> Usage | None:
    """OpenAI's usage object -> Usage (None when there is none); malformed counts raise."""
    if u is None:
        return None
    if not isinstance(u, dict):
        raise _malformed("usage is not an object")
    if "prompt_tokens" not in u:
        return None
    return Usage(
        _count(u["prompt_tokens"], "prompt_tokens"),
        _count(u.get("completion_tokens"), "completion_tokens"),
        cached_input_tokens=_detail(u, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(u, "completion_tokens_details", "reasoning_tokens"),
    )
