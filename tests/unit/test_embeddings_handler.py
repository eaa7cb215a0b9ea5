"""The embeddings handler in process (ASGI, no socket), over real adapters on the in-memory
transport: the answer in OpenAI's `CreateEmbeddingResponse` shape (float and base64), the one
record of each request, fallback (an upstream error, or vectors of the wrong size), and the
refusals."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest
from openai.types import CreateEmbeddingResponse

from runtime.adapters.mock import MockAdapter
from runtime.adapters.mock_embeddings import vector
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport
from runtime.adapters.openai import OpenAIAdapter
from runtime.adapters.openai_embeddings import decode_vector, encode_vector
from runtime.config import ModelConfig, Price, ProviderConfig, RouteConfig
from runtime.embeddings import EmbeddingsHandler
from runtime.limits import LocalLimiter
from runtime.metrics import Metrics
from runtime.records import EMBEDDINGS_ENDPOINT
from runtime.router import Router
from runtime.services import Services
from tests.unit.scripted import TOKEN, ListSink, OneKey, Response, config, post, route

DIMS = 4


def emb(name: str, upstream: str, dims: int = DIMS) -> ModelConfig:
    caps = frozenset({"embeddings"})
    return ModelConfig(name, upstream, 8192, None, caps, Price(0.02, 0.0), dims)


def prov(pid: str, adapter: str, *models: ModelConfig) -> ProviderConfig:
    creds = {} if adapter == "mock" else {"api_key": "OAI_KEY"}
    return ProviderConfig(
        pid, adapter, "https://oai.test/v1", creds, False, 5.0, 1.0, {m.name: m for m in models}
    )


OAI = prov("oai", "openai", emb("small", "text-embedding-3-small"))
MOCK = prov("mock", "mock", emb("echo", "echo"))


def emb_route(name: str, cands: list[tuple[str, str]]) -> RouteConfig:
    return dataclasses.replace(route(name, cands), kind="embeddings")


class Upstream:
    """OpenAI's embeddings API in memory: scripted statuses first, then answers of `size`."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.size = DIMS
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: MockRequest) -> MockResponse:
        body = request.json()
        self.requests.append(body)
        if self.script:
            status = self.script.pop(0)
            err = {"error": {"message": "injected", "type": "server_error", "code": None}}
            return MockResponse(status, orjson.dumps(err))
        data = [
            {"object": "embedding", "index": i, "embedding": encode_vector([0.5] * self.size)}
            for i in range(len(body["input"]))
        ]
        usage = {"prompt_tokens": 7, "total_tokens": 7}
        doc = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return MockResponse(200, orjson.dumps(doc))


def make() -> tuple[EmbeddingsHandler, ListSink, Upstream]:
    cfg = config(
        [OAI, MOCK],
        [
            emb_route("vectors", [("oai", "small"), ("mock", "echo")]),
            route("chat", [("oai", "small")]),
        ],
    )
    upstream = Upstream()
    adapters: dict[str, Any] = {
        "oai": OpenAIAdapter(OAI, MockTransport(upstream)),
        "mock": MockAdapter(MOCK),
    }
    router = Router(cfg, adapters, {"oai": {"api_key": "sk-up"}, "mock": {}})
    sink = ListSink()
    services = Services(cfg, router, LocalLimiter(cfg.limits, 1), sink, Metrics(), OneKey())
    return EmbeddingsHandler(services), sink, upstream


def call(body: dict[str, Any], token: str = TOKEN) -> tuple[Response, ListSink, Upstream]:
    handler, sink, upstream = make()
    return asyncio.run(post(handler, body, token)), sink, upstream  # type: ignore[arg-type]


def call_with(
    upstream_script: list[int], size: int, body: dict[str, Any]
) -> tuple[Response, ListSink]:
    handler, sink, upstream = make()
    upstream.script, upstream.size = upstream_script, size
    return asyncio.run(post(handler, body)), sink  # type: ignore[arg-type]


def test_float_answer_in_openai_shape_and_its_record() -> None:
    resp, sink, upstream = call(
        {"model": "vectors", "input": ["a", "b"], "encoding_format": "float"}
    )
    assert resp.status == 200
    doc = resp.json()
    CreateEmbeddingResponse.model_validate(doc)
    assert doc == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5] * DIMS},
            {"object": "embedding", "index": 1, "embedding": [0.5] * DIMS},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    assert upstream.requests[0]["dimensions"] == DIMS
    assert resp.headers["x-switchyard-provider"] == "oai"
    [rec] = sink.records
    assert rec.request_id == resp.headers["x-request-id"]
    assert (rec.endpoint, rec.status, rec.route, rec.provider) == (
        EMBEDDINGS_ENDPOINT,
        200,
        "vectors",
        "oai",
    )
    assert (rec.input_tokens, rec.output_tokens, rec.usage_estimated) == (7, 0, False)
    assert rec.cost_usd == pytest.approx(7 * 0.02 / 1_000_000)


def test_base64_answer_is_what_the_sdk_decodes() -> None:
    resp, _, _ = call({"model": "vectors", "input": "a", "encoding_format": "base64"})
    [item] = resp.json()["data"]
    assert isinstance(item["embedding"], str)
    assert decode_vector(item["embedding"]) == [0.5] * DIMS


def test_an_upstream_error_falls_back_with_every_attempt_recorded() -> None:
    resp, sink = call_with([503], DIMS, {"model": "vectors", "input": ["hello"]})
    assert resp.status == 200
    assert resp.headers["x-switchyard-provider"] == "mock"
    assert resp.json()["data"][0]["embedding"] == vector("hello", DIMS)
    [rec] = sink.records
    assert rec.fell_back
    assert [(a["provider"], a["outcome"], a.get("status")) for a in rec.attempts] == [
        ("oai", "server_error", 503),
        ("mock", "ok", None),
    ]


def test_vectors_of_another_size_are_never_passed_on() -> None:
    resp, sink = call_with([], DIMS + 1, {"model": "vectors", "input": ["hello"]})
    assert resp.status == 200
    assert resp.headers["x-switchyard-provider"] == "mock"
    [rec] = sink.records
    assert rec.attempts[0]["code"] == "upstream_malformed"


def test_a_chat_route_is_refused_naming_the_endpoint_and_recorded() -> None:
    resp, sink, upstream = call({"model": "chat", "input": "x"})
    assert resp.status == 400
    assert resp.json()["error"]["code"] == "wrong_endpoint"
    assert "/v1/chat/completions" in resp.json()["error"]["message"]
    assert resp.headers["x-should-retry"] == "false"
    assert upstream.requests == []
    [rec] = sink.records
    assert (rec.endpoint, rec.status, rec.error_code, rec.key_id) == (
        EMBEDDINGS_ENDPOINT,
        400,
        "wrong_endpoint",
        "k1",
    )


def test_bad_key_and_bad_body() -> None:
    resp, sink, _ = call({"model": "vectors", "input": "x"}, token="nope")
    assert resp.status == 401
    assert sink.records[0].status == 401
    resp, _, _ = call({"model": "vectors", "input": []})
    assert (resp.status, resp.json()["error"]["param"]) == (400, "input")


def test_every_candidate_failing_answers_the_last_error() -> None:
    handler, sink, upstream = make()
    upstream.script = [500]
    resp = asyncio.run(post(handler, {"model": "oai/small", "input": "x"}))  # type: ignore[arg-type]
    assert resp.status == 502
    assert resp.json()["error"]["code"] == "upstream_error"
    assert sink.records[0].attempts[0]["outcome"] == "server_error"
