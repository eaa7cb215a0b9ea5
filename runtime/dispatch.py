"""The fallback loop: try candidates in order until one answers, recording every attempt.

Non-streamed: an attempt is the whole upstream call. Streamed: an attempt lasts until the
upstream's first CONTENT chunk (or its failure, or the route's first-byte timeout); chunks
before it (role-only, keep-alives) are held back. Only a success at that point commits the
response — until then a failure is invisible to the client and the next candidate is tried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from runtime.adapters import Call, Chunk, Completion, UpstreamStream
from runtime.deadline import Deadline
from runtime.errors import UpstreamError
from runtime.router import Candidate, Plan

T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    outcome: str  # "ok" or an error class
    latency_ms: float
    status: int | None = None
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.status is not None:
            d["status"] = self.status
        if self.code is not None and self.code != self.outcome:
            d["code"] = self.code
        return d


class AllFailed(Exception):
    """No candidate answered; carries the last error and the candidate that raised it."""

    def __init__(self, error: UpstreamError, candidate: Candidate) -> None:
        super().__init__(error.message)
        self.error = error
        self.candidate = candidate


@dataclass(slots=True)
class Opened:
    """A committed stream: the candidate, the upstream stream, the chunks held until commit."""

    candidate: Candidate
    stream: UpstreamStream
    held: list[Chunk]
    iterator: Any  # the stream's async iterator, positioned after `held`


async def complete(
    plan: Plan, request: dict[str, Any], request_id: str, attempts: list[Attempt]
) -> tuple[Candidate, Completion]:
    """Non-streamed: the first candidate's Completion that succeeds."""

    async def attempt(c: Candidate) -> tuple[Candidate, Completion]:
        result = await c.adapter.send(
            Call(request, False, c.model, c.credentials or {}, request_id)
        )
        assert isinstance(result, Completion)
        return c, result

    return await _loop(plan, attempts, attempt)


async def open_stream(
    plan: Plan, request: dict[str, Any], request_id: str, attempts: list[Attempt]
) -> Opened:
    """Streamed: the first candidate that delivers a content chunk within the timeout."""
    timeout = plan.policy.first_byte_timeout_s

    async def attempt(c: Candidate) -> Opened:
        stream: UpstreamStream | None = None
        deadline = Deadline(timeout)
        try:
            result = await c.adapter.send(
                Call(request, True, c.model, c.credentials or {}, request_id)
            )
            assert not isinstance(result, Completion)
            stream = result
            it = aiter(stream)
            held: list[Chunk] = []
            while True:
                try:
                    chunk = await anext(it)
                except StopAsyncIteration:
                    # Ended properly before any content (an empty answer): commit as is.
                    return Opened(c, stream, held, _empty())
                held.append(chunk)
                if chunk.content:
                    return Opened(c, stream, held, it)
        except asyncio.CancelledError:
            if stream is not None:
                await stream.aclose()
            if not deadline.expired:
                raise  # the client went away, or shutdown
            deadline.absorb()
            raise UpstreamError(
                "timeout",
                f"no content within the route's first_byte_timeout_s of {timeout:g} s",
                code="first_byte_timeout",
            ) from None
        except UpstreamError:
            if stream is not None:
                await stream.aclose()
            raise
        finally:
            deadline.cancel()

    return await _loop(plan, attempts, attempt)


async def _empty() -> Any:
    return
    yield  # pragma: no cover


async def _loop(
    plan: Plan, attempts: list[Attempt], attempt: Callable[[Candidate], Awaitable[T]]
) -> T:
    policy = plan.policy
    floor: int | None = None  # after a context-length error: only larger windows
    last: tuple[UpstreamError, Candidate] | None = None
    for c in plan.candidates:
        if len(attempts) >= policy.max_attempts:
            break
        if floor is not None and c.model.context_window <= floor:
            plan.skipped.append(
                {
                    "provider": c.provider.id,
                    "model": c.model.name,
                    "reason": f"context window {c.model.context_window} is not larger than the one that overflowed ({floor})",
                }
            )
            continue
        start = time.perf_counter()
        try:
            result = await attempt(c)
        except UpstreamError as err:
            attempts.append(
                Attempt(
                    c.provider.id,
                    c.model.name,
                    err.error_class,
                    (time.perf_counter() - start) * 1000,
                    err.status,
                    err.code,
                )
            )
            last = (err, c)
            if err.error_class not in policy.on:
                break
            if err.error_class == "context_length":
                floor = max(floor or 0, c.model.context_window)
            continue
        attempts.append(
            Attempt(c.provider.id, c.model.name, "ok", (time.perf_counter() - start) * 1000)
        )
        return result
    if last is None:
        # Every candidate was skipped by the context-length floor.
        c = plan.candidates[0]
        raise AllFailed(
            UpstreamError("context_length", "no candidate with a larger context window is left"), c
        )
    raise AllFailed(*last)
