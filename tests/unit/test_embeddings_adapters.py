"""Every adapter's `embed` through the in-memory transport: the bytes it sends (batching,
`dimensions`, base64), how it reads the answer, and what it refuses.

Wire shapes: OpenAI's `POST /v1/embeddings` (openai SDK `EmbeddingCreateParams` /
`CreateEmbeddingResponse`), Gemini's `models/{m}:batchEmbedContents` (google-genai
`_EmbedContentParametersPrivate_to_mldev`: `requests[].model/content/outputDimensionality`;
answer `embeddings[].values`)."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson
import pytest
from openai.types import CreateEmbeddingResponse

from runtime.adapters import Call, Embeddings, openai_embeddings
from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.gemini import GeminiAdapter
from runtime.adapters.mock import MockAdapter
from runtime.adapters.mock_embeddings import vector
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport
from runtime.adapters.openai import OpenAIAdapter, map_error
from runtime.adapters.openai_embeddings import decode_vector, encode_vector
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import Unservable, UpstreamError


def provider(adapter: str) -> ProviderConfig:
    return ProviderConfig(adapter, adapter, "https://up.test/v1", {"api_key": "K"}, False, 5, 1, {})


def emb_model(upstream: str, dims: int | None) -> ModelConfig:
    return ModelConfig("e", upstream, 8192, None, frozenset({"embeddings"}), None, dims)


def call(upstream: str, inputs: list[Any], dims: int | None = 4, **req: Any) -> Call:
    return Call(
        {"model": "r", "input": inputs, **req}, emb_model(upstream, dims), {"api_key": "K"}, "req_1"
    )


def openai_answer(request: MockRequest) -> MockResponse:
    """OpenAI's answer: vector i of the batch is [first token char code, i, ...] as base64."""
    body = request.json()
    size = body.get("dimensions", 3)
    data = []
    for i, item in enumerate(body["input"]):
        vec = [float(len(item)), float(i)] + [0.5] * (size - 2)
        data.append({"object": "embedding", "index": i, "embedding": encode_vector(vec)})
    doc = {
        "object": "list",
        "data": list(reversed(data)),  # `index` decides the order, not the position
        "model": body["model"],
        "usage": {"prompt_tokens": 2 * len(data), "total_tokens": 2 * len(data)},
    }
    # The SDK's own type accepts it once decoded (the SDK decodes base64 before its type).
    floats = [{**d, "embedding": decode_vector(d["embedding"])} for d in data]
    CreateEmbeddingResponse.model_validate({**doc, "data": floats})
    return MockResponse(200, orjson.dumps(doc))


def test_base64_is_little_endian_float32_as_the_openai_sdk_decodes_it() -> None:
    vec = [0.25, -1.5, 3.0]
    raw = base64.b64decode(encode_vector(vec))
    assert raw == struct.pack("<3f", *vec)
    assert decode_vector(encode_vector(vec)) == vec
    assert decode_vector([1, 2.5]) == [1.0, 2.5]
    for bad in ("!!", base64.b64encode(b"abc").decode(), [1, "x"], None):
        with pytest.raises(UpstreamError) as err:
            decode_vector(bad)
        assert err.value.code == "upstream_malformed"


def test_openai_sends_base64_the_configured_dimensions_and_reads_by_index() -> None:
    sent: list[MockRequest] = []

    def handler(request: MockRequest) -> MockResponse:
        sent.append(request)
        return openai_answer(request)

    adapter = OpenAIAdapter(provider("openai"), MockTransport(handler))
    out = asyncio.run(adapter.embed(call("text-embedding-3-small", ["ab", "abcd"], user="u")))
    assert sent[0].url == "https://up.test/v1/embeddings"
    assert sent[0].headers["authorization"] == "Bearer K"
    assert sent[0].json() == {
        "model": "text-embedding-3-small",
        "encoding_format": "base64",
        "dimensions": 4,
        "user": "u",
        "input": ["ab", "abcd"],
    }
    assert out.vectors == [[2.0, 0.0, 0.5, 0.5], [4.0, 1.0, 0.5, 0.5]]
    assert (out.usage.input_tokens if out.usage else None, out.model) == (
        4,
        "text-embedding-3-small",
    )


def test_openai_splits_batches_and_keeps_order() -> None:
    sent: list[list[str]] = []

    def handler(request: MockRequest) -> MockResponse:
        sent.append(request.json()["input"])
        return openai_answer(request)

    adapter = OpenAIAdapter(provider("openai"), MockTransport(handler))
    inputs = ["a" * n for n in range(1, 8)]
    c = call("text-embedding-3-small", inputs)
    url = "https://up.test/v1/embeddings"
    out = asyncio.run(
        openai_embeddings.embed(adapter.transport, url, {}, adapter.timeouts, map_error, c, True, 3)
    )
    assert sent == [inputs[0:3], inputs[3:6], inputs[6:7]]
    assert [v[0] for v in out.vectors] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert out.usage is not None and out.usage.input_tokens == 14


def test_fixed_size_and_compatible_models_get_no_configured_dimensions() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: MockRequest) -> MockResponse:
        sent.append(request.json())
        return openai_answer(request)

    native = OpenAIAdapter(provider("openai"), MockTransport(handler))
    asyncio.run(native.embed(call("text-embedding-ada-002", ["x"], dims=3)))
    compat = OpenAIAdapter(provider("openai-compatible"), MockTransport(handler))
    asyncio.run(compat.embed(call("bge-m3", ["x"], dims=3)))
    asyncio.run(compat.embed(call("bge-m3", ["x"], dims=3, dimensions=3)))
    assert ["dimensions" in s for s in sent] == [False, False, True]
    with pytest.raises(Unservable, match="fixed size"):
        asyncio.run(native.embed(call("text-embedding-ada-002", ["x"], dims=3, dimensions=2)))


def test_openai_errors_are_classified_and_answers_checked() -> None:
    def limited(request: MockRequest) -> MockResponse:
        return MockResponse(429, orjson.dumps({"error": {"message": "slow", "type": "requests"}}))

    adapter = OpenAIAdapter(provider("openai"), MockTransport(limited))
    with pytest.raises(UpstreamError) as err:
        asyncio.run(adapter.embed(call("text-embedding-3-small", ["x"])))
    assert (err.value.error_class, err.value.status) == ("rate_limited", 429)

    def short(request: MockRequest) -> MockResponse:
        return MockResponse(200, b'{"object": "list", "data": [], "model": "m", "usage": {}}')

    adapter = OpenAIAdapter(provider("openai"), MockTransport(short))
    with pytest.raises(UpstreamError) as err:
        asyncio.run(adapter.embed(call("text-embedding-3-small", ["x"])))
    assert err.value.code == "upstream_malformed"


def gemini_answer(request: MockRequest) -> MockResponse:
    reqs = request.json()["requests"]
    values = [{"values": [float(len(r["content"]["parts"][0]["text"]))] * 2} for r in reqs]
    return MockResponse(200, orjson.dumps({"embeddings": values}))


def test_gemini_batches_of_100_run_concurrently_in_order() -> None:
    sent: list[MockRequest] = []
    in_flight = 0
    peak = 0

    async def handler(request: MockRequest) -> MockResponse:
        nonlocal in_flight, peak
        sent.append(request)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return gemini_answer(request)

    adapter = GeminiAdapter(provider("gemini"), MockTransport(handler))
    inputs = ["a" * n for n in range(1, 251)]
    out: Embeddings = asyncio.run(adapter.embed(call("gemini-embedding-001", inputs, dims=2)))
    assert [len(r.json()["requests"]) for r in sent] == [100, 100, 50]
    assert peak == 3
    assert sent[0].url == "https://up.test/v1/models/gemini-embedding-001:batchEmbedContents"
    assert sent[0].headers["x-goog-api-key"] == "K"
    assert sent[0].json()["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "a"}]},
        "outputDimensionality": 2,
    }
    assert [v[0] for v in out.vectors] == [float(n) for n in range(1, 251)]
    assert out.usage is None  # Gemini reports none: the gateway estimates


def test_gemini_refuses_token_arrays_and_one_failed_batch_fails_all() -> None:
    adapter = GeminiAdapter(provider("gemini"), MockTransport(gemini_answer))
    with pytest.raises(Unservable, match="text only"):
        asyncio.run(adapter.embed(call("gemini-embedding-001", [[1, 2]])))
    calls = 0

    def second_fails(request: MockRequest) -> MockResponse:
        nonlocal calls
        calls += 1
        if calls == 2:
            return MockResponse(
                503, b'{"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}'
            )
        return gemini_answer(request)

    adapter = GeminiAdapter(provider("gemini"), MockTransport(second_fails))
    with pytest.raises(UpstreamError) as err:
        asyncio.run(adapter.embed(call("gemini-embedding-001", ["x"] * 150)))
    assert err.value.status == 503


def test_mock_vectors_are_deterministic_unit_vectors_of_the_asked_size() -> None:
    adapter = MockAdapter(provider("mock"))
    a = asyncio.run(adapter.embed(call("echo", ["hello", "world", [1, 2]], dims=8)))
    b = asyncio.run(adapter.embed(call("echo", ["hello"], dims=8)))
    assert a.vectors[0] == b.vectors[0] == vector("hello", 8)
    assert a.vectors[0] != a.vectors[1]
    assert all(len(v) == 8 and abs(sum(x * x for x in v) - 1) < 1e-9 for v in a.vectors)
    assert a.usage is not None and a.usage.input_tokens == 2 + 2 + 2
    c = asyncio.run(adapter.embed(call("echo", ["hello"], dims=8, dimensions=3)))
    assert len(c.vectors[0]) == 3
    with pytest.raises(UpstreamError) as err:
        asyncio.run(adapter.embed(call("echo", ["mock:error 503"])))
    assert err.value.status == 503


def test_anthropic_has_no_embeddings() -> None:
    adapter = AnthropicAdapter(provider("anthropic"), MockTransport(gemini_answer))
    with pytest.raises(Unservable, match="no embeddings API"):
        asyncio.run(adapter.embed(call("claude", ["x"])))
