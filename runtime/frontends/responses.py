"""OpenAI's Responses API (`POST /v1/responses`) over the chat-completions pipeline.

The request is checked and translated in runtime/frontends/responses_request.py. Here the
answer: a passthrough's own body or events relayed as sent; a translated answer rendered as a
Responses `response` object, or streamed as the documented event sequence
(`response.created`, `response.in_progress`, per output item `response.output_item.added`,
its content events, `response.output_item.done`, then `response.completed` or
`response.incomplete`), every event with its `sequence_number` from 0.

Reference: `openai.types.responses.Response` and `ResponseStreamEvent` (openai-python 3.x);
the tests validate every body and event with them and feed the stream through the SDK's own
accumulator (`openai.lib.streaming.responses.ResponseStreamState`).

A translated answer's output items, in order: a `reasoning` item when the model's thinking
came back (`reasoning_content`, as `reasoning_text` content), a `message` item (its text as
`output_text`, a refusal as `refusal`; present unless the answer is only tool calls), one
`function_call` item per tool call. Ids derive from the request id (`resp_…`, `msg_…`,
`rs_…`, `fc_…`); `store` is always false (nothing is stored).
"""

from __future__ import annotations

from typing import Any

import orjson

from runtime.adapters.base import AnyChunk, Completion, NativeEvent, RelayChunk
from runtime.errors import GatewayError
from runtime.frontends import responses_request
from runtime.frontends.base import Parsed, StreamEncoder
from runtime.records import RequestRecord

# A chat finish_reason that ends a response early: the Responses `incomplete_details.reason`.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

# The request fields a response echoes, with OpenAI's value when the request left them out.
_ECHOED: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "prompt_cache_key": None,
    "safety_identifier": None,
    "temperature": None,
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": None,
    "top_p": None,
    "truncation": "disabled",
    "user": None,
}


class ResponsesFrontend:
    """The `Frontend` of OpenAI's Responses API (runtime/frontends/base.py)."""

    endpoint = responses_request.ENDPOINT
    api = responses_request.API
    forward_headers: frozenset[bytes] = frozenset()  # OpenAI reads none of the client's

    def parse(self, body: bytes, rec: RequestRecord) -> Parsed:
        return responses_request.parse(body, rec)

    def completion(self, rec: RequestRecord, parsed: Parsed, result: Completion) -> bytes:
        if result.native is not None:
            return orjson.dumps(result.native)
        ids = _Ids(rec)
        msg = result.message
        output: list[dict[str, Any]] = []
        reasoning = msg.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            output.append(_reasoning_item(ids.reasoning, reasoning, "completed"))
        incomplete = _INCOMPLETE.get(result.finish_reason or "")
        status = "incomplete" if incomplete else "completed"
        text = _text_of(msg.get("content"))
        refusal = msg.get("refusal")
        calls = msg.get("tool_calls") or []
        if text or refusal or not calls:
            parts = []
            if text or not refusal:
                parts.append(_output_text(text))
            if refusal:
                parts.append({"type": "refusal", "refusal": refusal})
            output.append(_message_item(ids.message, parts, status))
        for i, call in enumerate(calls):
            fn = call.get("function") or {}
            output.append(
                _call_item(
                    ids.call(i),
                    call.get("id") or "",
                    fn.get("name") or "",
                    fn.get("arguments") or "",
                    "completed",
                )
            )
        return orjson.dumps(_response(rec, parsed, ids, output, incomplete, usage=True))

    def encoder(self, rec: RequestRecord, parsed: Parsed, native: bool) -> StreamEncoder:
        if native:
            return NativeEncoder()
        return TranslatedEncoder(rec, parsed)

    def error_body(self, exc: GatewayError) -> bytes:
        return orjson.dumps(exc.body())


class _Ids:
    """The ids of one translated answer, the same streamed or not."""

    def __init__(self, rec: RequestRecord) -> None:
        tail = rec.request_id[4:] if rec.request_id.startswith("req_") else rec.request_id
        self.response = "resp_" + tail
        self.message = "msg_" + tail
        self.reasoning = "rs_" + tail

        self._tail = tail

    def call(self, i: int) -> str:
        return f"fc_{self._tail}_{i}"


def _text_of(content: Any) -> str:
    """An assistant message's content as text (a string, or the texts of its parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": parts,
    }


def _reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _usage(rec: RequestRecord) -> dict[str, Any]:
    """The record's usage in the Responses shape (`cache_write_tokens`: Anthropic's 5-minute
    and 1-hour writes together)."""
    prompt = rec.input_tokens or 0
    completion = rec.output_tokens or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": rec.cached_input_tokens or 0,
            "cache_write_tokens": (rec.cache_write_tokens or 0) + (rec.cache_write_1h_tokens or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": rec.reasoning_tokens or 0},
        "total_tokens": prompt + completion,
    }


def _response(
    rec: RequestRecord,
    parsed: Parsed,
    ids: _Ids,
    output: list[dict[str, Any]],
    incomplete: str | None,
    *,
    usage: bool,
    status: str | None = None,
) -> dict[str, Any]:
    """A `response` object: the request's fields echoed as OpenAI does, `store` false."""
    body = parsed.native.body
    doc: dict[str, Any] = {
        "id": ids.response,
        "object": "response",
        "created_at": int(rec.ts),
        "status": status or ("incomplete" if incomplete else "completed"),
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": rec.upstream_model or rec.requested_model or "",
        "output": output,
        "previous_response_id": None,
        "store": False,
        "background": False,
        "reasoning": _echo_reasoning(body.get("reasoning")),
        "text": _echo_text(body.get("text")),
        "usage": _usage(rec) if usage else None,
    }
    for key, default in _ECHOED.items():
        value = body.get(key)
        doc[key] = default if value is None else value
    return doc


def _echo_reasoning(value: Any) -> dict[str, Any]:
    reasoning = value if isinstance(value, dict) else {}
    return {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}


def _echo_text(value: Any) -> dict[str, Any]:
    text = dict(value) if isinstance(value, dict) else {}
    if text.get("format") is None:
        text["format"] = {"type": "text"}
    return text


# -- streams -----------------------------------------------------------------------------


def _event(name: str, doc: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


def _error_event(seq: int, code: str, message: str) -> bytes:
    """The `error` event: `ResponseErrorEvent`'s fields, and the same as an `error` object,
    which is what makes the openai SDK raise `APIError` mid-stream (openai/_streaming.py
    raises on any event whose data has an `error` object)."""
    error = {"type": "api_error", "code": code, "message": message, "param": None}
    return _event(
        "error",
        {
            "type": "error",
            "sequence_number": seq,
            "code": code,
            "message": message,
            "param": None,
            "error": error,
        },
    )


class NativeEncoder:
    """A passthrough stream: OpenAI's own events relayed as sent."""

    def __init__(self) -> None:
        self.chars = 0
        self._seq = -1

    def open(self) -> bytes:
        return b""

    def chunk(self, chunk: AnyChunk) -> bytes:
        if not isinstance(chunk, NativeEvent):  # pragma: no cover - a handler bug
            raise TypeError("a native Responses stream carries NativeEvents only")
        self.chars += chunk.chars
        seq = chunk.doc.get("sequence_number")
        if type(seq) is int:
            self._seq = seq
        return b"event: " + chunk.event.encode() + b"\ndata: " + chunk.data.encode() + b"\n\n"

    def close(self, rec: RequestRecord) -> bytes:
        return b""

    def fail(self, code: str, message: str) -> bytes:
        self._seq += 1
        return _error_event(self._seq, code, message)


class TranslatedEncoder:
    """A translated stream: chat-completions chunks written as Responses events."""

    def __init__(self, rec: RequestRecord, parsed: Parsed) -> None:
        self.chars = 0
        self._rec = rec
        self._parsed = parsed
        self._ids = _Ids(rec)
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # by output_index
        self._open: int | None = None  # the open reasoning or message item
        self._calls: dict[int, int] = {}  # tool call index -> output_index
        self._finish: str | None = None

    def _emit(self, name: str, doc: dict[str, Any]) -> bytes:
        doc = {"type": name, "sequence_number": self._seq, **doc}
        self._seq += 1
        return _event(name, doc)

    def _snapshot(
        self, status: str, output: list[dict[str, Any]], incomplete: str | None
    ) -> dict[str, Any]:
        return _response(
            self._rec,
            self._parsed,
            self._ids,
            output,
            incomplete,
            usage=status != "in_progress",
            status=status,
        )

    def open(self) -> bytes:
        snap = self._snapshot("in_progress", [], None)
        return self._emit("response.created", {"response": snap}) + self._emit(
            "response.in_progress", {"response": snap}
        )

    # items

    def _add(self, item: dict[str, Any]) -> tuple[int, bytes]:
        index = len(self._items)
        self._items.append(item)
        added = {k: (list(v) if isinstance(v, list) else v) for k, v in item.items()}
        return index, self._emit(
            "response.output_item.added", {"output_index": index, "item": added}
        )

    def _done(self, index: int, status: str) -> bytes:
        item = self._items[index]
        out = b""
        kind = item["type"]
        if kind == "message":
            for j, part in enumerate(item["content"]):
                where = {"item_id": item["id"], "output_index": index, "content_index": j}
                if part["type"] == "output_text":
                    out += self._emit(
                        "response.output_text.done", {**where, "text": part["text"], "logprobs": []}
                    )
                else:
                    out += self._emit(
                        "response.refusal.done", {**where, "refusal": part["refusal"]}
                    )
                out += self._emit("response.content_part.done", {**where, "part": part})
        elif kind == "reasoning":
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out += self._emit("response.reasoning_text.done", {**where, "text": part["text"]})
            out += self._emit("response.content_part.done", {**where, "part": part})
        else:
            out += self._emit(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": item["arguments"]},
            )
        item["status"] = status
        return out + self._emit("response.output_item.done", {"output_index": index, "item": item})

    def _close_open(self, status: str = "completed") -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        if self._items[index]["type"] != "message":
            status = "completed"
        return self._done(index, status)

    def _part(self, index: int, part_type: str) -> tuple[dict[str, Any], int, bytes]:
        """The message's part of `part_type` (output_text or refusal), added when new."""
        item = self._items[index]
        for j, part in enumerate(item["content"]):
            if part["type"] == part_type:
                return part, j, b""
        part = (
            _output_text("") if part_type == "output_text" else {"type": "refusal", "refusal": ""}
        )
        j = len(item["content"])
        item["content"].append(part)
        added = self._emit(
            "response.content_part.added",
            {"item_id": item["id"], "output_index": index, "content_index": j, "part": dict(part)},
        )
        return part, j, added

    def _current(self, kind: str) -> tuple[int, bytes]:
        """The open item of `kind` (reasoning or message), opened after closing another."""
        out = b""
        if self._open is not None:
            if self._items[self._open]["type"] == kind:
                return self._open, out
            out = self._close_open()
        if kind == "reasoning":
            index, added = self._add(_reasoning_item(self._ids.reasoning, None, "in_progress"))
            item = self._items[index]
            item["content"] = [{"type": "reasoning_text", "text": ""}]
            added += self._emit(
                "response.content_part.added",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": {"type": "reasoning_text", "text": ""},
                },
            )
        else:
            index, added = self._add(_message_item(self._ids.message, [], "in_progress"))
        self._open = index
        return index, out + added

    # chunks

    def chunk(self, chunk: AnyChunk) -> bytes:
        choices = chunk.choices
        if choices is None:
            if not isinstance(chunk, RelayChunk):  # pragma: no cover - a handler bug
                raise TypeError("a translated Responses stream carries chat chunks only")
            doc = orjson.loads(chunk.data)
            choices = doc.get("choices") if isinstance(doc, dict) else None
        out = b""
        for choice in choices or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            out += self._delta(delta)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out = b""
        thinking = delta.get("reasoning_content")
        if isinstance(thinking, str) and thinking:
            index, out = self._current("reasoning")
            item = self._items[index]
            item["content"][0]["text"] += thinking
            self.chars += len(thinking)
            out += self._emit(
                "response.reasoning_text.delta",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "delta": thinking,
                },
            )
        for key, part_type, event in (
            ("content", "output_text", "response.output_text.delta"),
            ("refusal", "refusal", "response.refusal.delta"),
        ):
            piece = delta.get(key)
            if isinstance(piece, str) and piece:
                index, opened = self._current("message")
                part, j, added = self._part(index, part_type)
                part["text" if key == "content" else "refusal"] += piece
                self.chars += len(piece)
                where = {
                    "item_id": self._items[index]["id"],
                    "output_index": index,
                    "content_index": j,
                }
                extra: dict[str, Any] = {"logprobs": []} if key == "content" else {}
                out += opened + added + self._emit(event, {**where, "delta": piece, **extra})
        for call in delta.get("tool_calls") or ():
            out += self._tool_call(call)
        return out

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        out = b""
        pos = call.get("index", 0)
        fn = call.get("function") or {}
        index = self._calls.get(pos)
        name = fn.get("name") or ""
        if index is None:
            out = self._close_open()
            # The name goes in `output_item.added`: clients (langchain) take it from there.
            index, added = self._add(
                _call_item(
                    self._ids.call(len(self._calls)), call.get("id") or "", name, "", "in_progress"
                )
            )
            self._calls[pos] = index
            out += added
        elif name:
            self._items[index]["name"] += name
        item = self._items[index]
        if not item["call_id"] and call.get("id"):
            item["call_id"] = call["id"]
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item["arguments"] += args
            self.chars += len(args)
            out += self._emit(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": index, "delta": args},
            )
        return out

    def close(self, rec: RequestRecord) -> bytes:
        incomplete = _INCOMPLETE.get(self._finish or "")
        status = "incomplete" if incomplete else "completed"
        if not any(item["type"] == "message" for item in self._items) and not self._calls:
            index, out = self._current("message")  # an empty answer: one empty message
            out += self._part(index, "output_text")[2]
        else:
            out = b""
        out += self._close_open(status)
        for index in sorted(self._calls.values()):
            out += self._done(index, "completed")
        self._rec = rec
        final = self._snapshot(status, self._items, incomplete)
        name = "response.incomplete" if incomplete else "response.completed"
        return out + self._emit(name, {"response": final})

    def fail(self, code: str, message: str) -> bytes:
        seq, self._seq = self._seq, self._seq + 1
        return _error_event(seq, code, message)
