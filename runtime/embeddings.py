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

import logging
import time
from typing import Any

import orjson
from starlette.types import Send

from runtime import embeddings_request
from runtime.adapters import Embeddings
from runtime.adapters.openai_embeddings import encode_vector
from runtime.chat import (
    _JSON,
    ChatHandler,
    _failed,
    _headers,
    _unreadable,
)
from runtime.config import OrgConfig
from runtime.context import RequestContext
from runtime.fallback import AllCandidatesFailed, embed
from runtime.frontends.base import Parsed
from runtime.records import EMBEDDINGS_ENDPOINT, RequestRecord
from runtime.router import Candidate, RoutePlan
from runtime.services import Services
from runtime.shutdown import Drain

log = logging.getLogger("switchyard.embeddings")


class EmbeddingsHandler(ChatHandler):
    """The ASGI handler of `POST /v1/embeddings`: the chat handler's request lifecycle
    (authentication, the drain, limits reserved and settled, the guard, one record, errors in
    OpenAI's shape), with its own check, planning and answer (nothing streams)."""

    def __init__(self, services: Services, drain: Drain | None = None) -> None:
        super().__init__(services, drain)
        self.endpoint = EMBEDDINGS_ENDPOINT

    def _prepare(
        self, body: bytes, rec: RequestRecord, org: OrgConfig
    ) -> tuple[dict[str, Any], RoutePlan, Parsed | None]:
        request = embeddings_request.parse(body, rec)
        return request, self.services.router.plan_embeddings(request, org), None

    async def _serve(self, ctx: RequestContext, parsed: Parsed | None, send: Send) -> None:
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
