"""A fake Anthropic Messages API (POST /v1/messages), in Anthropic's exact wire format.

Replies are deterministic: "Hello from fake-anthropic: <last user text>", streamed as several
`text_delta`s; when the request has tools and the last user turn is not a tool result, the
reply is a `tool_use` of the first tool with input {"city": "Paris"}. `max_tokens` and
`stop_sequences` are honoured (stop_reason `max_tokens` / `stop_sequence`); usage is derived
from text lengths (about 4 characters a token).

With `thinking` on (`enabled` or `adaptive`), a text reply starts with a thinking block
"Thinking about: <last user text>" signed with `signature_of(thinking)` (streamed as
`thinking_delta`s, one `signature_delta`, then `content_block_stop`), and its tokens are
reported in `output_tokens_details.thinking_tokens`; stream faults then count from the first
thinking delta (the first sign of progress), so `slow_stream` spreads out the thinking too.
Prompt caching: the prefix up to the last block carrying `cache_control` is written to the
fake's cache the first time it is seen (`cache_creation_input_tokens`, split by ttl in
`cache_creation`) and read from it afterwards (`cache_read_input_tokens`); `input_tokens`
counts the rest, as Anthropic reports them.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeProvider, StreamPlan, sse

DEFAULT_API_KEY = "test-anthropic-key"
TOOL_INPUT: dict[str, Any] = {"city": "Paris"}
# The message Anthropic sends (400 invalid_request_error) when the prompt exceeds the window.
CONTEXT_LENGTH_MESSAGE = "prompt is too long: 210345 tokens > 200000 maximum"

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def tokens(text: str) -> int:
    """The fake's token count of a text: about 4 characters a token, at least 1."""
    return max(1, math.ceil(len(text) / 4))


def signature_of(thinking: str) -> str:
    """The fake's signature of a thinking text (opaque to clients, checkable by tests)."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


class AnthropicWire:
    routes = [("POST", "/v1/messages")]

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self._ids = itertools.count(1)
        self._cache: set[str] = set()  # cached prompt prefixes

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def check_auth(self, request: web.Request) -> web.Response | None:
        # The documented header is x-api-key; the installed official SDK (2.x) sends the key
        # as `Authorization: Bearer`, which the API accepts too.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            return web.json_response(self.error(401, "invalid x-api-key"), status=401)
        if not request.headers.get("anthropic-version"):
            return web.json_response(
                self.error(400, "anthropic-version: header is required"), status=400
            )
        return None

    def error(self, status: int, message: str) -> dict[str, Any]:
        etype = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": "req_fake",
        }

    def error_event(self) -> bytes:
        return sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "error",
        )

    def completion(self, request: web.Request, body: Any) -> dict[str, Any]:
        reply = _Reply(body)
        msg = self._message(body, reply.input_tokens)
        if reply.tool is not None:
            msg["content"] = [
                {"type": "tool_use", "id": self._tool_id(), "name": reply.tool, "input": TOOL_INPUT}
            ]
        else:
            msg["content"] = [{"type": "text", "text": reply.text}]
            if reply.thinking:
                block = {
                    "type": "thinking",
                    "thinking": reply.thinking,
                    "signature": signature_of(reply.thinking),
                }
                msg["content"].insert(0, block)
        msg["stop_reason"] = reply.stop_reason
        msg["stop_sequence"] = reply.stop_sequence
        msg["usage"].update(reply.output_usage())
        return msg

    def stream(self, request: web.Request, body: Any) -> StreamPlan:
        reply = _Reply(body)
        start = self._message(body, reply.input_tokens)
        start["usage"]["output_tokens"] = 1
        events = [sse({"type": "message_start", "message": start}, "message_start")]
        index = 1 if reply.thinking and reply.tool is None else 0
        if reply.tool is not None:
            block = {"type": "tool_use", "id": self._tool_id(), "name": reply.tool, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in _pieces(json.dumps(TOOL_INPUT))
            ]
            events.append(
                sse(
                    {"type": "content_block_start", "index": 0, "content_block": block},
                    "content_block_start",
                )
            )
            first_content = 1  # the tool_use start already names the tool call
            events.append(sse({"type": "ping"}, "ping"))
        else:
            if reply.thinking:
                events.extend(_thinking_events(reply.thinking))
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(reply.text)]
            events.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
            events.append(sse({"type": "ping"}, "ping"))
            # the first progress: the first thinking delta when the reply thinks
            first_content = 2 if reply.thinking else len(events)
        for d in deltas:
            events.append(
                sse(
                    {"type": "content_block_delta", "index": index, "delta": d},
                    "content_block_delta",
                )
            )
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        usage = {**start["usage"], **reply.output_usage()}
        usage.pop("service_tier", None)
        usage.pop("cache_creation", None)
        delta = {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence}
        events.append(
            sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        )
        events.append(sse({"type": "message_stop"}, "message_stop"))
        return StreamPlan(events=events, first_content=first_content, terminator=1)

    def _message(self, body: Any, input_tokens: int) -> dict[str, Any]:
        cached, size, ttl = _cached_prefix(body)
        read = written = 0
        if cached is not None:
            n = min(size, max(0, input_tokens - 1))  # the turn after the prefix is fresh
            if cached in self._cache:
                read = n
            else:
                self._cache.add(cached)
                written = n
        message = {
            "id": f"msg_fake{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake") if isinstance(body, dict) else "claude-fake",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens - read - written,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 0 if ttl == "1h" else written,
                    "ephemeral_1h_input_tokens": written if ttl == "1h" else 0,
                },
                "output_tokens": 0,
                "service_tier": "standard",
            },
        }
        return message

    def _tool_id(self) -> str:
        return f"toolu_fake{next(self._ids):06d}"


class _Reply:
    """What the fake answers to one request body."""

    def __init__(self, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        tools = body.get("tools") or []
        prompt = _text(body.get("system")) + "".join(_text(m.get("content")) for m in messages)
        self.input_tokens = tokens(prompt + (json.dumps(tools) if tools else ""))
        self.tool: str | None = None
        self.stop_sequence: str | None = None
        self.thinking = ""
        if tools and last.get("role") == "user" and not _has_tool_result(last):
            self.tool = str(tools[0].get("name", "tool"))
            self.text = ""
            self.output_tokens = tokens(json.dumps(TOOL_INPUT)) + 10
            self.stop_reason = "tool_use"
            return
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            self.thinking = "Thinking about: " + _text(last.get("content"))
        text = "Hello from fake-anthropic: " + _text(last.get("content"))
        self.stop_reason = "end_turn"
        for seq in body.get("stop_sequences") or ():
            at = text.find(seq)
            if at >= 0:
                text, self.stop_reason, self.stop_sequence = text[:at], "stop_sequence", seq
                break
        limit = int(body.get("max_tokens") or 4096)
        if tokens(text) > limit:
            text, self.stop_reason, self.stop_sequence = text[: limit * 4], "max_tokens", None
        self.text = text
        self.output_tokens = tokens(text)

    def output_usage(self) -> dict[str, Any]:
        """Output usage: thinking counts in output_tokens and is reported apart too."""
        if not self.thinking:
            return {"output_tokens": self.output_tokens}
        thought = tokens(self.thinking)
        return {
            "output_tokens": self.output_tokens + thought,
            "output_tokens_details": {"thinking_tokens": thought},
        }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    out = []
    for block in content or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            out.append(_text(block.get("content")))
    return "".join(out)


def _thinking_events(thinking: str) -> list[bytes]:
    """The events of a streamed thinking block at index 0, signature last."""
    start = {"type": "thinking", "thinking": "", "signature": ""}
    events = [sse({"type": "content_block_start", "index": 0, "content_block": start},
                  "content_block_start")]  # fmt: skip
    deltas: list[dict[str, Any]] = [
        {"type": "thinking_delta", "thinking": p} for p in _pieces(thinking)
    ]
    deltas.append({"type": "signature_delta", "signature": signature_of(thinking)})
    for d in deltas:
        events.append(
            sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta")
        )
    events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    return events


def _cached_prefix(body: Any) -> tuple[str | None, int, str | None]:
    """(the prompt prefix up to the last block with cache_control, its tokens, its ttl), in
    Anthropic's cache order: tools, then system, then messages."""
    if not isinstance(body, dict):
        return None, 0, None
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    blocks.extend(system if isinstance(system, list) else [system] if system else [])
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        blocks.extend(content if isinstance(content, list) else [content])
    marked = [i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")]
    if not marked:
        return None, 0, None
    prefix = blocks[: marked[-1] + 1]
    ntools = len(body.get("tools") or ())
    text = "".join(json.dumps(b) if i < ntools else _text([b]) for i, b in enumerate(prefix))
    ttl = prefix[-1]["cache_control"].get("ttl")
    return json.dumps(prefix, sort_keys=True), tokens(text), ttl


def _has_tool_result(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _pieces(text: str) -> list[str]:
    """Split text into at least 3 stream deltas (words with their trailing spaces)."""
    parts = re.findall(r"\S+\s*|\s+", text)
    while len(text) > 0 and len(parts) < 3:
        longest = max(range(len(parts)), key=lambda i: len(parts[i]))
        p = parts[longest]
        if len(p) < 2:
            break
        parts[longest : longest + 1] = [p[: len(p) // 2], p[len(p) // 2 :]]
    return parts


def anthropic_fake(api_key: str = DEFAULT_API_KEY) -> FakeProvider:
    """A FakeProvider speaking the Anthropic Messages API (not started)."""
    return FakeProvider(AnthropicWire(api_key))
