"""OpenAI's `POST /v1/embeddings` (and every openai-compatible server's `{base}/embeddings`).

The body is the checked embeddings request (runtime/embeddings_request.py: `input` a list)
with `model` = the upstream id. Decided here (docs/api-embeddings.md):
- `dimensions`: OpenAI itself gets the client's, else the model's configured `dimensions`,
  so every candidate of a route answers vectors of the configured size — except the fixed-size
  legacy models (`text-embedding-ada-002`: OpenAI's reference says `dimensions` is "only
  supported in text-embedding-3 and later models"), which get none, and a client asking them
  for another size than their configured one makes the candidate unservable. An
  openai-compatible server gets `dimensions` only when the client sent it (many refuse it).
- `encoding_format`: always `base64` upstream (a third of the bytes of float JSON, and what the
  openai SDK itself asks for), decoded here to floats; a server that answers floats anyway
  (some compatible servers ignore the parameter) is read as well.
- batching: at most `max_batch` (2048, OpenAI's limit) inputs per upstream call; more are
  split, sent one batch after another, and concatenated in order.
- usage: the sum of the batches' `usage.prompt_tokens` (None if any batch reported none).
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from typing import Any

import orjson

from runtime.adapters import http
from runtime.adapters.base import Call, Embeddings, Usage
from runtime.adapters.transport_base import HTTPTransport
from runtime.errors import Unservable, UpstreamError

MAX_BATCH = 2048
_FIXED_SIZE = ("text-embedding-ada-",)  # OpenAI models that refuse `dimensions`


def _malformed(what: str) -> UpstreamError:
    return UpstreamError("server_error", what, code="upstream_malformed")


def upstream_dimensions(call: Call, native: bool) -> int | None:
    """The `dimensions` to send for `call` (None: send none); see the module docstring."""
    asked = call.request.get("dimensions")
    if not native:
        return asked if isinstance(asked, int) else None
    configured = call.model.dimensions
    if call.model.upstream.startswith(_FIXED_SIZE):
        if isinstance(asked, int) and asked != configured:
            raise Unservable(f"{call.model.upstream} has a fixed size and takes no `dimensions`")
        return None
    return asked if isinstance(asked, int) else configured


def batch_bodies(call: Call, native: bool, max_batch: int = MAX_BATCH) -> list[dict[str, Any]]:
    """The upstream bodies of `call`, one per batch of at most `max_batch` inputs."""
    base: dict[str, Any] = {"model": call.model.upstream, "encoding_format": "base64"}
    dims = upstream_dimensions(call, native)
    if dims is not None:
        base["dimensions"] = dims
    user = call.request.get("user")
    if user is not None:
        base["user"] = user
    inputs = call.request["input"]
    return [{**base, "input": inputs[i : i + max_batch]} for i in range(0, len(inputs), max_batch)]


async def embed(
    transport: HTTPTransport,
    url: str,
    headers: dict[str, str],
    timeouts: http.Timeouts,
    map_error: http.ErrorMapper,
    call: Call,
    native: bool,
    max_batch: int = MAX_BATCH,
) -> Embeddings:
    """POST each batch to `url` in turn and join the answers in input order."""
    vectors: list[list[float]] = []
    total: int | None = 0
    model: str | None = None
    for body in batch_bodies(call, native, max_batch):
        resp = await http.post(
            transport, url, headers, orjson.dumps(body), timeouts.pick(False), map_error
        )
        part = parse_response(await http.read_json(resp), len(body["input"]))
        vectors.extend(part.vectors)
        model = model or part.model
        total = None if total is None or part.usage is None else total + part.usage.input_tokens
    return Embeddings(vectors, None if total is None else Usage(total, 0), model)


def parse_response(doc: Any, count: int) -> Embeddings:
    """A `CreateEmbeddingResponse` body of `count` inputs -> Embeddings (vectors by `index`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise _malformed("embeddings response has no `data` list")
    data = doc["data"]
    if len(data) != count:
        raise _malformed(f"embeddings response has {len(data)} vectors for {count} inputs")
    vectors: list[list[float] | None] = [None] * count
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int or not 0 <= index < count or vectors[index] is not None:
            raise _malformed("embeddings response has a missing or repeated `index`")
        vectors[index] = decode_vector(item.get("embedding"))
    usage = doc.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    model = doc.get("model")
    return Embeddings(
        [v for v in vectors if v is not None],
        Usage(tokens, 0) if type(tokens) is int and tokens >= 0 else None,
        model if isinstance(model, str) else None,
    )


def decode_vector(value: Any) -> list[float]:
    """One `embedding`: base64 of little-endian float32s, or a list of numbers."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("an embedding is not valid base64") from None
        if len(raw) % 4:
            raise _malformed("a base64 embedding is not a whole number of float32s")
        floats = array("f", raw)
        if sys.byteorder == "big":
            floats.byteswap()
        return floats.tolist()
    if isinstance(value, list) and all(
        type(x) in (int, float) for x in value
    ):  # the JSON float form
        return [float(x) for x in value]
    raise _malformed("an embedding is neither base64 nor a list of numbers")


def encode_vector(vector: list[float]) -> str:
    """A vector as OpenAI's base64 form: little-endian float32 bytes, base64-encoded (what
    the openai SDK decodes with `array("f", ...)` / `numpy.frombuffer(dtype="float32")`)."""
    floats = array("f", vector)
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")
