"""The OpenAI fake's Responses API (POST /v1/responses), in OpenAI's documented shape.

Answers (https://platform.openai.com/docs/api-reference/responses/create):
- text: one `message` item with an `output_text` "Hello from fake-openai: <last user text>";
- a `function_call` item of the first function tool, arguments built from its schema, when
  tools are given and the last input item is the user's (not a `function_call_output`);
- JSON text when `text.format` asks (`json_schema`: an object satisfying the schema's required
  properties; `json_object`: {"text": ...}), so `responses.parse` parses it;
- with `reasoning.effort`, a `reasoning` item first (no summary) and `reasoning_tokens` in the
  usage (part of `output_tokens`);
- `max_output_tokens` smaller than the answer: `status: incomplete`, reason
  `max_output_tokens`, the text cut to fit.
Streams follow the documented event sequence (https://platform.openai.com/docs/api-reference/
responses-streaming): response.created, response.in_progress, then per item
output_item.added, (content_part.added, output_text.delta..., output_text.done,
content_part.done | function_call_arguments.delta..., function_call_arguments.done),
output_item.done, and response.completed (or response.incomplete) with the usage; every event
named (`event:`) and numbered (`sequence_number`). The error event is `{"type": "error",
"code", "message", "param", "sequence_number"}`. tests/e2e/test_fake_openai_responses.py
proves all of it with the official SDK.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from tests.fakes.base import StreamPlan, sse

_REASONING_TOKENS = {"minimal": 0, "low": 16, "medium": 64, "high": 256}


def is_responses(path: str) -> bool:
    return path.rstrip("/").endswith("/responses")


def last_user_text(body: Any) -> str:
    """The text of the last user input (a string input is the user's)."""
    items = body.get("input") if isinstance(body, dict) else None
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text(item.get("content"))
    return ""


def input_tokens(body: Any) -> int:
    """A deterministic estimate: ceil(chars / 4) + 4 per input item (+ the instructions)."""
    if not isinstance(body, dict):
        return 0
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    total = math.ceil(len(str(body.get("instructions") or "")) / 4)
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            text = _text(item.get("content")) or str(item.get("output") or "")
            total += math.ceil(len(text) / 4) + 4
    return total


class ResponsesAnswer:
    """What the fake answers to one Responses body: output items, status, usage."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.id = "resp_" + uuid.uuid4().hex
        self.created_at = int(time.time())
        effort = (body.get("reasoning") or {}).get("effort")
        self.reasoning_tokens = _REASONING_TOKENS.get(str(effort), 0) if effort else 0
        self.reasoning_item = (
            {"id": "rs_" + uuid.uuid4().hex, "type": "reasoning", "summary": []} if effort else None
        )
        self.call = _function_call(body)
        self.text = "" if self.call is not None else _answer_text(body)
        self.incomplete = False
        limit = body.get("max_output_tokens")
        if self.call is None and isinstance(limit, int):
            room = max(0, limit - self.reasoning_tokens)
            if _tokens(self.text) > room:
                self.text = self.text[: room * 4]
                self.incomplete = True
        self.msg_id = "msg_" + uuid.uuid4().hex

    @property
    def status(self) -> str:
        return "incomplete" if self.incomplete else "completed"

    def output_tokens(self) -> int:
        if self.call is not None:
            return _tokens(self.call["arguments"]) + self.reasoning_tokens
        return (_tokens(self.text) if self.text else 0) + self.reasoning_tokens

    def usage(self) -> dict[str, Any]:
        prompt, out = input_tokens(self.body), self.output_tokens()
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": prompt + out,
        }

    def message_item(self, status: str = "completed", text: str | None = None) -> dict[str, Any]:
        content = [] if text is None else [_output_text(text)]
        return {
            "id": self.msg_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def output(self) -> list[dict[str, Any]]:
        items = [self.reasoning_item] if self.reasoning_item is not None else []
        if self.call is not None:
            items.append(self.call)
        else:
            status = "incomplete" if self.incomplete else "completed"
            items.append(self.message_item(status, self.text))
        return items

    def response(self, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model") if isinstance(body.get("model"), str) else "",
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {
                "effort": (body.get("reasoning") or {}).get("effort"),
                "summary": (body.get("reasoning") or {}).get("summary"),
            },
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    def final(self) -> dict[str, Any]:
        return self.response(self.status, self.output(), self.usage())


def completion(body: Any) -> dict[str, Any]:
    """The non-streamed `response` object."""
    return ResponsesAnswer(body if isinstance(body, dict) else {}).final()


def stream(body: Any) -> StreamPlan:
    """The documented event sequence of a streamed response."""
    answer = ResponsesAnswer(body if isinstance(body, dict) else {})
    events: list[dict[str, Any]] = []
    start = answer.response("in_progress", [], None)
    events.append({"type": "response.created", "response": start})
    events.append({"type": "response.in_progress", "response": start})
    index = 0
    if answer.reasoning_item is not None:
        item = answer.reasoning_item
        events.append({"type": "response.output_item.added", "output_index": 0, "item": item})
        events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
        index = 1
    if answer.call is not None:
        call = answer.call
        fc_id, args = call["id"], call["arguments"]
        added = {**call, "arguments": "", "status": "in_progress"}
        first_content = len(events)
        events.append({"type": "response.output_item.added", "output_index": index, "item": added})
        for piece in [args[i : i + 4] for i in range(0, len(args), 4)]:
            events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": fc_id,
                    "output_index": index,
                    "delta": piece,
                }
            )
        events.append(
            {
                "type": "response.function_call_arguments.done",
                "item_id": fc_id,
                "output_index": index,
                "arguments": args,
            }
        )
        events.append({"type": "response.output_item.done", "output_index": index, "item": call})
    else:
        msg_id, text = answer.msg_id, answer.text
        where = {"item_id": msg_id, "output_index": index, "content_index": 0}
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": answer.message_item("in_progress"),
            }
        )
        events.append({"type": "response.content_part.added", **where, "part": _output_text("")})
        first_content = len(events)
        for piece in _pieces(text):
            events.append(
                {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            )
        events.append({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
        events.append({"type": "response.content_part.done", **where, "part": _output_text(text)})
        status = "incomplete" if answer.incomplete else "completed"
        events.append(
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": answer.message_item(status, text),
            }
        )
    events.append({"type": f"response.{answer.status}", "response": answer.final()})
    for i, event in enumerate(events):
        event["sequence_number"] = i
    error = {
        "type": "error",
        "code": "server_error",
        "message": "The server had an error while processing your request. Sorry about that!",
        "param": None,
        "sequence_number": first_content + 1,
    }
    return StreamPlan(
        events=[sse(e, e["type"]) for e in events],
        first_content=first_content,
        terminator=1,
        error_event=sse(error, "error"),
    )


def _function_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [
        t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"
    ]
    if not tools:
        return None
    items = body.get("input")
    if isinstance(items, list) and items:
        last = items[-1]
        if not isinstance(last, dict) or last.get("role") != "user":
            return None  # a tool's output (or the model's own turn) came last: answer in text
    from tests.fakes.openai_fake import example_arguments

    return {
        "type": "function_call",
        "id": "fc_" + uuid.uuid4().hex,
        "call_id": "call_" + uuid.uuid4().hex[:24],
        "name": tools[0].get("name", ""),
        "arguments": json.dumps(example_arguments(tools[0].get("parameters"))),
        "status": "completed",
    }


def _answer_text(body: dict[str, Any]) -> str:
    reply = f"Hello from fake-openai: {last_user_text(body)}"
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        from tests.fakes.openai_fake import example_arguments

        return json.dumps(example_arguments(fmt.get("schema")))
    if fmt.get("type") == "json_object":
        return json.dumps({"text": reply})
    return reply


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("input_text", "output_text", "text")
        )
    return ""


def _pieces(text: str) -> list[str]:
    """Word-sized stream pieces that concatenate back to `text` (none for "")."""
    if not text:
        return []
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))
