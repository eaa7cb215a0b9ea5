"""Anthropic's Messages API (POST /v1/messages) behind the gateway's chat-completions format.

This module owns the adapter, the answers and the error classes; the request body is built
by runtime/adapters/anthropic_request.py (what Anthropic cannot take as sent is mapped or
dropped there with a line in `call.notes`, and `n > 1` raises `Unservable`). The rules and
their sources are in docs/runtime.md, section "Anthropic".

Answers: text and tool_use blocks become the OpenAI message; thinking blocks become
`reasoning_content` plus `thinking_blocks` (with their signatures); usage is reported in
OpenAI's sense with the cache parts apart. A stream is complete only after `message_stop`; an
`error` event raises the mapped class; a payload of the wrong shape raises
`upstream_malformed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from runtime.adapters import anthropic_native, http
from runtime.adapters.anthropic_request import bad_request, build_request
from runtime.adapters.anthropic_wire import (
    API_VERSION,
    STOP_REASONS,
    _malformed,
    _object,
    _string,
    _usage,
    map_error,
    stream_error,
)
from runtime.adapters.base import AdapterDefaults, Call, Chunk, Completion, FlushHook, Usage
from runtime.adapters.transport_base import HTTPResponse, HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.vocabulary import DEFAULT_BASE_URLS

DEFAULT_BASE_URL = DEFAULT_BASE_URLS["anthropic"]


class AnthropicAdapter(AdapterDefaults):
    """Anthropic's Messages API behind the chat-completions format."""

    # A Messages request passes through (runtime/adapters/anthropic_native.py).
    native_apis = frozenset({"messages"})

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport) -> None:
        self.provider = provider
        self.transport = transport
        self.url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        self.timeouts = http.Timeouts.of(provider)

    async def complete(self, call: Call) -> Completion:
        """The non-streamed answer."""
        return parse_completion(await http.read_json(await self._post(call, False)))

    async def open_stream(self, call: Call) -> AnthropicStream:
        """The streamed answer, as OpenAI chunks."""
        return AnthropicStream(await self._post(call, True))

    async def complete_native(self, call: Call) -> Completion:
        """A Messages passthrough: Anthropic's `message` object, usage read from it."""
        resp = await anthropic_native.post(self.transport, self.url, self.timeouts, call, False)
        return anthropic_native.parse_message(await http.read_json(resp))

    async def open_native_stream(self, call: Call) -> anthropic_native.MessagesStream:
        """A streamed Messages passthrough: Anthropic's events, relayed one by one."""
        resp = await anthropic_native.post(self.transport, self.url, self.timeouts, call, True)
        return anthropic_native.MessagesStream(resp)

    async def _post(self, call: Call, stream: bool) -> HTTPResponse:
        try:
            body = build_request(call, stream)
        except (AttributeError, TypeError, ValueError) as exc:  # a field of an unexpected shape
            raise bad_request(f"request cannot be mapped to Anthropic: {exc}") from None
        headers = {
            "content-type": "application/json",
            "x-api-key": call.credentials.get("api_key", ""),
            "anthropic-version": API_VERSION,
        }
        return await http.post(
            self.transport,
            self.url,
            headers,
            orjson.dumps(body),
            self.timeouts.pick(stream),
            map_error,
        )


# --- response ------------------------------------------------------------------------------


def parse_completion(doc: Any) -> Completion:
    """A Messages API response -> Completion (text joined, tool_use -> tool_calls, thinking ->
    reasoning_content + thinking_blocks); a body of the wrong shape is `upstream_malformed`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
        raise _malformed("response has no content list")
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for block in doc["content"]:
        if not isinstance(block, dict):
            raise _malformed("a content block of the response is not an object")
        kind = block.get("type")
        if kind == "text":
            texts.append(_string(block.get("text"), "text"))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": _string(block.get("id"), "tool_use id"),
                    "type": "function",
                    "function": {
                        "name": _string(block.get("name"), "tool_use name"),
                        "arguments": orjson.dumps(_object(block.get("input"))).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(_thinking_block(block))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking:
        message["reasoning_content"] = "".join(b.get("thinking", "") for b in thinking)
        message["thinking_blocks"] = thinking
    stop = doc.get("stop_reason")
    return Completion(
        message=message,
        finish_reason=STOP_REASONS.get(stop, "stop") if stop else None,
        usage=_usage(doc.get("usage")),
        model=doc.get("model"),
    )


def _thinking_block(block: dict[str, Any]) -> dict[str, Any]:
    """A thinking or redacted_thinking block as the client gets it (and sends it back)."""
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": _string(block.get("data"), "data")}
    return {
        "type": "thinking",
        "thinking": _string(block.get("thinking"), "thinking"),
        "signature": _string(block.get("signature"), "signature"),
    }


class AnthropicStream:
    """Anthropic's SSE events as OpenAI chunks; complete only after `message_stop`."""

    def __init__(self, resp: HTTPResponse) -> None:
        self.resp = resp
        self.usage: Usage | None = None
        self.model: str | None = None
        self._usage: dict[str, Any] = {}  # usage fields so far (message_start, message_delta)
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._thinking: dict[int, dict[str, Any]] = {}  # open thinking blocks by index

    def watch_idle(self, hook: FlushHook) -> bool:
        """The transport awaits `hook` before it waits for the network."""
        self.resp.before_wait = hook
        return True

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        done = False
        async for _event, data in http.iter_sse(self.resp):
            doc = http.loads(data)
            if not isinstance(doc, dict):
                raise _malformed("stream payload is not an object")
            kind = doc.get("type")
            if kind == "message_stop":
                done = True
                break
            if kind == "error":
                raise stream_error(doc)
            try:
                chunks = self._chunks(kind, doc)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise _malformed(f"stream event {kind!r} of an unexpected shape: {exc}") from None
            for chunk in chunks:
                yield chunk
        if not done:
            raise UpstreamError(
                "server_error", "stream ended without message_stop", code="stream_truncated"
            )

    def _chunks(self, kind: Any, doc: dict[str, Any]) -> list[Chunk]:
        if kind == "message_start":
            msg = doc["message"]
            self.model = msg.get("model")
            self._add_usage(msg.get("usage"))
            return [Chunk(choices=[_choice({"role": "assistant", "content": ""})], content=False)]
        if kind == "content_block_start":
            return self._block_start(doc.get("index", 0), doc["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(doc.get("index", 0), doc["delta"])
        if kind == "content_block_stop":
            block = self._thinking.pop(doc.get("index", 0), None)
            if block is None:
                return []
            return [_reasoning({"thinking_blocks": [block]})]
        if kind == "message_delta":
            self._add_usage(doc.get("usage"))
            self.usage = _usage(self._usage) if self._usage else None
            stop = doc["delta"].get("stop_reason")
            finish = STOP_REASONS.get(stop, "stop") if stop else None
            chunks = [Chunk(choices=[_choice({}, finish)], content=False)]
            if self.usage is not None:
                chunks.append(Chunk(choices=[], content=False, usage=self.usage))
            return chunks
        return []  # ping, and event types added later

    def _add_usage(self, u: Any) -> None:
        if u is None:
            return
        if not isinstance(u, dict):
            raise _malformed("usage is not an object")
        self._usage.update((k, v) for k, v in u.items() if v is not None)
        _usage(self._usage)  # a field of the wrong type fails here, not at the end

    def _block_start(self, index: int, block: dict[str, Any]) -> list[Chunk]:
        kind = block["type"]
        if kind == "tool_use":
            n = self._tools[index] = len(self._tools)
            given = _object(block.get("input"))
            call = {
                "index": n,
                "id": _string(block.get("id"), "tool_use id"),
                "type": "function",
                "function": {
                    "name": _string(block.get("name"), "tool_use name"),
                    "arguments": orjson.dumps(given).decode() if given else "",
                },
            }
            return [Chunk(choices=[_choice({"tool_calls": [call]})], content=True)]
        if kind in ("thinking", "redacted_thinking"):
            self._thinking[index] = _thinking_block(block)
            text = self._thinking[index].get("thinking")
            return [_reasoning({"reasoning_content": text})] if text else []
        if kind == "text" and block.get("text"):
            text = _string(block["text"], "text")
            return [Chunk(choices=[_choice({"content": text})], content=True)]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[Chunk]:
        kind = delta["type"]
        if kind == "text_delta" and delta.get("text"):
            text = _string(delta["text"], "text")
            return [Chunk(choices=[_choice({"content": text})], content=True)]
        if kind == "input_json_delta" and delta.get("partial_json"):
            n = self._tools.get(index, 0)
            args = _string(delta["partial_json"], "partial_json")
            call = {"index": n, "function": {"arguments": args}}
            return [Chunk(choices=[_choice({"tool_calls": [call]})], content=True)]
        if kind == "thinking_delta":
            text = _string(delta.get("thinking"), "thinking")
            block = self._thinking.setdefault(
                index, {"type": "thinking", "thinking": "", "signature": ""}
            )
            block["thinking"] += text
            return [_reasoning({"reasoning_content": text})] if text else []
        if kind == "signature_delta":
            block = self._thinking.setdefault(
                index, {"type": "thinking", "thinking": "", "signature": ""}
            )
            block["signature"] += _string(delta.get("signature"), "signature")
        return []

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _reasoning(delta: dict[str, Any]) -> Chunk:
    """A chunk of thinking: progress for the first-byte timeout, not content."""
    return Chunk(choices=[_choice(delta)], content=False, reasoning=True)


# --- errors --------------------------------------------------------------------------------
