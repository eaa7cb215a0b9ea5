"""Passthrough to OpenAI's own Responses API (`POST {base_url}/responses`).

The client's body goes upstream as it is, only `model` replaced by the candidate's upstream
id and `stream` set by the gateway; the answer comes back as OpenAI sent it (a `response`
object, or its server-sent events relayed one by one). The adapter reads just enough of it
for the gateway: the usage (Responses names: `input_tokens`, `output_tokens` and their
details), the model, and for a stream which events are output (they decide the commit point)
and which are thinking (progress, not output).

Errors are OpenAI's, classified as on the chat path (`openai.map_error`): an error status
before anything was sent back, a `response` whose `status` is `failed`, an `error` or
`response.failed` event in a stream. A stream is complete only after `response.completed`
or `response.incomplete`; a body that ends before either is `stream_truncated`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from runtime.adapters import http
from runtime.adapters import openai_wire as chat  # what the chat adapter reads alike
from runtime.adapters.base import Call, Completion, FlushHook, NativeEvent, Usage, native_body
from runtime.adapters.transport_base import HTTPResponse, HTTPTransport
from runtime.errors import UpstreamError

API = "responses"

# The events that end a Responses stream normally; `response.failed` and `error` end it with
# an error.
TERMINATORS = frozenset({"response.completed", "response.incomplete"})

# Events that are output a client sees: the first of them commits the response.
_CONTENT_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.output_text.done",
        "response.refusal.done",
        "response.function_call_arguments.done",
    }
)
# Output items whose mere start is output (a tool call carries its name at once).
_CONTENT_ITEMS = frozenset({"function_call", "custom_tool_call"})
# Events carrying characters of output, for the estimate of an attempt cut short.
_DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
    }
)
# A failed response's `error.code` -> error class (the rest: the HTTP status classes).
_FAILED_CODES = {
    "server_error": "server_error",
    "rate_limit_exceeded": "rate_limited",
    "vector_store_timeout": "timeout",
    "context_length_exceeded": "context_length",
    "insufficient_quota": "quota_exhausted",
}
# `incomplete_details.reason` -> the chat-completions finish reason the record keeps.
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def url(base_url: str) -> str:
    """The Responses endpoint under a provider's base URL (which ends in /v1)."""
    return base_url.rstrip("/") + "/responses"


def request_body(call: Call, stream: bool) -> bytes:
    """The client's Responses body with the upstream model id and the gateway's `stream`
    (the client's body is not mutated)."""
    return orjson.dumps(native_body(call, API, stream, ("stream_options",)))


def headers(call: Call) -> dict[str, str]:
    """OpenAI's auth headers, as on the chat path."""
    out = {
        "content-type": "application/json",
        "authorization": "Bearer " + call.credentials.get("api_key", ""),
    }
    if "organization" in call.credentials:
        out["openai-organization"] = call.credentials["organization"]
    return out


async def post(
    transport: HTTPTransport, base_url: str, timeouts: http.Timeouts, call: Call, stream: bool
) -> HTTPResponse:
    """POST the passthrough; an error status raises the classified UpstreamError."""
    return await http.post(
        transport,
        url(base_url),
        headers(call),
        request_body(call, stream),
        timeouts.pick(stream),
        chat.map_error,
    )


def parse_response(doc: Any) -> Completion:
    """A `response` object -> Completion with the body in `native` and usage read from it;
    a failed response raises its classified error."""
    if not isinstance(doc, dict) or doc.get("object") != "response":
        raise chat._malformed("answer is not a Responses `response` object")
    if doc.get("status") == "failed":
        raise failed_error(doc)
    model = doc.get("model")
    return Completion(
        message={},
        finish_reason=finish_reason(doc),
        usage=usage(doc.get("usage")),
        model=model if isinstance(model, str) else None,
        native=doc,
    )


def finish_reason(doc: dict[str, Any]) -> str | None:
    """The chat-completions finish reason a response amounts to (for the record)."""
    status = doc.get("status")
    if status == "incomplete":
        details = doc.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return _INCOMPLETE.get(str(reason), "length")
    if status != "completed":
        return None
    output = doc.get("output")
    if isinstance(output, list) and any(
        isinstance(item, dict) and item.get("type") in _CONTENT_ITEMS for item in output
    ):
        return "tool_calls"
    return "stop"


def usage(u: Any) -> Usage | None:
    """The Responses usage object -> Usage (None when there is none); malformed counts raise."""
    if u is None:
        return None
    if not isinstance(u, dict):
        raise chat._malformed("usage is not an object")
    if "input_tokens" not in u:
        return None
    return Usage(
        chat._count(u["input_tokens"], "input_tokens"),
        chat._count(u.get("output_tokens"), "output_tokens"),
        cached_input_tokens=chat._detail(u, "input_tokens_details", "cached_tokens"),
        reasoning_tokens=chat._detail(u, "output_tokens_details", "reasoning_tokens"),
    )


def failed_error(doc: dict[str, Any]) -> UpstreamError:
    """The error of a `failed` response (or of a `response.failed` event's response)."""
    err = doc.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    message = http.error_message({"error": err} if err is not None else {}, "response failed")
    return _classified(code, message, "response_failed")


def error_event(doc: dict[str, Any]) -> UpstreamError:
    """An `error` event of a stream (`{"type": "error", "code", "message", "param"}`)."""
    code = doc.get("code")
    message = http.error_message({"error": doc}, "error event in the stream")
    return _classified(code, message, "stream_error_event")


def _classified(code: Any, message: str, our_code: str) -> UpstreamError:
    # The status was 200: the class comes from the code, or from the message as OpenAI's
    # error statuses would have said it (map_error reads both).
    cls = _FAILED_CODES.get(str(code))
    if cls is None:
        cls = chat.map_error(500, {"error": {"message": message, "code": code}}, None).error_class
    return UpstreamError(cls, message, code=our_code)  # type: ignore[arg-type]


class ResponsesStream:
    """A Responses stream relayed event by event, complete only after `response.completed`
    or `response.incomplete`."""

    def __init__(self, resp: HTTPResponse) -> None:
        self.resp = resp
        self.usage: Usage | None = None
        self.model: str | None = None

    def watch_idle(self, hook: FlushHook) -> bool:
        """The transport awaits `hook` before it waits for the network."""
        self.resp.before_wait = hook
        return True

    async def __aiter__(self) -> AsyncIterator[NativeEvent]:
        done = False
        committed = False  # after the first output event every event is content
        async for event, data in http.iter_sse(self.resp):
            if data == "[DONE]":
                continue  # not sent by the Responses API; tolerated, never relayed
            doc = http.loads(data)
            if type(doc) is not dict:
                raise chat._malformed("stream payload is not an object")
            kind = doc.get("type")
            if not isinstance(kind, str):
                raise chat._malformed("stream event has no type")
            if kind == "error":
                raise error_event(doc)
            if kind == "response.failed":
                raise failed_error(_response(doc))
            found: Usage | None = None
            if kind in ("response.created", "response.in_progress") and self.model is None:
                model = _response(doc).get("model")
                self.model = model if isinstance(model, str) else None
            elif kind in TERMINATORS:
                response = _response(doc)
                found = usage(response.get("usage"))
                if found is not None:
                    self.usage = found
                model = response.get("model")
                if isinstance(model, str):
                    self.model = model
                done = True
            chars = 0
            if kind in _DELTA_EVENTS:
                delta = doc.get("delta")
                if not isinstance(delta, str):
                    raise chat._malformed(f"{kind} delta is not a string")
                chars = len(delta)
            content = committed or _is_content(kind, doc, chars)
            committed = content
            reasoning = not content and kind.startswith("response.reasoning")
            if not reasoning and not content and kind == "response.output_item.added":
                item = doc.get("item")
                reasoning = isinstance(item, dict) and item.get("type") == "reasoning"
            yield NativeEvent(event or kind, data, doc, content, found, reasoning, chars)
            if done:
                break
        if not done:
            raise UpstreamError(
                "server_error",
                "stream ended without response.completed or response.incomplete",
                code="stream_truncated",
            )

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()


def _is_content(kind: str, doc: dict[str, Any], chars: int) -> bool:
    if kind in _DELTA_EVENTS:
        return chars > 0
    if kind in _CONTENT_EVENTS:
        return True
    if kind == "response.output_item.added":
        item = doc.get("item")
        return isinstance(item, dict) and item.get("type") in _CONTENT_ITEMS
    return False


def _response(doc: dict[str, Any]) -> dict[str, Any]:
    response = doc.get("response")
    if not isinstance(response, dict):
        raise chat._malformed(f"{doc.get('type')} event has no response object")
    return response
