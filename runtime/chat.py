"""`POST /v1/chat/completions`, as a lean ASGI handler (the hot path).

Order of work per request: authenticate (in memory), read and decode the body, plan the
candidates, reserve limits (the worst-case cost against budgets, settled to the real cost
when the request ends, whatever happens), then either the non-streamed call or the streamed
one with the commit rule (runtime/fallback.py). Exactly one record per request is handed to
the record sink, whatever happens — including auth failures and clients that go away.
Everything it uses comes in one `Services` (runtime/services.py), built when the app started.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from runtime import request_check, scrub, tokens
from runtime.adapters import AnyChunk, Completion, NativeRequest, RelayChunk, Usage
from runtime.config import OrgConfig
from runtime.context import RequestContext, ResponseProgress
from runtime.errors import GatewayError, UpstreamError, from_upstream
from runtime.fallback import CANCELLED, AllCandidatesFailed, Opened, complete, open_stream
from runtime.frontends.base import Frontend, Parsed
from runtime.limits import Reservation
from runtime.metrics import RouteLabels, status_label
from runtime.records import CHAT_ENDPOINT, Attempt, RequestRecord
from runtime.router import Candidate, RoutePlan
from runtime.services import Services, authenticate
from runtime.shutdown import SHUTTING_DOWN, Drain
from runtime.vocabulary import DEFAULT_BASE_URLS

MAX_BODY = 32 * 1024 * 1024
RELAY_OVERHEAD = 160  # bytes of a relayed chunk that are not output (ids, keys), for estimates
_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream")
# Refusals after authentication that count against the key's requests-per-minute (429 is
# the limiter's own answer; 401 has no key).
_COUNTED_REFUSALS = frozenset(range(400, 500)) - {401, 429}


log = logging.getLogger("switchyard.chat")  # scrubbed of credentials (runtime/scrub.py)

_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def _next_id() -> str:
    """A request id unique across processes and restarts: a random per-process prefix and a
    counter (it only has to be unique, not unguessable: it grants nothing)."""
    return f"req_{_ID_PREFIX}{next(_ID_COUNTER):012x}"


next_request_id = _next_id  # for the other recorded endpoints (runtime/app.py)


def request_id_prefix() -> str:
    """What every request id of this process starts with (and no other process's does)."""
    return f"req_{_ID_PREFIX}"


class _ClientGone(Exception):
    pass


def _openai_error(exc: GatewayError) -> bytes:
    return orjson.dumps(exc.body())


class ChatHandler:
    """The ASGI handler of `POST /v1/chat/completions`, over the services built at start; with
    a `frontend` (runtime/frontends/), the handler of that API over the same pipeline."""

    def __init__(
        self, services: Services, drain: Drain | None = None, frontend: Frontend | None = None
    ) -> None:
        self.services = services
        self.frontend = frontend
        self.endpoint = frontend.endpoint if frontend is not None else CHAT_ENDPOINT
        self.error_body = frontend.error_body if frontend is not None else _openai_error
        cfg = services.config
        # The process's shutdown (runtime/shutdown.py); a Drain nobody begins, without one.
        self.drain = drain if drain is not None else Drain(cfg.request_timeout_s)
        self.env = cfg.environment
        self.price_hash = cfg.price_table_hash
        self.config_hash = cfg.config_hash
        self.request_timeout = cfg.request_timeout_s
        self.labels = RouteLabels(cfg)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        rid = _next_id()
        rec = RequestRecord.begin(rid, self.env, self.price_hash, self.config_hash, self.endpoint)
        attempts: list[Attempt] = []
        state = ResponseProgress()
        held: list[Reservation] = []  # what the limiter reserved, settled in `finally`
        in_flight = self.drain.tasks
        task = asyncio.current_task()
        assert task is not None  # an ASGI server runs each request in its own task
        in_flight[task] = True  # reading its body
        try:
            await self._handle(scope, receive, send, rec, attempts, state, held, task)
        except GatewayError as exc:
            if not held and rec.key_id is not None and exc.status in _COUNTED_REFUSALS:
                # Refused after authentication, before the limits were taken (a malformed
                # body, an unknown model...): it still counts against requests-per-minute.
                exc = await self.services.limits.count_rejected(rec.key_id) or exc
            rec.status, rec.error_code = exc.status, exc.code
            if not state.started:
                await _send_error(send, exc, rid, attempts, self.error_body)
                state.first_byte = time.perf_counter()
        except _ClientGone:
            rec.status, rec.error_code = 499, "client_closed_request"
        except asyncio.CancelledError:
            if not self.drain.draining:
                raise
            task.uncancel()  # the shutdown's (runtime/shutdown.py): answer, record, return
            await _shut_down(send, rec, attempts, state, self.error_body)
        except Exception as exc:  # a bug: answer 500 in OpenAI's shape, keep serving
            log.exception("internal error in %s", rid)
            rec.status, rec.error_code = 500, "internal_error"
            if not state.started:
                await _send_error(
                    send,
                    GatewayError(
                        500,
                        "internal_error",
                        f"internal gateway error ({type(exc).__name__}); request id {rid}",
                    ),
                    rid,
                    attempts,
                    self.error_body,
                )
        finally:
            del in_flight[task]
            end = time.perf_counter()
            rec.latency_ms = (end - start) * 1000
            if state.first_byte is not None:
                rec.ttfb_ms = (state.first_byte - start) * 1000
            _add_abandoned(rec, attempts)
            if rec.status != 200 or rec.broke_after_commit:
                _scrub_codes(attempts)
            rec.attempts = [a.as_dict() for a in attempts]
            rec.fell_back = len(attempts) > 1
            self._observe(rec, attempts)
            self.services.records.submit(rec)
            if held:
                tokens = (rec.input_tokens or 0) + (rec.output_tokens or 0)
                self.services.limits.settle(held[0], rec.cost_usd, tokens)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rec: RequestRecord,
        attempts: list[Attempt],
        state: ResponseProgress,
        held: list[Reservation],
        task: asyncio.Task[Any],
    ) -> None:
        services = self.services
        if scope["method"] != "POST":
            raise GatewayError(405, "method_not_allowed", f"use POST for {self.endpoint}")
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"authorization", b"x-api-key")
        }
        key = authenticate(services.keys, headers, rec)
        rec.key_id, rec.org = key.id, key.org
        org = services.config.orgs.get(key.org)
        if org is None:
            raise GatewayError(
                403,
                "org_not_configured",
                f"this key's org '{key.org}' is not configured in environment '{self.env}'",
            )
        if self.drain.draining:
            raise _shutting_down()
        body = await _read_body(receive)
        self.drain.tasks[task] = False  # past its body: it may finish while draining
        request, plan, parsed = self._prepare(body, rec, org)
        native = parsed.native if parsed is not None else None
        if native is not None and self.frontend is not None and self.frontend.forward_headers:
            wanted = self.frontend.forward_headers
            forwarded = tuple(
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in scope["headers"]
                if k in wanted
            )
            if forwarded:
                native = NativeRequest(native.api, native.body, forwarded)
        stream = rec.stream
        rec.route = plan.route
        rec.skipped = plan.skipped
        held.append(
            await services.limits.reserve(
                rec.request_id,
                key.id,
                key.org,
                plan.prompt_tokens + (plan.max_tokens or 0),
                plan.worst_cost_usd,
            )
        )
        ctx = RequestContext(
            rec.request_id, key, org, request, stream, plan, rec, state, attempts, native
        )
        guard = _Guard(receive, self.request_timeout, task)
        try:
            try:
                await self._serve(ctx, parsed, send)
            except asyncio.CancelledError:
                if not (guard.gone or guard.timed_out):
                    raise  # a shutdown, not us (answered in __call__)
                task.uncancel()
                if guard.gone:
                    _name_cancelled(attempts, "client_closed_request")
                    raise _ClientGone from None
                _name_cancelled(attempts, "request_timeout")
                raise TimeoutError from None
            finally:
                guard.stop()
        except TimeoutError:
            if state.started:
                rec.broke_after_commit = True
                rec.error_code = "request_timeout"
                await _end_stream_with_error(
                    send,
                    "request_timeout",
                    f"the request took longer than {self.request_timeout:g} s",
                    state.pending,
                    state.fail,
                )
            else:
                raise GatewayError(
                    504,
                    "request_timeout",
                    "no answer within the gateway's request_timeout_s of "
                    f"{self.request_timeout:g} s",
                ) from None

    def _prepare(
        self, body: bytes, rec: RequestRecord, org: OrgConfig
    ) -> tuple[dict[str, Any], RoutePlan, Parsed | None]:
        """The checked request (a 400 naming the field otherwise), its plan, and for another
        API its frontend's parse (checked in its own terms, translated to chat completions)."""
        router = self.services.router
        if self.frontend is None:
            request = request_check.parse(body, rec)
            return request, router.plan(request, org), None
        parsed = self.frontend.parse(body, rec)
        request = parsed.request
        return request, router.plan(request, org, parsed.native.api, parsed.builtin_tools), parsed

    async def _serve(self, ctx: RequestContext, parsed: Parsed | None, send: Send) -> None:
        """Answer a planned request: streamed or not, in chat completions or another API."""
        if parsed is not None:
            if ctx.stream:
                await self._stream_api(ctx, parsed, send)
            else:
                await self._complete(ctx, send, parsed)
        elif ctx.stream:
            await self._stream(ctx, send)
        else:
            await self._complete(ctx, send)

    async def _complete(
        self, ctx: RequestContext, send: Send, parsed: Parsed | None = None
    ) -> None:
        rec, plan, attempts, state = ctx.record, ctx.plan, ctx.attempts, ctx.progress
        try:
            cand, result = await complete(ctx)
        except AllCandidatesFailed as failed:
            raise _failed(ctx, failed, self.services) from None
        rec.provider, rec.upstream_model = cand.provider.id, result.model or cand.model.upstream
        try:
            _account(rec, cand, plan, result.usage, tokens.message_tokens(result.message))
            if parsed is None:
                body = _completion_body(rec, result)
            else:
                assert self.frontend is not None
                body = self.frontend.completion(rec, parsed, result)
        except Exception as exc:
            # The answer passed the adapter but cannot be read (a field of the wrong type):
            # the provider's malformed answer, not a gateway bug; nothing was sent yet.
            raise _unreadable(rec, cand, attempts, exc) from None
        headers = _headers(rec, cand, attempts, _JSON)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        state.started = True
        state.first_byte = time.perf_counter()
        await send({"type": "http.response.body", "body": body})
        rec.status = 200

    async def _stream(self, ctx: RequestContext, send: Send) -> None:
        rec, plan, attempts, state = ctx.record, ctx.plan, ctx.attempts, ctx.progress
        request = ctx.request
        try:
            opened = await open_stream(ctx)
        except AllCandidatesFailed as failed:
            raise _failed(ctx, failed, self.services) from None
        cand = opened.candidate
        stream = opened.stream
        rec.provider = cand.provider.id
        rec.upstream_model = stream.model or cand.model.upstream
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        prefix = (
            b'data: {"id":"chatcmpl-'
            + rec.request_id[4:].encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(rec.ts)).encode()
            + b',"model":'
            + orjson.dumps(rec.upstream_model)
            + b',"choices":'
        )
        chars = 0
        # Chunks are buffered and written when the upstream has nothing more ready (the
        # transport calls `flush` right before it would wait for the network): chunks that
        # arrived together leave together, in one write, and nothing waits on the network.
        pending = state.pending
        flush = _flusher(send, state)

        usage_relayed = False

        def emit(chunk: AnyChunk) -> int:
            """Buffer one chunk for the client; returns its output characters (estimates)."""
            nonlocal usage_relayed
            if isinstance(chunk, RelayChunk):  # an OpenAI-format provider: relay it as sent
                if chunk.choices is None:  # not decoded: plain output
                    pending.append(b"data: " + chunk.data.encode() + b"\n\n")
                    return max(0, len(chunk.data) - RELAY_OVERHEAD)
                if chunk.choices:
                    pending.append(b"data: " + chunk.data.encode() + b"\n\n")
                    return tokens.delta_chars(chunk.choices)
                if chunk.usage is not None and include_usage:
                    pending.append(b"data: " + chunk.data.encode() + b"\n\n")
                    usage_relayed = True
                return 0
            if not chunk.choices:
                return 0
            pending.append(prefix + orjson.dumps(chunk.choices) + b"}\n\n")
            return tokens.delta_chars(chunk.choices)

        network = stream.watch_idle(flush)
        try:
            try:
                for chunk in opened.held:  # checked before the commit: nothing sent yet
                    chars += emit(chunk)
            except Exception as exc:
                raise _unreadable(rec, cand, attempts, exc) from None
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": _headers(rec, cand, attempts, _SSE, stream=True),
                }
            )
            state.started = True
            if not network:
                await flush()
            # Otherwise the held chunks leave with whatever else this read brought, at the
            # first flush — microseconds later, one write instead of several.
            rec.status = 200

            def take(chunk: AnyChunk) -> None:
                nonlocal chars
                chars += emit(chunk)

            broken = await self._relay(ctx, opened, take, flush, network)
            if broken is not None:
                _account(rec, cand, plan, stream.usage, (chars + 3) // 4, force_estimate=True)
                await self._broken(ctx, opened, send, None, broken)
                return
            _account(rec, cand, plan, stream.usage, (chars + 3) // 4)
            if include_usage and not usage_relayed:
                usage = _usage_body(rec)
                pending.append(prefix + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n")
            pending.append(b"data: [DONE]\n\n")
            body = b"".join(pending)
            pending.clear()
            await send({"type": "http.response.body", "body": body, "more_body": False})
            if state.first_byte is None:
                state.first_byte = time.perf_counter()
        finally:
            if not rec.broke_after_commit and rec.output_tokens is None:
                _account(rec, cand, plan, stream.usage, (chars + 3) // 4, force_estimate=True)
            await stream.aclose()

    async def _stream_api(self, ctx: RequestContext, parsed: Parsed, send: Send) -> None:
        """A stream of another API (runtime/frontends/): the same commit rule, accounting and
        endings as `_stream`, each chunk written by the frontend's encoder in the API's own
        event format (relayed as sent when the candidate speaks that API natively)."""
        rec, plan, attempts, state = ctx.record, ctx.plan, ctx.attempts, ctx.progress
        frontend = self.frontend
        assert frontend is not None
        try:
            opened = await open_stream(ctx)
        except AllCandidatesFailed as failed:
            raise _failed(ctx, failed, self.services) from None
        cand, stream = opened.candidate, opened.stream
        rec.provider = cand.provider.id
        rec.upstream_model = stream.model or cand.model.upstream
        native = ctx.native is not None and ctx.native.api in cand.adapter.native_apis
        pending = state.pending
        flush = _flusher(send, state)

        enc = frontend.encoder(rec, parsed, native)
        network = stream.watch_idle(flush)
        try:
            try:
                pending.append(enc.open())
                for chunk in opened.held:  # checked before the commit: nothing sent yet
                    pending.append(enc.chunk(chunk))
            except Exception as exc:
                raise _unreadable(rec, cand, attempts, exc) from None
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": _headers(rec, cand, attempts, _SSE, stream=True),
                }
            )
            state.started = True
            state.fail = enc.fail
            if not network:
                await flush()
            rec.status = 200
            encode = enc.chunk

            def take(chunk: AnyChunk) -> None:
                pending.append(encode(chunk))

            broken = await self._relay(ctx, opened, take, flush, network)
            if broken is None:
                _account(rec, cand, plan, stream.usage, (enc.chars + 3) // 4)
                pending.append(enc.close(rec))
                body = b"".join(pending)
                pending.clear()
                await send({"type": "http.response.body", "body": body, "more_body": False})
                if state.first_byte is None:
                    state.first_byte = time.perf_counter()
            else:
                _account(rec, cand, plan, stream.usage, (enc.chars + 3) // 4, force_estimate=True)
                await self._broken(ctx, opened, send, enc.fail, broken)
        finally:
            if not rec.broke_after_commit and rec.output_tokens is None:
                _account(rec, cand, plan, stream.usage, (enc.chars + 3) // 4, force_estimate=True)
            await stream.aclose()

    async def _relay(
        self,
        ctx: RequestContext,
        opened: Opened,
        take: Callable[[AnyChunk], None],
        flush: Callable[[], Awaitable[None]],
        network: bool,
    ) -> str | None:
        """Relay a committed stream's chunks until its end: None when it ended properly; the
        upstream's message when it broke (the record and the attempt say so; the caller ends
        the client's stream)."""
        try:
            async for chunk in opened.iterator:
                take(chunk)  # buffered for the client
                if not network:
                    await flush()
        except (asyncio.CancelledError, _ClientGone):
            raise
        except Exception as exc:
            # Whatever broke the relay after the commit (an UpstreamError, or a payload that
            # could not be read: the provider's malformed answer), the client's stream ends
            # with an error event and the record says so.
            err = _as_upstream(exc, opened.candidate)
            rec = ctx.record
            rec.broke_after_commit = True
            rec.error_code = "stream_broken_after_commit"
            ctx.attempts[-1].outcome = "broken_after_commit"
            ctx.attempts[-1].code = err.code
            return err.message
        return None

    async def _broken(
        self,
        ctx: RequestContext,
        opened: Opened,
        send: Send,
        fail: Callable[[str, str], bytes] | None,
        why: str,
    ) -> None:
        """End a committed stream that broke (`why`: the upstream's message) with the API's
        error event, and count it."""
        rec, cand, state = ctx.record, opened.candidate, ctx.progress
        scrub.register((cand.credentials or {}).values())
        message = f"{cand.provider.id}: {scrub.scrub(why)}"
        log.warning("%s: stream broke after commit: %s", rec.request_id, message)
        await _end_stream_with_error(
            send,
            "upstream_stream_broken",
            message + " (after the response had started; not retried)",
            state.pending,
            fail,
        )
        if state.first_byte is None:
            state.first_byte = time.perf_counter()
        self.services.metrics.broken.inc(
            (self.labels.route(rec.route, rec.requested_model), cand.provider.id)
        )

    def _observe(self, rec: RequestRecord, attempts: list[Attempt]) -> None:
        m = self.services.metrics
        route = self.labels.route(rec.route, rec.requested_model)  # from the config only
        provider = rec.provider or "-"  # a configured provider's id (set by the router)
        m.requests.inc((route, provider, status_label(rec.status)))
        m.latency.observe((route, provider), rec.latency_ms / 1000)
        if rec.ttfb_ms is not None:
            m.ttfb.observe((route, provider), rec.ttfb_ms / 1000)
        if rec.input_tokens:
            m.tokens.inc((route, provider, "input"), rec.input_tokens)
        if rec.output_tokens:
            m.tokens.inc((route, provider, "output"), rec.output_tokens)
        if rec.cost_usd:
            m.cost.inc((route, provider), rec.cost_usd)
        for i, a in enumerate(attempts):
            m.attempts.inc((a.provider, a.outcome))
            if a.outcome != "ok" and i + 1 < len(attempts):
                m.fallbacks.inc((route, a.provider, a.outcome))


def _flusher(send: Send, state: ResponseProgress) -> Callable[[], Awaitable[None]]:
    """Write what a stream buffered (`state.pending`) in one body message, noting the first
    byte: the hook the transport calls right before it would wait for the network."""
    pending = state.pending

    async def flush() -> None:
        if pending:
            body = b"".join(pending)
            pending.clear()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            if state.first_byte is None:
                state.first_byte = time.perf_counter()

    return flush


def _failed(ctx: RequestContext, failed: AllCandidatesFailed, services: Services) -> GatewayError:
    """The client's error when no candidate answered: the last attempt's, said plainly (which
    credential was refused, which base_url redirected), scrubbed of every credential tried."""
    rec, cand = ctx.record, failed.candidate
    rec.provider = cand.provider.id
    rec.upstream_model = cand.model.upstream
    for e in failed.errors:
        scrub.register((e.candidate.credentials or {}).values())
    p = cand.provider
    own = services.router.byok
    byok = p.id in ctx.org.byok_providers and (
        own is not None and own.credentials(ctx.org.id, p.id) is not None
    )
    err = from_upstream(
        failed.error,
        p.id,
        secret_names=tuple(sorted(p.credentials.values())),
        byok=byok,
        base_url=p.base_url or DEFAULT_BASE_URLS.get(p.adapter),
    )
    log.warning("%s: no candidate answered: %s", rec.request_id, scrub.scrub(str(failed)))
    return err


def _unreadable(
    rec: RequestRecord, cand: Candidate, attempts: list[Attempt], exc: Exception
) -> GatewayError:
    """An answer the gateway could not read after the adapter returned it (a non-streamed
    one, or a stream's first chunks), before anything was sent: a 502, not a 500."""
    log.error("%s: %s answered a malformed payload", rec.request_id, cand.ref, exc_info=exc)
    if attempts:
        attempts[-1].outcome = "server_error"
        attempts[-1].code = "upstream_malformed"
    rec.input_tokens = rec.output_tokens = rec.cost_usd = None
    return GatewayError(
        502,
        "upstream_error",
        f"{cand.provider.id}: the answer could not be read ({type(exc).__name__})",
    )


def _as_upstream(exc: Exception, cand: Candidate) -> UpstreamError:
    """An exception while relaying a committed stream, as the upstream failure it is."""
    if isinstance(exc, UpstreamError):
        return exc
    log.error("relaying %s failed: a malformed chunk", cand.ref, exc_info=exc)
    return UpstreamError(
        "server_error",
        f"a chunk could not be read ({type(exc).__name__})",
        code="upstream_malformed",
    )


def _name_cancelled(attempts: list[Attempt], outcome: str) -> None:
    """The attempt cut by the request's cancellation (before the commit) says why."""
    if attempts and attempts[-1].outcome == CANCELLED:
        attempts[-1].outcome = outcome


def _scrub_codes(attempts: list[Attempt]) -> None:
    """Attempt codes can be the provider's words: scrubbed before the record keeps them."""
    for a in attempts:
        if a.code is not None:
            a.code = scrub.scrub(a.code)


def _account(
    rec: RequestRecord,
    cand: Candidate,
    plan: RoutePlan,
    usage: Usage | None,
    est_output: int,
    force_estimate: bool = False,
) -> None:
    """Tokens and cost of the answer: the provider's usage, else estimates (flagged)."""
    if usage is not None and not force_estimate:
        rec.input_tokens, rec.output_tokens, rec.usage_estimated = (
            usage.input_tokens,
            usage.output_tokens,
            False,
        )
    elif usage is not None and usage.output_tokens:
        rec.input_tokens, rec.output_tokens, rec.usage_estimated = (
            usage.input_tokens,
            max(usage.output_tokens, est_output),
            True,
        )
    else:
        rec.input_tokens = usage.input_tokens if usage is not None else plan.prompt_tokens
        rec.output_tokens, rec.usage_estimated = est_output, True
    price = cand.model.price
    if usage is None:
        rec.cost_usd = None if price is None else price.cost(rec.input_tokens, rec.output_tokens)
        return
    rec.cached_input_tokens = usage.cached_input_tokens
    rec.cache_write_tokens = usage.cache_write_tokens
    rec.cache_write_1h_tokens = usage.cache_write_1h_tokens
    rec.reasoning_tokens = usage.reasoning_tokens
    rec.cost_usd = (
        None
        if price is None
        else price.cost(
            rec.input_tokens,
            rec.output_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.cache_write_1h_tokens,
        )
    )


def _add_abandoned(rec: RequestRecord, attempts: list[Attempt]) -> None:
    """Fold the estimated cost of abandoned attempts into the record (the provider bills
    them): `abandoned_cost_usd` is their sum, `cost_usd` the known total."""
    abandoned = None
    for a in attempts:
        if a.cost_usd is not None:
            abandoned = (abandoned or 0.0) + a.cost_usd
    if abandoned is not None:
        rec.abandoned_cost_usd = abandoned
        rec.cost_usd = abandoned + (rec.cost_usd or 0.0)


def _usage_body(rec: RequestRecord) -> dict[str, Any]:
    """The answer's usage in OpenAI's shape, with its details (`cached_tokens`,
    `reasoning_tokens`; `cache_write_tokens`, Anthropic's 5-minute and 1-hour writes together,
    only when there were any)."""
    prompt = rec.input_tokens or 0
    completion = rec.output_tokens or 0
    details: dict[str, int] = {"cached_tokens": rec.cached_input_tokens or 0}
    writes = (rec.cache_write_tokens or 0) + (rec.cache_write_1h_tokens or 0)
    if writes:
        details["cache_write_tokens"] = writes
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": rec.reasoning_tokens or 0},
    }


def _completion_body(rec: RequestRecord, result: Completion) -> bytes:
    choices = result.extra.get("choices") or [
        {
            "index": 0,
            "message": result.message,
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }
    ]
    body: dict[str, Any] = {
        "id": "chatcmpl-" + rec.request_id[4:],
        "object": "chat.completion",
        "created": int(rec.ts),
        "model": rec.upstream_model,
        "choices": choices,
        "usage": _usage_body(rec),
    }
    fp = result.extra.get("system_fingerprint")
    if fp is not None:
        body["system_fingerprint"] = fp
    if result.body is not None:  # an OpenAI-format provider's answer: its fields as sent
        body.update(result.body)
    return orjson.dumps(body)


def _trail(attempts: list[Attempt]) -> bytes:
    return ", ".join(
        f"{a.provider}/{a.model}={a.outcome}:{a.latency_ms:.0f}ms" for a in attempts
    ).encode()


def _headers(
    rec: RequestRecord,
    cand: Candidate | None,
    attempts: list[Attempt],
    ctype: tuple[bytes, bytes],
    stream: bool = False,
) -> list[tuple[bytes, bytes]]:
    h = [
        ctype,
        (b"x-request-id", rec.request_id.encode()),
        (b"x-switchyard-attempts", str(len(attempts)).encode()),
    ]
    if rec.route:
        h.append((b"x-switchyard-route", rec.route.encode()))
    if cand is not None:
        h.append((b"x-switchyard-provider", cand.provider.id.encode()))
        h.append((b"x-switchyard-model", (rec.upstream_model or cand.model.upstream).encode()))
    if len(attempts) > 1:
        h.append((b"x-switchyard-attempt-trail", _trail(attempts)))
    if stream:
        h.append((b"cache-control", b"no-cache"))
        h.append((b"x-accel-buffering", b"no"))
    return h


_RETRYABLE_4XX = frozenset({408, 409, 429})  # what the OpenAI and Anthropic SDKs retry


async def _send_error(
    send: Send,
    exc: GatewayError,
    rid: str,
    attempts: list[Attempt],
    render: Callable[[GatewayError], bytes] = _openai_error,
) -> None:
    body = render(exc)
    headers = [
        _JSON,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        (b"x-switchyard-attempts", str(len(attempts)).encode()),
    ]
    if attempts:
        headers.append((b"x-switchyard-attempt-trail", _trail(attempts)))
    for k, v in exc.headers.items():
        headers.append((k.encode(), v.encode()))
    if (
        exc.status < 500
        and exc.status not in _RETRYABLE_4XX
        and "x-should-retry" not in exc.headers
    ):
        # The caller's own request: the same request fails the same way (the SDKs obey this).
        headers.append((b"x-should-retry", b"false"))
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="switchyard"'))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _end_stream_with_error(
    send: Send,
    code: str,
    message: str,
    pending: list[bytes],
    fail: Callable[[str, str], bytes] | None = None,
) -> None:
    """End a committed stream with an error event (the OpenAI SDK raises on it); no [DONE].
    Chunks still buffered go out first, in the same write. `fail`: another API's error event
    (its frontend's `StreamEncoder.fail`)."""
    if fail is not None:
        event = fail(code, message)
    else:
        err = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
        event = b"data: " + orjson.dumps(err) + b"\n\n"
    body = b"".join(pending) + event
    pending.clear()
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _shutting_down() -> GatewayError:
    return GatewayError(
        503,
        SHUTTING_DOWN,
        "the gateway is shutting down and did not answer this request; retry it",
        headers={"retry-after": "1"},
    )


async def _shut_down(
    send: Send,
    rec: RequestRecord,
    attempts: list[Attempt],
    state: ResponseProgress,
    render: Callable[[GatewayError], bytes] = _openai_error,
) -> None:
    """End a request the shutdown cut (runtime/shutdown.py): a committed stream gets an error
    event and no [DONE], and its record says it was interrupted (never a clean 200); a request
    that had sent nothing gets a 503 (a record with that status)."""
    rec.error_code = SHUTTING_DOWN
    if state.started:
        rec.broke_after_commit = True
        rec.status = rec.status or 200
        if rec.stream:
            await _end_stream_with_error(
                send,
                SHUTTING_DOWN,
                "the gateway is shutting down; the response was cut after it had started "
                "(not retried)",
                state.pending,
                state.fail,
            )
        return
    rec.status = 503
    await _send_error(send, _shutting_down(), rec.request_id, attempts, render)
    state.first_byte = time.perf_counter()


async def _read_body(receive: Receive) -> bytes:
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise _ClientGone
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise GatewayError(
                413,
                "request_too_large",
                f"the request body is over {MAX_BODY // (1024 * 1024)} MiB",
            )
        parts.append(chunk)
        if not msg.get("more_body"):
            return b"".join(parts)


class _Guard:
    """While a request is in flight: cancel its task when the client goes away (nobody waits
    for the answer, so the upstream call stops and the record says 499) or when
    `request_timeout_s` passes.

    Both start only once the request has been in flight for WATCH_AFTER_S: most requests
    finish sooner, and for them one timer handle is all this costs. `stop()` when done."""

    __slots__ = (
        "_deadline",
        "_owner",
        "_receive",
        "_task",
        "_timeout",
        "_timer",
        "gone",
        "timed_out",
    )

    WATCH_AFTER_S = 0.05

    def __init__(self, receive: Receive, timeout: float, owner: asyncio.Task[Any]) -> None:
        self.gone = False
        self.timed_out = False
        self._receive = receive
        self._timeout = timeout
        self._owner: asyncio.Task[Any] | None = owner
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            min(self.WATCH_AFTER_S, timeout), self._start
        )

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._watch())
        left = self._timeout - self.WATCH_AFTER_S
        if left <= 0:
            self._expire()
        else:
            self._deadline = asyncio.get_running_loop().call_later(left, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if not self.gone and self._owner is not None:
            self.timed_out = True
            self._owner.cancel()

    async def _watch(self) -> None:
        while True:
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                if not self.timed_out and self._owner is not None:
                    self.gone = True
                    self._owner.cancel()
                return

    def stop(self) -> None:
        for handle in (self._timer, self._deadline):
            if handle is not None:
                handle.cancel()
        if self._task is not None:
            self._task.cancel()
