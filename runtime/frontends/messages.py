"""The Anthropic Messages API frontend: `POST /v1/messages` and `/v1/messages/count_tokens`.

`MessagesFrontend` serves Anthropic's Messages API over the chat-completions pipeline
(runtime/frontends/base.py has the contract): the request is checked and translated by
runtime/frontends/messages_request.py; an Anthropic candidate gets the client's body passed
through and its answer relayed as sent; every other candidate's answer is translated back
into an Anthropic `message` (`completion`) or Anthropic's stream events (`MessagesEncoder`).
Errors take Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, with its
type names by status (ERROR_TYPES). `count_tokens` answers an estimate, flagged as one.

Reference for every shape: the official `anthropic` SDK's response types (`Message`,
`RawMessageStreamEvent`, `MessageTokensCount`; anthropic-python 2.x), which the tests
validate every answer and event with; the user's view is docs/api-messages.md.
"""

from __future__ import annotations

from typing import Any

import orjson

from runtime import tokens
from runtime.adapters.base import AnyChunk, Completion, NativeEvent, NativeRequest, RelayChunk
from runtime.errors import GatewayError, UpstreamError
from runtime.frontends import messages_request
from runtime.frontends.base import Parsed
from runtime.records import RequestRecord

ENDPOINT = "/v1/messages"
COUNT_TOKENS_ENDPOINT = "/v1/messages/count_tokens"
API = "messages"
# The header the handler sets on a count_tokens answer: its count is the gateway's estimate
# (runtime/tokens.py, about four characters a token), not a provider's tokenizer. The body
# says so too, in the extra field `estimated: true` (the SDK's `MessageTokensCount` keeps
# extra fields).
COUNT_TOKENS_ESTIMATE_HEADER = "x-switchyard-token-estimate"
COUNT_TOKENS_ESTIMATE_VALUE = "chars/4"

# chat finish_reason -> Anthropic stop_reason ("stop" is end_turn, or stop_sequence when the
# text ends with one of the request's stop sequences: chat reports both as "stop").
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# HTTP status -> Anthropic's error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def message_id(rec: RequestRecord) -> str:
    """The `msg_...` id of a translated answer, from the request id (req_<hex>)."""
    return "msg_" + rec.request_id.removeprefix("req_")


def usage_body(rec: RequestRecord) -> dict[str, Any]:
    """The record's usage in Anthropic's sense: `input_tokens` EXCLUDES the tokens read from
    and written to the cache (the record's counts them in, runtime/adapters/base.py Usage).
    No `cache_creation` breakdown: a stream's `message_delta` cannot carry it, and the
    streamed message must equal the non-streamed one."""
    read = rec.cached_input_tokens or 0
    write_5m = rec.cache_write_tokens or 0
    write_1h = rec.cache_write_1h_tokens or 0
    total = rec.input_tokens or 0
    return {
        "input_tokens": max(0, total - read - write_5m - write_1h),
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "output_tokens": rec.output_tokens or 0,
    }


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def _stop(finish: str | None, text: str, stops: list[str], refused: bool) -> tuple[Any, Any]:
    """(stop_reason, stop_sequence) of a chat finish_reason and the answer's last text."""
    if refused:
        return "refusal", None
    if finish == "stop" or finish is None:
        for seq in stops:
            if seq and text.endswith(seq):
                return "stop_sequence", seq
        return ("end_turn" if finish else None), None
    return STOP_REASONS.get(finish, "end_turn"), None


def _arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments as the `input` object; {} when they are not a JSON object
    (a model's malformed call: the client still sees the call, by id and name)."""
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The thinking of an assistant message as Anthropic blocks: its signed `thinking_blocks`
    as they are, else its `reasoning_content` as one block with an empty signature."""
    out: list[dict[str, Any]] = []
    for b in message.get("thinking_blocks") or ():
        if not isinstance(b, dict):
            continue
        if b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str):
            out.append({"type": "redacted_thinking", "data": b["data"]})
        elif b.get("type") == "thinking" and isinstance(b.get("thinking"), str):
            sig = b.get("signature")
            out.append(
                {
                    "type": "thinking",
                    "thinking": b["thinking"],
                    "signature": sig if isinstance(sig, str) else "",
                }
            )
    if not out:
        text = message.get("reasoning_content")
        if isinstance(text, str) and text:
            out.append({"type": "thinking", "thinking": text, "signature": ""})
    return out


def _relayed_choices(data: str) -> list[Any]:
    """The choices of a chunk an OpenAI-format provider sent undecoded; a payload of another
    shape is the provider's fault (`upstream_malformed`), as the adapters classify it."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list):
        raise UpstreamError(
            "server_error", "a stream chunk without a `choices` array", code="upstream_malformed"
        )
    return choices


def _sse(event: str, doc: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


class MessagesFrontend:
    """Anthropic's Messages API (`POST /v1/messages`)."""

    endpoint = ENDPOINT
    api = API
    # Beta fields of the body need their `anthropic-beta` header at Anthropic (passthrough).
    forward_headers = frozenset({b"anthropic-beta"})

    def parse(self, body: bytes, rec: RequestRecord) -> Parsed:
        """Check the body against `MessageCreateParams` and translate it (see
        runtime/frontends/messages_request.py); 400s name the field in Messages terms."""
        request = messages_request.decode(body, rec)
        builtin = messages_request.check(request)
        return Parsed(
            request=messages_request.translate(request),
            stream=request.get("stream") is True,
            native=NativeRequest(API, request),
            builtin_tools=builtin,
        )

    def completion(self, rec: RequestRecord, parsed: Parsed, result: Completion) -> bytes:
        """The Anthropic `message`: a passthrough's own body, or `result` translated."""
        if result.native is not None:
            return orjson.dumps(result.native)
        message = result.message
        content = _thinking_blocks(message)
        text = message.get("content")
        refusal = message.get("refusal")
        last_text = ""
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
            last_text = text
        if isinstance(refusal, str) and refusal:
            content.append({"type": "text", "text": refusal})
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or ""),
                    "name": str(fn.get("name") or ""),
                    "input": _arguments(fn.get("arguments")),
                }
            )
        stops = parsed.native.body.get("stop_sequences") or []
        finish = result.finish_reason or "stop"
        stop_reason, stop_sequence = _stop(finish, last_text, stops, bool(refusal))
        body = {
            "id": message_id(rec),
            "type": "message",
            "role": "assistant",
            "model": rec.upstream_model or "",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage_body(rec),
        }
        return orjson.dumps(body)

    def encoder(self, rec: RequestRecord, parsed: Parsed, native: bool) -> MessagesEncoder:
        """The encoder of a committed stream (relay when `native`)."""
        return MessagesEncoder(rec, parsed, native)

    def error_body(self, exc: GatewayError) -> bytes:
        """Anthropic's error shape, its type by the status (ERROR_TYPES)."""
        return orjson.dumps(
            {"type": "error", "error": {"type": error_type(exc.status), "message": exc.message}}
        )

    def count_tokens(self, body: bytes) -> dict[str, Any]:
        """`POST /v1/messages/count_tokens`: the estimated input tokens of a
        `MessageCountTokensParams` body, flagged `estimated` (and by the handler with
        COUNT_TOKENS_ESTIMATE_HEADER). 400s as `parse`."""
        request = messages_request.decode(body, None)
        messages_request.check(request, count_only=True)
        return {"input_tokens": count_input_tokens(request), "estimated": True}


def count_input_tokens(request: dict[str, Any]) -> int:
    """The estimate of a checked Messages request's input: runtime/tokens.py on its chat
    translation (messages, system, tools), plus the server tools' definitions as text."""
    translated = messages_request.translate(request)
    total = tokens.prompt_tokens(translated)
    servers = [t for t in request.get("tools") or () if t.get("type") not in (None, "custom")]
    if servers:
        total += tokens.text_tokens(str(servers))
    return total


class MessagesEncoder:
    """A committed stream in Anthropic's event format (`StreamEncoder`).

    Native: each `NativeEvent` relayed as `event: <name>` / `data: <payload>` as the provider
    sent it. Translated: `message_start`, then per content block (thinking, text, tool_use,
    in the order they arrive) `content_block_start` / `_delta` / `_stop`, and at `close`
    `message_delta` (stop_reason, usage) and `message_stop`, as Anthropic streams them.
    """

    def __init__(self, rec: RequestRecord, parsed: Parsed, native: bool) -> None:
        self.rec = rec
        self.native = native
        self.chars = 0
        self._stops: list[str] = parsed.native.body.get("stop_sequences") or []
        self._prompt = tokens.prompt_tokens(parsed.request)
        self._index = -1  # the Anthropic index of the open block; -1 before the first
        self._open: str | None = None  # the open block's type, None when none is open
        self._tools: dict[int, int] = {}  # chat tool_calls index -> Anthropic block index
        self._tool_ids: dict[int, str] = {}  # chat tool_calls index -> its call id
        self._tail = ""  # the end of the text so far, to recognise a stop sequence
        self._tail_len = max((len(s) for s in self._stops), default=0)
        self._finish: str | None = None
        self._refused = False

    def open(self) -> bytes:
        """`message_start` (translated), with the input estimate so far; b"" when native."""
        if self.native:
            return b""
        usage = {"input_tokens": self.rec.input_tokens or self._prompt, "output_tokens": 0}
        message: dict[str, Any] = {
            "id": message_id(self.rec),
            "type": "message",
            "role": "assistant",
            "model": self.rec.upstream_model or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return _sse("message_start", {"type": "message_start", "message": message})

    def chunk(self, chunk: AnyChunk) -> bytes:
        """One upstream chunk in Anthropic's events."""
        if isinstance(chunk, NativeEvent):
            self.chars += chunk.chars
            return b"event: " + chunk.event.encode() + b"\ndata: " + chunk.data.encode() + b"\n\n"
        choices = chunk.choices
        if choices is None and isinstance(chunk, RelayChunk):
            choices = _relayed_choices(chunk.data)
        out: list[bytes] = []
        for choice in choices or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            self._delta(delta, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            if self._open != "thinking":
                self._start({"type": "thinking", "thinking": "", "signature": ""}, out)
            self._emit({"type": "thinking_delta", "thinking": reasoning}, out)
            self.chars += len(reasoning)
        for block in delta.get("thinking_blocks") or ():
            self._thinking_block(block, out)
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                if self._open != "text":
                    self._start({"type": "text", "text": ""}, out)
                self._emit({"type": "text_delta", "text": text}, out)
                self.chars += len(text)
                if key == "refusal":
                    self._refused = True
                elif self._tail_len:
                    self._tail = (self._tail + text)[-self._tail_len :]
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, out)

    def _thinking_block(self, block: Any, out: list[bytes]) -> None:
        """A whole thinking block (the chat path's `thinking_blocks` delta: the Anthropic
        adapter sends it when a block ends, with its signature)."""
        if not isinstance(block, dict):
            return
        if block.get("type") == "redacted_thinking":
            self._start({"type": "redacted_thinking", "data": str(block.get("data", ""))}, out)
            self._close(out)
            return
        text, sig = block.get("thinking"), block.get("signature")
        if self._open != "thinking":  # not streamed before: the whole block now
            self._start({"type": "thinking", "thinking": "", "signature": ""}, out)
            if isinstance(text, str) and text:
                self._emit({"type": "thinking_delta", "thinking": text}, out)
                self.chars += len(text)
        if isinstance(sig, str) and sig:
            self._emit({"type": "signature_delta", "signature": sig}, out)
        self._close(out)

    def _tool_call(self, call: Any, out: list[bytes]) -> None:
        if not isinstance(call, dict):
            return
        n = call.get("index", 0)
        fn = call.get("function") or {}
        cid = call.get("id")
        if n not in self._tools or (cid is not None and cid != self._tool_ids[n]):
            # a new call (some servers repeat the id on every chunk of a call)
            name = str(fn.get("name") or "")
            block = {"type": "tool_use", "id": str(cid or ""), "name": name, "input": {}}
            self._start(block, out)
            self._tools[n] = self._index
            self._tool_ids[n] = str(cid or "")
            self.chars += len(name)
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            index = self._tools[n]
            delta = {"type": "input_json_delta", "partial_json": args}
            doc = {"type": "content_block_delta", "index": index, "delta": delta}
            out.append(_sse("content_block_delta", doc))
            self.chars += len(args)

    def _start(self, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._index += 1
        self._open = block["type"]
        out.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        )

    def _emit(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": delta},
            )
        )

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            doc = {"type": "content_block_stop", "index": self._index}
            out.append(_sse("content_block_stop", doc))
            self._open = None

    def close(self, rec: RequestRecord) -> bytes:
        """The last block's stop, `message_delta` with the accounted usage, `message_stop`;
        b"" when native (the provider's own `message_stop` was relayed)."""
        if self.native:
            return b""
        out: list[bytes] = []
        self._close(out)
        reason, seq = _stop(self._finish or "stop", self._tail, self._stops, self._refused)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": seq},
            "usage": usage_body(rec),
        }
        out.append(_sse("message_delta", delta))
        out.append(_sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def fail(self, code: str, message: str) -> bytes:
        """Anthropic's `error` event; the SDK raises an APIStatusError on it."""
        kind = "api_error"  # upstream_stream_broken and the rest
        if "overloaded" in code or "shutting_down" in code:  # gateway_shutting_down
            kind = "overloaded_error"
        elif "rate_limit" in code:
            kind = "rate_limit_error"
        elif "timeout" in code:  # request_timeout
            kind = "timeout_error"
        return _sse("error", {"type": "error", "error": {"type": kind, "message": message}})
