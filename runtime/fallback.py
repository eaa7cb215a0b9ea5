"""The fallback loop: try a request's candidates in order until one answers, recording every
attempt, and when none does raise one error that carries every attempt's error.

Non-streamed: an attempt is the whole upstream call. Streamed: an attempt lasts until the
upstream's first CONTENT chunk (or its failure, or the route's first-byte timeout); chunks
before it (role-only, keep-alives) are held back. Only a success at that point commits the
response — until then a failure is invisible to the client and the next candidate is tried
(the commit rule).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from runtime.adapters import AnyChunk, Call, Completion, UpstreamStream
from runtime.context import RequestContext
from runtime.deadline import Deadline
from runtime.errors import UpstreamError
from runtime.records import Attempt
from runtime.router import Candidate, RoutePlan

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One failed attempt of a chain: the candidate tried and the classified error it gave."""

    candidate: Candidate
    error: UpstreamError


class AllCandidatesFailed(Exception):
    """No candidate answered. `errors` holds every attempt's error, in the order tried;
    `error` and `candidate` are the ones the client is told about (the last attempt's)."""

    def __init__(self, errors: tuple[AttemptError, ...], final: AttemptError) -> None:
        super().__init__(
            "; ".join(f"{e.candidate.ref}: {e.error.message}" for e in errors)
            or final.error.message
        )
        self.errors = errors
        self.error = final.error
        self.candidate = final.candidate


@dataclass(slots=True)
class Opened:
    """A committed stream: the candidate, the upstream stream, the chunks held until commit."""

    candidate: Candidate
    stream: UpstreamStream
    held: list[AnyChunk]
    iterator: AsyncIterator[AnyChunk]  # the stream's iterator, positioned after `held`


async def complete(ctx: RequestContext) -> tuple[Candidate, Completion]:
    """Non-streamed: the first candidate's Completion that succeeds."""
    request, request_id = ctx.request, ctx.request_id

    async def attempt(c: Candidate) -> tuple[Candidate, Completion]:
        return c, await c.adapter.complete(Call(request, c.model, c.credentials or {}, request_id))

    return await _loop(ctx.plan, ctx.attempts, attempt)


async def open_stream(ctx: RequestContext) -> Opened:
    """Streamed: the first candidate that delivers a content chunk within the timeout."""
    request, request_id = ctx.request, ctx.request_id
    timeout = ctx.plan.policy.first_byte_timeout_s

    async def attempt(c: Candidate) -> Opened:
        stream: UpstreamStream | None = None
        deadline = Deadline(timeout)
        try:
            stream = await c.adapter.open_stream(
                Call(request, c.model, c.credentials or {}, request_id)
            )
            it = aiter(stream)
            held: list[AnyChunk] = []
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

    return await _loop(ctx.plan, ctx.attempts, attempt)


async def _empty() -> AsyncIterator[AnyChunk]:
    return
    yield  # pragma: no cover


async def _loop(
    plan: RoutePlan, attempts: list[Attempt], attempt: Callable[[Candidate], Awaitable[T]]
) -> T:
    policy = plan.policy
    floor: int | None = None  # after a context-length error: only larger windows
    errors: list[AttemptError] | None = None  # made on the first failure only
    for c in plan.candidates:
        if len(attempts) >= policy.max_attempts:
            break
        if floor is not None and c.model.context_window <= floor:
            plan.skipped.append(
                {
                    "provider": c.provider.id,
                    "model": c.model.name,
                    "reason": f"context window {c.model.context_window} is not larger than "
                    f"the one that overflowed ({floor})",
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
            if errors is None:
                errors = []
            errors.append(AttemptError(c, err))
            if err.error_class not in policy.on:
                break
            if err.error_class == "context_length":
                floor = max(floor or 0, c.model.context_window)
            continue
        attempts.append(
            Attempt(c.provider.id, c.model.name, "ok", (time.perf_counter() - start) * 1000)
        )
        return result
    if errors is None:
        # No candidate was tried (max_attempts below one); kept for completeness.
        final = AttemptError(
            plan.candidates[0],
            UpstreamError("context_length", "no candidate with a larger context window is left"),
        )
        raise AllCandidatesFailed((), final)
    raise AllCandidatesFailed(tuple(errors), errors[-1])
