"""Passthrough to Anthropic's own Messages API (`POST {base}/v1/messages`).

The client's Messages body goes upstream as it is, only `model` replaced by the candidate's
upstream id and `stream` set by the gateway, with the chat path's headers (`x-api-key`,
`anthropic-version`). The answer comes back as Anthropic sent it: a `message` object, or its
server-sent events relayed one by one. The adapter reads the usage (in OpenAI's sense, as
`anthropic._usage` computes it: cache reads and writes are part of the input), the model,
and for a stream which events are output (they decide the commit point) and which are
thinking. A stream is complete only after `message_stop`; an `error` event raises its class
(`anthropic.stream_error`); a body that ends before `message_stop` is `stream_truncated`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from runtime.adapters import anthropic_wire as chat  # what the chat adapter reads alike
from runtime.adapters import http
from runtime.adapters.base import Call, Completion, FlushHook, NativeEvent, Usage, native_body
from runtime.adapters.transport_base import HTTPResponse, HTTPTransport
from runtime.errors import UpstreamError

API = "messages"

_CONTENT_BLOCKS = frozenset({"tool_use", "server_tool_use"})  # their start is output


def request_body(call: Call, stream: bool) -> bytes:
    """The client's Messages body with the upstream model id and the gateway's `stream`
    (the client's body is not mutated)."""
    return orjson.dumps(native_body(call, API, stream))


def headers(call: Call) -> dict[str, str]:
    """Anthropic's auth headers, as on the chat path, and the client's own Anthropic headers
    the frontend forwards (`anthropic-beta`: beta fields of the body need it)."""
    out = {
        "content-type": "application/json",
        "x-api-key": call.credentials.get("api_key", ""),
        "anthropic-version": chat.API_VERSION,
    }
    if call.native is not None:
        for name, value in call.native.headers:  # a repeated header: its values, joined
            out[name] = f"{out[name]},{value}" if name in out else value
    return out


async def post(
    transport: HTTPTransport, url: str, timeouts: http.Timeouts, call: Call, stream: bool
) -> HTTPResponse:
    """POST the passthrough to `url` (the adapter's /v1/messages); an error status raises the
    classified UpstreamError."""
    return await http.post(
        transport,
        url,
        headers(call),
        request_body(call, stream),
        timeouts.pick(stream),
        chat.map_error,
    )


def parse_message(doc: Any) -> Completion:
    """A `message` object -> Completion with the body in `native` and usage read from it."""
    if not isinstance(doc, dict) or doc.get("type") != "message":
        raise chat._malformed("answer is not a Messages `message` object")
    stop = doc.get("stop_reason")
    model = doc.get("model")
    return Completion(
        message={},
        finish_reason=chat.STOP_REASONS.get(stop, "stop") if isinstance(stop, str) else None,
        usage=chat._usage(doc.get("usage")),
        model=model if isinstance(model, str) else None,
        native=doc,
    )


class MessagesStream:
    """A Messages stream relayed event by event, complete only after `message_stop`."""

    def __init__(self, resp: HTTPResponse) -> None:
        self.resp = resp
        self.usage: Usage | None = None
        self.model: str | None = None
        self._usage: dict[str, Any] = {}  # usage fields so far (message_start, message_delta)

    def watch_idle(self, hook: FlushHook) -> bool:
        """The transport awaits `hook` before it waits for the network."""
        self.resp.before_wait = hook
        return True

    async def __aiter__(self) -> AsyncIterator[NativeEvent]:
        done = False
        committed = False  # after the first output event every event is content
        async for event, data in http.iter_sse(self.resp):
            doc = http.loads(data)
            if type(doc) is not dict:
                raise chat._malformed("stream payload is not an object")
            kind = doc.get("type")
            if kind == "error":
                raise chat.stream_error(doc)
            if not isinstance(kind, str):
                raise chat._malformed("stream event has no type")
            try:
                content, reasoning, chars, found = self._read(kind, doc)
            except (AttributeError, KeyError, TypeError) as exc:
                raise chat._malformed(
                    f"stream event {kind!r} of an unexpected shape: {exc}"
                ) from None
            committed = committed or content
            yield NativeEvent(
                event or kind, data, doc, committed, found, reasoning and not committed, chars
            )
            if kind == "message_stop":
                done = True
                break
        if not done:
            raise UpstreamError(
                "server_error", "stream ended without message_stop", code="stream_truncated"
            )

    def _read(self, kind: str, doc: dict[str, Any]) -> tuple[bool, bool, int, Usage | None]:
        """(content, reasoning, chars, usage) of one event."""
        if kind == "message_start":
            msg = doc["message"]
            model = msg.get("model")
            self.model = model if isinstance(model, str) else None
            return False, False, 0, self._add_usage(msg.get("usage"))
        if kind == "message_delta":
            return False, False, 0, self._add_usage(doc.get("usage"))
        if kind == "content_block_start":
            block = doc["content_block"]
            btype = block.get("type")
            if btype in _CONTENT_BLOCKS:
                return True, False, 0, None
            if btype == "text" and block.get("text"):
                return True, False, len(chat._string(block["text"], "text")), None
            return False, btype in ("thinking", "redacted_thinking"), 0, None
        if kind == "content_block_delta":
            delta = doc["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = chat._string(delta.get("text"), "text")
                return bool(text), False, len(text), None
            if dtype == "input_json_delta":
                args = chat._string(delta.get("partial_json"), "partial_json")
                return bool(args), False, len(args), None
            if dtype in ("thinking_delta", "signature_delta"):
                return False, True, 0, None
            return False, False, 0, None  # citations_delta, and kinds added later
        return False, False, 0, None  # ping, content_block_stop, message_stop

    def _add_usage(self, u: Any) -> Usage | None:
        if u is None:
            return None
        if not isinstance(u, dict):
            raise chat._malformed("usage is not an object")
        self._usage.update((k, v) for k, v in u.items() if v is not None)
        found = chat._usage(self._usage)
        if found is not None:
            self.usage = found
        return found

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()
