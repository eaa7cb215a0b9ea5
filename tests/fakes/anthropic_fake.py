"""A fake Anthropic Messages API (POST /v1/messages), in Anthropic's exact wire format.

Replies are deterministic: "Hello from fake-anthropic: <last user text>", streamed as several
`text_delta`s; when the request has tools and the last user turn is not a tool result, the
reply is a `tool_use` of the first tool with input {"city": "Paris"}. `max_tokens` and
`stop_sequences` are honoured (stop_reason `max_tokens` / `stop_sequence`); usage is derived
from text lengths (about 4 characters a token).
"""

from __future__ import annotations

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


class AnthropicWire:
    routes = [("POST", "/v1/messages")]

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self._ids = itertools.count(1)

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
        msg["stop_reason"] = reply.stop_reason
        msg["stop_sequence"] = reply.stop_sequence
        msg["usage"]["output_tokens"] = reply.output_tokens
        return msg

    def stream(self, request: web.Request, body: Any) -> StreamPlan:
        reply = _Reply(body)
        start = self._message(body, reply.input_tokens)
        start["usage"]["output_tokens"] = 1
        events = [sse({"type": "message_start", "message": start}, "message_start")]
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
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(reply.text)]
            events.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
            events.append(sse({"type": "ping"}, "ping"))
            first_content = len(events)
        for d in deltas:
            events.append(
                sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta")
            )
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        usage = {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": reply.output_tokens,
        }
        delta = {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence}
        events.append(
            sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        )
        events.append(sse({"type": "message_stop"}, "message_stop"))
        return StreamPlan(events=events, first_content=first_content, terminator=1)

    def _message(self, body: Any, input_tokens: int) -> dict[str, Any]:
        return {
            "id": f"msg_fake{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake") if isinstance(body, dict) else "claude-fake",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
                "service_tier": "standard",
            },
        }

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
        if tools and last.get("role") == "user" and not _has_tool_result(last):
            self.tool = str(tools[0].get("name", "tool"))
            self.text = ""
            self.output_tokens = tokens(json.dumps(TOOL_INPUT)) + 10
            self.stop_reason = "tool_use"
            return
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
