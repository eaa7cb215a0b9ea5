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
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from runtime import tokens
from runtime.adapters import (
    AnyChunk,
    Call,
    Completion,
    Embeddings,
    NativeEvent,
    UpstreamStream,
    Usage,
)
from runtime.context import RequestContext
from runtime.deadline import Deadline
from runtime.errors import Unservable, UpstreamError
from runtime.records import Attempt
from runtime.router import Candidate

T = TypeVar("T")
CANCELLED = "cancelled"  # the outcome of an attempt cut by a cancellation of the request
log = logging.getLogger("switchyard.fallback")


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


class _Started:
    """What an attempt saw of the provider's generating, for an abandoned attempt's cost:
    set once a stream opened with a success status (the provider is generating and bills it)."""

    __slots__ = ("output_chars", "started", "usage")

    def __init__(self) -> None:
        self.started = False
        self.output_chars = 0
        self.usage: Usage | None = None


def _abandoned_cost(
    ctx: RequestContext, c: Candidate, err: UpstreamError, seen: _Started
) -> float | None:
    """The estimated cost of a failed attempt the provider bills: a stream that opened with a
    2xx and failed or timed out before the commit, or a non-streamed call cut by its timeout
    after the request was sent (no error status). Input: the usage the provider reported so
    far, else the plan's prompt estimate; output: what was seen (4 characters a token)."""
    price = c.model.price
    if price is None:
        return None
    if not seen.started and (ctx.stream or err.error_class != "timeout" or err.status is not None):
        return None
    output = (seen.output_chars + 3) // 4
    usage = seen.usage
    if usage is None:
        return price.cost(ctx.plan.prompt_tokens, output)
    return price.cost(
        usage.input_tokens,
        max(usage.output_tokens, output),
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
    )


async def complete(ctx: RequestContext) -> tuple[Candidate, Completion]:
    """Non-streamed: the first candidate's Completion that succeeds."""

    async def attempt(c: Candidate, call: Call, seen: _Started) -> tuple[Candidate, Completion]:
        if call.native is not None:
            return c, await c.adapter.complete_native(call)
        return c, await c.adapter.complete(call)

    return await _loop(ctx, attempt)


async def embed(ctx: RequestContext) -> tuple[Candidate, Embeddings]:
    """Embeddings: the first candidate's vectors that arrive (`ctx.request` is the checked
    embeddings body, runtime/embeddings_request.py)."""

    count = len(ctx.request["input"])
    asked = ctx.request.get("dimensions")

    async def attempt(c: Candidate, call: Call, seen: _Started) -> tuple[Candidate, Embeddings]:
        result = await c.adapter.embed(call)
        size = asked if asked is not None else c.model.dimensions
        if len(result.vectors) != count or (
            size is not None and any(len(v) != size for v in result.vectors)
        ):
            # A vector of another size corrupts the client's index: never passed on.
            got = sorted({len(v) for v in result.vectors})
            raise UpstreamError(
                "server_error",
                f"answered {len(result.vectors)} vectors of {got} dimensions"
                f" for {count} inputs of {size or 'any'}",
                code="upstream_malformed",
            )
        return c, result

    return await _loop(ctx, attempt)


async def open_stream(ctx: RequestContext) -> Opened:
    """Streamed: the first candidate that delivers a content chunk within the timeout."""
    timeout = ctx.plan.policy.first_byte_timeout_s

    async def attempt(c: Candidate, call: Call, seen: _Started) -> Opened:
        stream: UpstreamStream | None = None
        deadline = Deadline(timeout)
        held: list[AnyChunk] = []
        try:
            if call.native is not None:
                stream = await c.adapter.open_native_stream(call)
            else:
                stream = await c.adapter.open_stream(call)
            seen.started = True
            it = aiter(stream)
            while True:
                try:
                    chunk = await anext(it)
                except StopAsyncIteration:
                    # Ended properly before any content (an empty answer): commit as is.
                    return Opened(c, stream, held, _empty())
                held.append(chunk)
                if chunk.content:
                    return Opened(c, stream, held, it)
                if chunk.reasoning:
                    # The model is thinking: the timeout is about silence, so it starts over.
                    deadline.cancel()
                    deadline = Deadline(timeout)
        except asyncio.CancelledError:
            if stream is not None:
                await stream.aclose()
            _seen_output(seen, stream, held)
            if not deadline.expired:
                raise  # the client went away, the request timed out, or shutdown
            deadline.absorb()
            raise UpstreamError(
                "timeout",
                f"no content within the route's first_byte_timeout_s of {timeout:g} s",
                code="first_byte_timeout",
            ) from None
        except Exception:  # UpstreamError, or an adapter that failed to read a chunk
            if stream is not None:
                await stream.aclose()
                _seen_output(seen, stream, held)
            raise
        finally:
            deadline.cancel()

    return await _loop(ctx, attempt)


def _seen_output(seen: _Started, stream: UpstreamStream | None, held: list[AnyChunk]) -> None:
    """Record what an abandoned stream delivered (only on failure: the hot path pays nothing)."""
    chars = 0
    for chunk in held:
        if isinstance(chunk, NativeEvent):
            chars += chunk.chars
        elif chunk.choices:
            chars += tokens.delta_chars(chunk.choices)
            for choice in chunk.choices:  # thinking is billed as output too
                thought = (choice.get("delta") or {}).get("reasoning_content")
                if isinstance(thought, str):
                    chars += len(thought)
    seen.output_chars = chars
    if stream is not None:
        seen.usage = stream.usage


async def _empty() -> AsyncIterator[AnyChunk]:
    return
    yield  # pragma: no cover


async def _loop(
    ctx: RequestContext, attempt: Callable[[Candidate, Call, _Started], Awaitable[T]]
) -> T:
    plan, attempts, request, request_id = ctx.plan, ctx.attempts, ctx.request, ctx.request_id
    native = ctx.native
    policy = plan.policy
    unservable: list[AttemptError] = []  # candidates that cannot take this request at all
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
        call = Call(request, c.model, c.credentials or {}, request_id)
        if native is not None and native.api in c.adapter.native_apis:
            call.native = native  # a passthrough in the provider's own API
        seen = _Started()
        try:
            try:
                result = await attempt(c, call, seen)
            except (UpstreamError, asyncio.CancelledError):
                raise
            except Exception as exc:
                # An adapter must raise only UpstreamError; a payload it failed to read is the
                # provider's malformed answer, so it falls back like one (and is logged).
                log.exception("%s: adapter error (treated as a malformed answer)", c.ref)
                raise UpstreamError(
                    "server_error",
                    f"the answer could not be read ({type(exc).__name__})",
                    code="upstream_malformed",
                ) from None
        except Unservable as err:
            plan.skipped.append(
                {"provider": c.provider.id, "model": c.model.name, "reason": err.message}
            )
            unservable.append(AttemptError(c, err))
            continue
        except asyncio.CancelledError:
            # The client went away, the request timed out, or shutdown: the attempt stays in
            # the trail as CANCELLED (runtime/chat.py names the cause), with the estimated
            # cost the provider bills for what it started, then the cancellation goes on.
            cut = UpstreamError("timeout", "cancelled")
            attempts.append(
                Attempt(
                    c.provider.id,
                    c.model.name,
                    CANCELLED,
                    (time.perf_counter() - start) * 1000,
                    notes=tuple(call.notes),
                    cost_usd=_abandoned_cost(ctx, c, cut, seen),
                )
            )
            raise
        except UpstreamError as err:
            attempts.append(
                Attempt(
                    c.provider.id,
                    c.model.name,
                    err.error_class,
                    (time.perf_counter() - start) * 1000,
                    err.status,
                    err.code,
                    tuple(call.notes),
                    _abandoned_cost(ctx, c, err, seen),
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
            Attempt(
                c.provider.id,
                c.model.name,
                "ok",
                (time.perf_counter() - start) * 1000,
                notes=tuple(call.notes),
            )
        )
        return result
    if errors is None and unservable:
        # Every candidate left was skipped: the request asks what none of them can do.
        reasons = "; ".join(f"{e.candidate.ref}: {e.error.message}" for e in unservable)
        final = AttemptError(
            unservable[-1].candidate,
            UpstreamError("bad_request", reasons, code="unsupported_by_candidate"),
        )
        raise AllCandidatesFailed(tuple(unservable), final)
    if errors is None:
        # No candidate was tried (max_attempts below one); kept for completeness.
        final = AttemptError(
            plan.candidates[0],
            UpstreamError("context_length", "no candidate with a larger context window is left"),
        )
        raise AllCandidatesFailed((), final)
    raise AllCandidatesFailed(tuple(errors), errors[-1])
