"""The `mock` adapter: an offline provider for development and tests (no network, no credentials).

The answer is a function of the request alone, so the same request always gets the same
output, tool call ids included:
- text: "echo: <text of the last user message>" (an image part reads "[image]");
- tools given and the last message is the user's: a call of the first tool (or the one
  `tool_choice` names; none when it is "none") with arguments built from the `required`
  properties of its JSON schema (strings "example", numbers 0, booleans false, arrays [],
  objects recursively, an enum's first value); finish_reason "tool_calls";
- `response_format` json_object: `{"echo": "<text>"}`; json_schema: an object with the
  schema's required properties, built the same way;
- `max_tokens` / `max_completion_tokens`: the text is cut to 4 characters per token and
  finish_reason is "length".
Usage is always reported: input = sum over messages of ceil(chars / 4) + 4, output =
ceil(chars of the reply / 4). A stream is OpenAI's: a role-only chunk, one chunk per word, a
chunk with finish_reason, then a usage chunk with no choices.

Latency: SWITCHYARD_MOCK_LATENCY_MS (read when the adapter is built, default 0) delays every
answer — before the completion, or before the first chunk of a stream.

Directives: a last user message starting with "mock:" steers the answer, for trying the
gateway's fallback and timeouts without a real provider:
  mock:error 429 | 503 | 529 | 500 | <status>   fail with that HTTP status (rate_limited,
                                                server_error, overloaded, ...), before any byte
  mock:error context_length                     fail as a context-length 400
  mock:timeout                                  never answer (the gateway's timeout cuts it)
  mock:slow <ms>                                wait <ms> more, then answer normally
  mock:pace <ms> <words...>                     answer normally, but a stream sends one word
                                                every <ms> (a long stream: 20 words at 400 ms
                                                last 8 s); not streamed, it waits as long
  mock:drop                                     break mid-answer (a stream: after its first
                                                content chunk) with code stream_broken
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import orjson

from runtime.adapters import http, mock_embeddings
from runtime.adapters.base import (
    AdapterDefaults,
    Call,
    Chunk,
    Completion,
    Embeddings,
    FlushHook,
    Usage,
)
from runtime.adapters.transport_base import HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import ErrorClass, UpstreamError

LATENCY_ENV = "SWITCHYARD_MOCK_LATENCY_MS"
_FOREVER_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class _Directive:
    error: UpstreamError | None = None
    delay_s: float = 0.0
    drop: bool = False
    pace_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Answer:
    message: dict[str, Any]
    finish_reason: str
    usage: Usage
    pieces: list[dict[str, Any]]  # the stream deltas carrying the output, in order


class MockAdapter(AdapterDefaults):
    """The offline provider (the transport is not used)."""

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport | None = None) -> None:
        self.provider = provider
        self.latency_s = _latency_from_env()

    async def complete(self, call: Call) -> Completion:
        """Answer `call` from the request alone; see the module docstring."""
        directive = await self._directive(call)
        answer = _answer(call.request)
        model = call.model.upstream
        delay = self.latency_s + directive.delay_s
        await _sleep(delay + directive.pace_s * len(answer.pieces))
        if directive.drop:
            raise UpstreamError("server_error", "mock: connection dropped", code="stream_broken")
        return Completion(
            message=answer.message,
            finish_reason=answer.finish_reason,
            usage=answer.usage,
            model=model,
        )

    async def open_stream(self, call: Call) -> MockStream:
        """Stream the answer to `call`; see the module docstring."""
        directive = await self._directive(call)
        delay = self.latency_s + directive.delay_s
        answer = _answer(call.request)
        return MockStream(answer, call.model.upstream, delay, directive.drop, directive.pace_s)

    async def _directive(self, call: Call) -> _Directive:
        """The `mock:` directive of the request; a directed error is raised here."""
        directive = _directive(call.request)
        if directive.error is not None:
            await _sleep(self.latency_s + directive.delay_s)
            raise directive.error
        return directive

    async def embed(self, call: Call) -> Embeddings:
        """Deterministic unit vectors (runtime/adapters/mock_embeddings.py); a first input
        that is a `mock:` directive (`mock:error 503`, `mock:slow 200`) acts as in chat."""
        first = call.request["input"][0]
        delay = self.latency_s
        if isinstance(first, str) and first.startswith("mock:"):
            chat = {"messages": [{"role": "user", "content": first}]}
            directive = await self._directive(Call(chat, call.model, {}, call.request_id))
            delay += directive.delay_s
        await _sleep(delay)
        return mock_embeddings.embed(call)


class MockStream:
    """OpenAI-shaped chunks of a precomputed answer."""

    def __init__(
        self, answer: _Answer, model: str, delay_s: float, drop: bool, pace_s: float = 0.0
    ) -> None:
        self._answer = answer
        self._delay_s = delay_s
        self._drop = drop
        self._pace_s = pace_s
        self.usage: Usage | None = None
        self.model: str | None = model

    def watch_idle(self, hook: FlushHook) -> bool:
        """Offline: the stream never waits on a network, so the caller flushes per chunk."""
        return False

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        await _sleep(self._delay_s)
        yield Chunk(choices=[_choice({"role": "assistant", "content": ""})], content=False)
        for i, delta in enumerate(self._answer.pieces):
            if i and self._pace_s:
                await asyncio.sleep(self._pace_s)
            yield Chunk(choices=[_choice(delta)], content=True)
            if self._drop:
                raise UpstreamError("server_error", "mock: stream dropped", code="stream_broken")
            await asyncio.sleep(0)
        yield Chunk(choices=[_choice({}, self._answer.finish_reason)], content=False)
        self.usage = self._answer.usage
        yield Chunk(choices=[], content=False, usage=self._answer.usage)

    async def aclose(self) -> None:
        """Nothing to release."""
        return None


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}


def _latency_from_env() -> float:
    raw = os.environ.get(LATENCY_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        ms = float(raw)
    except ValueError:
        raise ValueError(f"{LATENCY_ENV}={raw!r}: expected a number of milliseconds") from None
    return max(0.0, ms) / 1000


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _directive(request: dict[str, Any]) -> _Directive:
    last = _last_message(request)
    if last is None or last.get("role") != "user":
        return _Directive()
    text = _text(last.get("content")).strip()
    if not text.startswith("mock:"):
        return _Directive()
    verb, _, arg = text[len("mock:") :].strip().partition(" ")
    arg = arg.strip()
    if verb == "timeout":
        return _Directive(delay_s=_FOREVER_S)
    if verb == "drop":
        return _Directive(drop=True)
    if verb == "slow" and _is_number(arg):
        return _Directive(delay_s=max(0.0, float(arg)) / 1000)
    pace = arg.split(" ", 1)[0]
    if verb == "pace" and _is_number(pace):
        return _Directive(pace_s=min(max(0.0, float(pace)), 60_000.0) / 1000)
    if verb == "error" and arg == "context_length":
        return _Directive(
            error=UpstreamError(
                "context_length",
                "mock: maximum context length exceeded",
                status=400,
                code="context_length_exceeded",
            )
        )
    if verb == "error" and arg.isdigit() and 400 <= int(arg) <= 599:
        status = int(arg)
        cls = cast(ErrorClass, http.status_class(status))
        return _Directive(
            error=UpstreamError(cls, f"mock: injected HTTP {status}", status=status, code=cls)
        )
    return _Directive(
        error=UpstreamError(
            "bad_request",
            f"mock: unknown directive {text[:80]!r} (see runtime/adapters/mock.py)",
            status=400,
        )
    )


def _answer(request: dict[str, Any]) -> _Answer:
    input_tokens = sum(math.ceil(len(_text(m.get("content"))) / 4) + 4 for m in _messages(request))
    tool = _tool_to_call(request)
    if tool is not None:
        name = str(tool.get("name", ""))
        args = orjson.dumps(example_value(_object_schema(tool.get("parameters")))).decode()
        call_id = (
            "call_"
            + hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
        )
        head = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return _Answer(
            message={
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": args},
                    }
                ],
            },
            finish_reason="tool_calls",
            usage=Usage(input_tokens, math.ceil(len(name + args) / 4)),
            pieces=[
                {"tool_calls": [head]},
                {"tool_calls": [{"index": 0, "function": {"arguments": args}}]},
            ],
        )
    text = _reply_text(request)
    finish = "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if (
        isinstance(limit, int)
        and not isinstance(limit, bool)
        and limit >= 0
        and len(text) > limit * 4
    ):
        text, finish = text[: limit * 4], "length"
    return _Answer(
        message={"role": "assistant", "content": text},
        finish_reason=finish,
        usage=Usage(input_tokens, math.ceil(len(text) / 4)),
        pieces=[{"content": w} for w in _words(text)],
    )


def _reply_text(request: dict[str, Any]) -> str:
    echo = "echo: " + _last_user_text(request)
    fmt = request.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return orjson.dumps({"echo": echo}).decode()
    if kind == "json_schema" and isinstance(fmt, dict):
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(example_value(_object_schema(schema))).decode()
    return echo


def example_value(schema: Any) -> Any:
    """A value of a JSON schema with only its required parts filled in, deterministically."""
    if not isinstance(schema, dict):
        return "example"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return example_value(options[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        return {str(name): example_value(props.get(name)) for name in schema.get("required") or []}
    if kind == "array":
        return [example_value(schema.get("items"))] * int(schema.get("minItems") or 0)
    return {"integer": 0, "number": 0, "boolean": False, "null": None}.get(str(kind), "example")


def _object_schema(schema: Any) -> dict[str, Any]:
    return schema if isinstance(schema, dict) else {"type": "object"}


def _tool_to_call(request: dict[str, Any]) -> dict[str, Any] | None:
    tools = request.get("tools")
    last = _last_message(request)
    if not isinstance(tools, list) or not tools or last is None or last.get("role") != "user":
        return None
    functions: list[dict[str, Any]] = [
        t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = request.get("tool_choice")
    if choice == "none" or not functions:
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        return next((f for f in functions if f.get("name") == wanted), functions[0])
    return functions[0]


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    messages = request.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _last_message(request: dict[str, Any]) -> dict[str, Any] | None:
    messages = _messages(request)
    return messages[-1] if messages else None


def _last_user_text(request: dict[str, Any]) -> str:
    for m in reversed(_messages(request)):
        if m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for p in content:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "text":
            parts.append(str(p.get("text", "")))
        elif p.get("type") in ("image_url", "image", "input_image"):
            parts.append("[image]")
    return " ".join(parts)


def _words(text: str) -> list[str]:
    """Pieces that concatenate back to `text`: each word with the space before it."""
    words = text.split(" ")
    return [w for w in [words[0]] + [" " + w for w in words[1:]] if w]


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
