"""Fake embeddings APIs: OpenAI's `POST /v1/embeddings` and Gemini's
`POST /v1beta/models/{model}:batchEmbedContents`, on the shared `FakeProvider` (faults,
recorded requests, the providers' own auth and error bodies from the chat fakes).

OpenAI (reference: openai SDK `EmbeddingCreateParams` / `CreateEmbeddingResponse`, and
platform.openai.com/docs/api-reference/embeddings): `input` a string, strings, a token array or
token arrays; `encoding_format` "float" (the default) or "base64" (little-endian float32
bytes); `dimensions` only for `text-embedding-3-*` (ada-002 answers 400 "This model does not
support specifying dimensions."); more than 2048 inputs is a 400. Usage counts one token per
whitespace-separated word (a token array: its length) — deliberately not the gateway's
4-characters estimate, so a test sees which one a record used.

Gemini (reference: google-genai `embed_content` → `batchEmbedContents`, which this SDK
version sends under `/v1/` and the gateway under `/v1beta/`: both are served; and
ai.google.dev/api/embeddings): `requests[]` of `{model, content.parts[].text,
outputDimensionality}`, at most 100 per call (else 400 "at most 100 requests can be in one
batch"), each request's `model` the URL's; answer `{"embeddings": [{"values": [...]}]}`
(no usage).

Vectors are deterministic: a function of the text (or token ids) and the size, so a test can
compute what a client must get (`expected_vector`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeProvider, StreamPlan
from tests.fakes.gemini_fake import DEFAULT_API_KEY as GEMINI_KEY
from tests.fakes.gemini_fake import GeminiWire
from tests.fakes.gemini_fake import _error as gemini_error
from tests.fakes.openai_fake import DEFAULT_API_KEY as OPENAI_KEY
from tests.fakes.openai_fake import OpenAIWire
from tests.fakes.openai_fake import _error as openai_error

OPENAI_SIZES = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
GEMINI_DEFAULT_SIZE = 3072  # gemini-embedding-001
MAX_OPENAI_INPUTS = 2048
MAX_GEMINI_BATCH = 100


def expected_vector(item: str | list[int], size: int) -> list[float]:
    """The fake's vector of one input (float32 values, as they travel)."""
    key = item if isinstance(item, str) else " ".join(map(str, item))
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    values = [rng.uniform(-1.0, 1.0) for _ in range(size)]
    return list(struct.unpack(f"<{size}f", struct.pack(f"<{size}f", *values)))


def _bad_request(body: dict[str, Any]) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps(body), content_type="application/json")


class OpenAIEmbeddingsWire(OpenAIWire):
    """OpenAI's embeddings endpoint for `FakeProvider` (auth and errors as the chat fake)."""

    routes = [("POST", "/v1/embeddings")]

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return False

    def completion(self, request: web.Request, body: Any) -> dict[str, Any]:
        model = body.get("model")
        inputs = body.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and type(inputs[0]) is int
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_OPENAI_INPUTS:
            raise _bad_request(
                openai_error("'$.input' is invalid.", "invalid_request_error", None, "input")
            )
        size = OPENAI_SIZES.get(model, 1536)
        if "dimensions" in body:
            if not str(model).startswith("text-embedding-3"):
                message = "This model does not support specifying dimensions."
                raise _bad_request(openai_error(message, "invalid_request_error", None))
            size = body["dimensions"]
        b64 = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            vec = expected_vector(item, size)
            tokens += len(item.split()) if isinstance(item, str) else len(item)
            packed = base64.b64encode(struct.pack(f"<{size}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": packed if b64 else vec})
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def stream(self, request: web.Request, body: Any) -> StreamPlan:
        raise AssertionError("embeddings are never streamed")


class GeminiEmbeddingsWire(GeminiWire):
    """Gemini's batchEmbedContents for `FakeProvider` (auth and errors as the chat fake)."""

    routes = [("POST", "/v1beta/models/{call}"), ("POST", "/v1/models/{call}")]

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return False

    def completion(self, request: web.Request, body: Any) -> dict[str, Any]:
        model, _, method = request.match_info["call"].partition(":")
        if method != "batchEmbedContents":
            raise web.HTTPNotFound()
        reqs = body.get("requests")
        if not isinstance(reqs, list) or not reqs:
            raise _bad_request(gemini_error(400, "* BatchEmbedContentsRequest.requests: empty"))
        if len(reqs) > MAX_GEMINI_BATCH:
            message = (
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
            )
            raise _bad_request(gemini_error(400, message))
        out = []
        for r in reqs:
            if r.get("model") != f"models/{model}":
                message = f"Model name in request ({r.get('model')}) does not match the URL"
                raise _bad_request(gemini_error(400, message))
            text = "".join(p.get("text", "") for p in r["content"]["parts"])
            size = r.get("outputDimensionality") or GEMINI_DEFAULT_SIZE
            out.append({"values": expected_vector(text, size)})
        return {"embeddings": out}

    def stream(self, request: web.Request, body: Any) -> StreamPlan:
        raise AssertionError("embeddings are never streamed")


def openai_embeddings_fake(api_key: str = OPENAI_KEY) -> FakeProvider:
    """An unstarted fake of OpenAI's embeddings API; `with openai_embeddings_fake() as f:`."""
    return FakeProvider(OpenAIEmbeddingsWire(api_key))


def gemini_embeddings_fake(api_key: str = GEMINI_KEY) -> FakeProvider:
    """An unstarted fake of Gemini's batchEmbedContents; `with gemini_embeddings_fake() as f:`."""
    return FakeProvider(GeminiEmbeddingsWire(api_key))
