"""`POST /v1/embeddings`, as a lean ASGI handler beside the chat one (runtime/chat.py).

Order of work per request, as for chat completions: authenticate (in memory), read and check
the body (runtime/embeddings_request.py), plan the candidates (`Router.plan_embeddings`),
reserve limits (the input estimate against tokens-per-minute, the worst input cost against
budgets; settled to the real cost in `finally`), then `fallback.embed` over the candidates,
each attempt recorded. The answer is OpenAI's `CreateEmbeddingResponse`; `encoding_format`
base64 (what the openai SDK asks for by default) is each vector's little-endian float32 bytes,
base64-encoded. Exactly one record per request, endpoint "/v1/embeddings": input tokens from
the provider's usage (else the plan's estimate, flagged), cost = input price x input tokens.
Errors are OpenAI's shape with `x-request-id`, written by the chat handler's own helpers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from runtime import embeddings_request
from runtime.adapters import Embeddings
from runtime.adapters.openai_embeddings import encode_vector
from runtime.chat import (
    _COUNTED_REFUSALS,
    _JSON,
    _add_abandoned,
    _ClientGone,
    _failed,
    _Guard,
    _headers,
    _name_cancelled,
    _read_body,
    _scrub_codes,
    _send_error,
    _shut_down,
    _shutting_down,
    _unreadable,
    next_request_id,
)
from runtime.context import RequestContext, ResponseProgress
from runtime.errors import GatewayError
from runtime.fallback import AllCandidatesFailed, embed
from runtime.limits import Reservation
from runtime.metrics import RouteLabels, status_label
from runtime.records import EMBEDDINGS_ENDPOINT, Attempt, RequestRecord
from runtime.router import Candidate, RoutePlan
from runtime.services import Services, authenticate
from runtime.shutdown import Drain

log = logging.getLogger("switchyard.embeddings")


class EmbeddingsHandler:
    """The ASGI handler of `POST /v1/embeddings`, over the services built at start."""

    def __init__(self, services: Services, drain: Drain | None = None) -> None:
        self.services = services
        cfg = services.config
        self.drain = drain if drain is not None else Drain(cfg.request_timeout_s)
        self.env = cfg.environment
        self.price_hash = cfg.price_table_hash
        self.config_hash = cfg.config_hash
        self.request_timeout = cfg.request_timeout_s
        self.labels = RouteLabels(cfg)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        rid = next_request_id()
        rec = RequestRecord.begin(
            rid, self.env, self.price_hash, self.config_hash, EMBEDDINGS_ENDPOINT
        )
        attempts: list[Attempt] = []
        state = ResponseProgress()
        held: list[Reservation] = []
        in_flight = self.drain.tasks
        task = asyncio.current_task()
        assert task is not None  # an ASGI server runs each request in its own task
        in_flight[task] = True  # reading its body
        try:
            await self._handle(scope, receive, send, rec, attempts, state, held, task)
        except GatewayError as exc:
            if not held and rec.key_id is not None and exc.status in _COUNTED_REFUSALS:
                exc = await self.services.limits.count_rejected(rec.key_id) or exc
            rec.status, rec.error_code = exc.status, exc.code
            if not state.started:
                await _send_error(send, exc, rid, attempts)
                state.first_byte = time.perf_counter()
        except _ClientGone:
            rec.status, rec.error_code = 499, "client_closed_request"
        except asyncio.CancelledError:
            if not self.drain.draining:
                raise
            task.uncancel()
            await _shut_down(send, rec, attempts, state)
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
                )
        finally:
            del in_flight[task]
            rec.latency_ms = (time.perf_counter() - start) * 1000
            if state.first_byte is not None:
                rec.ttfb_ms = (state.first_byte - start) * 1000
            _add_abandoned(rec, attempts)
            if rec.status != 200:
                _scrub_codes(attempts)
            rec.attempts = [a.as_dict() for a in attempts]
            rec.fell_back = len(attempts) > 1
            self._observe(rec, attempts)
            self.services.records.submit(rec)
            if held:
                self.services.limits.settle(held[0], rec.cost_usd, rec.input_tokens or 0)

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
            raise GatewayError(405, "method_not_allowed", "use POST for /v1/embeddings")
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
        request = embeddings_request.parse(body, rec)
        plan = services.router.plan_embeddings(request, org)
        rec.route = plan.route
        rec.skipped = plan.skipped
        held.append(
            await services.limits.reserve(
                rec.request_id, key.id, key.org, plan.prompt_tokens, plan.worst_cost_usd
            )
        )
        ctx = RequestContext(rec.request_id, key, org, request, False, plan, rec, state, attempts)
        guard = _Guard(receive, self.request_timeout, task)
        try:
            try:
                await self._respond(ctx, send)
            except asyncio.CancelledError:
                if not (guard.gone or guard.timed_out):
                    raise  # a shutdown, not us (answered in __call__)
                task.uncancel()
                if guard.gone:
                    _name_cancelled(attempts, "client_closed_request")
                    raise _ClientGone from None
                _name_cancelled(attempts, "request_timeout")
                raise GatewayError(
                    504,
                    "request_timeout",
                    "no answer within the gateway's request_timeout_s of "
                    f"{self.request_timeout:g} s",
                ) from None
        finally:
            guard.stop()

    async def _respond(self, ctx: RequestContext, send: Send) -> None:
        rec, plan, attempts, state = ctx.record, ctx.plan, ctx.attempts, ctx.progress
        try:
            cand, result = await embed(ctx)
        except AllCandidatesFailed as failed:
            raise _failed(ctx, failed, self.services) from None
        rec.provider, rec.upstream_model = cand.provider.id, result.model or cand.model.upstream
        try:
            account(rec, cand, plan, result)
            body = response_body(rec, result, ctx.request.get("encoding_format") == "base64")
        except Exception as exc:  # the provider's malformed answer, nothing sent yet
            raise _unreadable(rec, cand, attempts, exc) from None
        headers = _headers(rec, cand, attempts, _JSON)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        state.started = True
        state.first_byte = time.perf_counter()
        await send({"type": "http.response.body", "body": body})
        rec.status = 200

    def _observe(self, rec: RequestRecord, attempts: list[Attempt]) -> None:
        """The same metrics as a chat request (runtime/chat.py `_observe`); no output tokens."""
        m = self.services.metrics
        route = self.labels.route(rec.route, rec.requested_model)
        provider = rec.provider or "-"
        m.requests.inc((route, provider, status_label(rec.status)))
        m.latency.observe((route, provider), rec.latency_ms / 1000)
        if rec.ttfb_ms is not None:
            m.ttfb.observe((route, provider), rec.ttfb_ms / 1000)
        if rec.input_tokens:
            m.tokens.inc((route, provider, "input"), rec.input_tokens)
        if rec.cost_usd:
            m.cost.inc((route, provider), rec.cost_usd)
        for i, a in enumerate(attempts):
            m.attempts.inc((a.provider, a.outcome))
            if a.outcome != "ok" and i + 1 < len(attempts):
                m.fallbacks.inc((route, a.provider, a.outcome))


def account(rec: RequestRecord, cand: Candidate, plan: RoutePlan, result: Embeddings) -> None:
    """Input tokens (the provider's usage, else the plan's estimate, flagged) and their cost
    at the model's input price; embeddings have no output tokens."""
    usage = result.usage
    if usage is not None:
        rec.input_tokens, rec.usage_estimated = usage.input_tokens, False
    else:
        rec.input_tokens, rec.usage_estimated = plan.prompt_tokens, True
    rec.output_tokens = 0
    price = cand.model.price
    rec.cost_usd = None if price is None else price.cost(rec.input_tokens, 0)


def response_body(rec: RequestRecord, result: Embeddings, base64: bool) -> bytes:
    """OpenAI's `CreateEmbeddingResponse`: one `embedding` object per input, in input order;
    a vector is a list of floats, or with `base64` its little-endian float32 bytes encoded."""
    tokens = rec.input_tokens or 0
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode_vector(v) if base64 else v,
        }
        for i, v in enumerate(result.vectors)
    ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": rec.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
