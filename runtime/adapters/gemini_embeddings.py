"""Gemini's `models/{model}:batchEmbedContents` for the gateway's embeddings.

Request (the shape google-genai's `embed_content` sends to the Gemini Developer API):
`{"requests": [{"model": "models/<upstream>", "content": {"parts": [{"text": ...}]},
"outputDimensionality": N}]}`; answer `{"embeddings": [{"values": [...]}]}`, one per request
in order. Decided here (docs/api-embeddings.md):
- `outputDimensionality`: the client's `dimensions`, else the model's configured ones (so
  every candidate of a route answers the configured size);
- token arrays: Gemini takes only text, so the candidate is `Unservable` (skipped);
- batching: at most MAX_BATCH (100, the API's limit per call) inputs per call; the batches
  run concurrently and are joined in input order; one failure cancels the rest;
- usage: Gemini reports none for embeddings (`usageMetadata.promptTokenCount` is read when a
  response carries it): the gateway then estimates and flags the record.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from runtime.adapters import http
from runtime.adapters.base import Call, Embeddings, Usage
from runtime.adapters.transport_base import HTTPTransport
from runtime.errors import Unservable, UpstreamError

MAX_BATCH = 100


def _malformed(what: str) -> UpstreamError:
    return UpstreamError("server_error", what, code="upstream_malformed")


def batch_bodies(call: Call, max_batch: int = MAX_BATCH) -> list[dict[str, Any]]:
    """The upstream bodies of `call`, one per batch of at most `max_batch` inputs."""
    inputs = call.request["input"]
    if any(type(item) is not str for item in inputs):
        raise Unservable("Gemini embeds text only (token arrays were sent)")
    upstream = call.model.upstream
    resource = upstream if "/" in upstream else f"models/{upstream}"
    asked = call.request.get("dimensions")
    dims = asked if isinstance(asked, int) else call.model.dimensions
    requests = []
    for text in inputs:
        one: dict[str, Any] = {"model": resource, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            one["outputDimensionality"] = dims
        requests.append(one)
    return [{"requests": requests[i : i + max_batch]} for i in range(0, len(requests), max_batch)]


async def embed(
    transport: HTTPTransport,
    base_url: str,
    headers: dict[str, str],
    timeouts: http.Timeouts,
    map_error: http.ErrorMapper,
    call: Call,
    max_batch: int = MAX_BATCH,
) -> Embeddings:
    """POST the batches concurrently and join the answers in input order."""
    bodies = batch_bodies(call, max_batch)
    upstream = call.model.upstream
    resource = upstream if "/" in upstream else f"models/{upstream}"
    url = f"{base_url}/{resource}:batchEmbedContents"

    async def one(body: dict[str, Any]) -> Embeddings:
        resp = await http.post(
            transport, url, headers, orjson.dumps(body), timeouts.pick(False), map_error
        )
        return parse_response(await http.read_json(resp), len(body["requests"]))

    if len(bodies) == 1:
        parts = [await one(bodies[0])]
    else:
        tasks = [asyncio.ensure_future(one(b)) for b in bodies]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    vectors = [v for p in parts for v in p.vectors]
    counts = [p.usage.input_tokens for p in parts if p.usage is not None]
    usage = Usage(sum(counts), 0) if len(counts) == len(parts) else None
    return Embeddings(vectors, usage, None)


def parse_response(doc: Any, count: int) -> Embeddings:
    """A `BatchEmbedContentsResponse` of `count` requests -> Embeddings."""
    embeddings = doc.get("embeddings") if isinstance(doc, dict) else None
    if not isinstance(embeddings, list):
        raise _malformed("batchEmbedContents response has no `embeddings` list")
    if len(embeddings) != count:
        raise _malformed(f"batchEmbedContents answered {len(embeddings)} vectors for {count}")
    vectors = []
    for e in embeddings:
        values = e.get("values") if isinstance(e, dict) else None
        if not isinstance(values, list) or not all(type(x) in (int, float) for x in values):
            raise _malformed("an embedding's `values` is not a list of numbers")
        vectors.append([float(x) for x in values])
    meta = doc.get("usageMetadata")
    tokens = meta.get("promptTokenCount") if isinstance(meta, dict) else None
    usage = Usage(tokens, 0) if type(tokens) is int and tokens >= 0 else None
    return Embeddings(vectors, usage, None)
