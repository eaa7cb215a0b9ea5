"""The `mock` adapter: an offline provider for development and tests (no network, no credentials).

The answer is a function of the request alone, so the same request always gets the same
output, tool call ids included; what it answers (echoed text, tool calls, JSON matching a
schema, `n` choices, `max_tokens`, usage) is in runtime/adapters/mock_answers.py. A stream is
OpenAI's: per choice a role-only chunk, one chunk per word (the choices interleaved), a chunk
with finish_reason; then a usage chunk with no choices.

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
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

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
from runtime.adapters.mock_answers import Answer, answer_to, last_message, text
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


class MockAdapter(AdapterDefaults):
    """The offline provider (the transport is not used)."""

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport | None = None) -> None:
        self.provider = provider
        self.latency_s = _latency_from_env()

    async def complete(self, call: Call) -> Completion:
        """Answer `call` from the request alone; see the module docstring."""
        directive = await self._directive(call)
        answer = answer_to(call.request)
        model = call.model.upstream
        delay = self.latency_s + directive.delay_s
        longest = max(len(c.pieces) for c in answer.choices)
        await _sleep(delay + directive.pace_s * longest)
        if directive.drop:
            raise UpstreamError("server_error", "connection dropped", code="stream_broken")
        first = answer.choices[0]
        extra: dict[str, Any] = {}
        if len(answer.choices) > 1:
            extra["choices"] = [
                {
                    "index": i,
                    "message": c.message,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(answer.choices)
            ]
        return Completion(
            message=first.message,
            finish_reason=first.finish_reason,
            usage=answer.usage,
            model=model,
            extra=extra,
        )

    async def open_stream(self, call: Call) -> MockStream:
        """Stream the answer to `call`; see the module docstring."""
        directive = await self._directive(call)
        delay = self.latency_s + directive.delay_s
        answer = answer_to(call.request)
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
        self, answer: Answer, model: str, delay_s: float, drop: bool, pace_s: float = 0.0
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
        choices = self._answer.choices
        for i in range(len(choices)):
            yield Chunk(choices=[_choice(i, {"role": "assistant", "content": ""})], content=False)
        for k in range(max(len(c.pieces) for c in choices)):
            if k and self._pace_s:
                await asyncio.sleep(self._pace_s)
            for i, c in enumerate(choices):
                if k < len(c.pieces):
                    yield Chunk(choices=[_choice(i, c.pieces[k])], content=True)
                    if self._drop:
                        raise UpstreamError("server_error", "stream dropped", code="stream_broken")
            await asyncio.sleep(0)
        for i, c in enumerate(choices):
            yield Chunk(choices=[_choice(i, {}, c.finish_reason)], content=False)
        self.usage = self._answer.usage
        yield Chunk(choices=[], content=False, usage=self._answer.usage)

    async def aclose(self) -> None:
        """Nothing to release."""
        return None


def _choice(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish_reason}


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
    last = last_message(request)
    if last is None or last.get("role") != "user":
        return _Directive()
    said = text(last.get("content")).strip()
    if not said.startswith("mock:"):
        return _Directive()
    verb, _, arg = said[len("mock:") :].strip().partition(" ")
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
                "maximum context length exceeded",
                status=400,
                code="context_length_exceeded",
            )
        )
    if verb == "error" and arg.isdigit() and 400 <= int(arg) <= 599:
        status = int(arg)
        cls = cast(ErrorClass, http.status_class(status))
        return _Directive(
            error=UpstreamError(cls, f"injected HTTP {status}", status=status, code=cls)
        )
    return _Directive(
        error=UpstreamError(
            "bad_request",
            f"unknown directive {said[:80]!r} (see runtime/adapters/mock.py)",
            status=400,
        )
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
