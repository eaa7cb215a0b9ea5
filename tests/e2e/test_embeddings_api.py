"""`POST /v1/embeddings` end to end with the official openai SDK (`client.embeddings.create`),
against an in-process gateway (uvicorn on 127.0.0.1, the real transport and adapters) over
the fake OpenAI and Gemini embeddings APIs (tests/fakes/embeddings_fake.py).

The gateway here is the embeddings and chat handlers behind a tiny ASGI app of this test
(runtime/app.py wires `/v1/embeddings` into the real app); records go to a list.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import uvicorn

from runtime.adapters import ADAPTERS, Adapter
from runtime.adapters.transport import Transport
from runtime.chat import ChatHandler
from runtime.config import ModelConfig, Price, ProviderConfig, RouteConfig, RuntimeConfig
from runtime.embeddings import EmbeddingsHandler
from runtime.limits import LocalLimiter
from runtime.metrics import Metrics
from runtime.records import EMBEDDINGS_ENDPOINT, RequestRecord
from runtime.router import Router
from runtime.services import Services
from tests.fakes.base import FakeProvider, Fault
from tests.fakes.embeddings_fake import (
    expected_vector,
    gemini_embeddings_fake,
    openai_embeddings_fake,
)
from tests.gateway_env import FAKE_KEYS, free_port, model_config
from tests.unit.scripted import TOKEN, ListSink, OneKey, config, route

DIMS = 256
PRICE = 0.02  # USD per 1M input tokens


def emb(name: str, upstream: str) -> ModelConfig:
    caps = frozenset({"embeddings"})
    return ModelConfig(name, upstream, 8192, None, caps, Price(PRICE, 0.0), DIMS)


def providers(openai_url: str, gemini_url: str) -> list[ProviderConfig]:
    def prov(pid: str, url: str | None, secret: str | None, *models: ModelConfig) -> ProviderConfig:
        creds = {"api_key": secret} if secret else {}
        return ProviderConfig(pid, pid, url, creds, False, 5.0, 1.0, {m.name: m for m in models})

    return [
        prov(
            "openai",
            openai_url + "/v1",
            "OPENAI_API_KEY",
            emb("small", "text-embedding-3-small"),
            model_config("gpt", "gpt-4o", ["streaming"]),
        ),
        prov(
            "gemini", gemini_url + "/v1beta", "GEMINI_API_KEY", emb("gemb", "gemini-embedding-001")
        ),
        prov("mock", None, None, emb("memb", "mock-embed")),
    ]


def emb_route(name: str, cands: list[tuple[str, str]]) -> RouteConfig:
    return dataclasses.replace(route(name, cands), kind="embeddings")


class InProcessGateway:
    """The embeddings and chat handlers over real services, built in the server's lifespan."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        self.sink = ListSink()
        self.transport: Transport | None = None
        self.embeddings: EmbeddingsHandler | None = None
        self.chat: ChatHandler | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self._start()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert self.transport is not None
                    await self.transport.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.embeddings is not None and self.chat is not None
        if scope["path"] == "/v1/embeddings":
            await self.embeddings(scope, receive, send)
        elif scope["path"] == "/v1/chat/completions":
            await self.chat(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    def _start(self) -> None:
        cfg = self.cfg
        self.transport = Transport(max_body=cfg.max_upstream_body_bytes)
        adapters: dict[str, Adapter] = {
            pid: ADAPTERS[p.adapter](p, self.transport) for pid, p in cfg.providers.items()
        }
        creds: dict[str, dict[str, str] | None] = {
            pid: {f: FAKE_KEYS[s] for f, s in p.credentials.items()}
            for pid, p in cfg.providers.items()
        }
        services = Services(
            cfg,
            Router(cfg, adapters, creds),
            LocalLimiter(cfg.limits, 1),
            self.sink,
            Metrics(),
            OneKey(),
        )
        self.embeddings = EmbeddingsHandler(services)
        self.chat = ChatHandler(services)


@dataclasses.dataclass
class Env:
    oai: FakeProvider
    gem: FakeProvider
    gateway: InProcessGateway
    client: openai.OpenAI

    def record(self) -> RequestRecord:
        deadline = time.monotonic() + 2
        while not self.gateway.sink.records and time.monotonic() < deadline:
            time.sleep(0.005)
        [rec] = self.gateway.sink.records
        return rec


@pytest.fixture(scope="module")
def started() -> Iterator[Env]:
    with openai_embeddings_fake() as oai, gemini_embeddings_fake() as gem:
        cfg = config(
            providers(oai.url, gem.url),
            [
                emb_route("vectors", [("openai", "small"), ("gemini", "gemb"), ("mock", "memb")]),
                emb_route("gemini-first", [("gemini", "gemb"), ("openai", "small")]),
                route("chat", [("openai", "gpt")]),
            ],
        )
        gw = InProcessGateway(cfg)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(gw, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        client = openai.OpenAI(api_key=TOKEN, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        try:
            yield Env(oai, gem, gw, client)
        finally:
            client.close()
            server.should_exit = True
            thread.join(10)


@pytest.fixture
def env(started: Env) -> Env:
    started.oai.reset()
    started.gem.reset()
    started.gateway.sink.records.clear()
    return started


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


def test_a_string_with_the_sdk_default_base64(env: Env) -> None:
    resp = env.client.embeddings.create(model="vectors", input="the quick brown fox")
    # The SDK asked for base64 (its default) and decoded it to floats itself.
    assert [d.index for d in resp.data] == [0]
    assert close(resp.data[0].embedding, expected_vector("the quick brown fox", DIMS))
    assert (resp.model, resp.usage.prompt_tokens, resp.usage.total_tokens) == (
        "text-embedding-3-small",
        4,
        4,
    )
    [sent] = env.oai.requests
    assert sent.path == "/v1/embeddings"
    assert sent.body["dimensions"] == DIMS and sent.body["encoding_format"] == "base64"
    rec = env.record()
    assert (rec.endpoint, rec.status, rec.route, rec.provider) == (
        EMBEDDINGS_ENDPOINT,
        200,
        "vectors",
        "openai",
    )
    assert (rec.input_tokens, rec.output_tokens, rec.usage_estimated) == (4, 0, False)
    assert rec.cost_usd == pytest.approx(4 * PRICE / 1_000_000)


def test_a_list_as_floats_keeps_the_order(env: Env) -> None:
    texts = ["one", "two words", "three more words"]
    resp = env.client.embeddings.create(model="vectors", input=texts, encoding_format="float")
    assert [d.index for d in resp.data] == [0, 1, 2]
    for d, text in zip(resp.data, texts, strict=True):
        assert close(d.embedding, expected_vector(text, DIMS))
    assert resp.usage.prompt_tokens == 6


def test_explicit_base64_is_left_to_the_client(env: Env) -> None:
    resp = env.client.embeddings.create(model="vectors", input="x", encoding_format="base64")
    assert isinstance(resp.data[0].embedding, str)  # the SDK leaves an explicit base64 alone


@pytest.mark.parametrize("tokens", [[15339, 1917], [[15339, 1917], [9906]]])
def test_token_arrays(env: Env, tokens: Any) -> None:
    resp = env.client.embeddings.create(model="vectors", input=tokens)
    arrays = tokens if isinstance(tokens[0], list) else [tokens]
    assert env.oai.requests[0].body["input"] == arrays
    for d, arr in zip(resp.data, arrays, strict=True):
        assert close(d.embedding, expected_vector(arr, DIMS))


def test_token_arrays_skip_gemini_which_embeds_text_only(env: Env) -> None:
    raw = env.client.embeddings.with_raw_response.create(model="gemini-first", input=[1, 2, 3])
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert env.gem.requests == []
    rec = env.record()
    assert rec.skipped == [
        {
            "provider": "gemini",
            "model": "gemb",
            "reason": "Gemini embeds text only (token arrays were sent)",
        }
    ]


def test_dimensions(env: Env) -> None:
    resp = env.client.embeddings.create(model="vectors", input="hello", dimensions=64)
    assert env.oai.requests[0].body["dimensions"] == 64
    assert close(resp.data[0].embedding, expected_vector("hello", 64))
    with pytest.raises(openai.BadRequestError) as err:
        env.client.embeddings.create(model="vectors", input="hello", dimensions=DIMS + 1)
    assert err.value.code == "no_candidate"
    assert f"dimensions {DIMS + 1} is over the model's {DIMS}" in err.value.message


def test_a_failing_first_candidate_falls_back_to_gemini(env: Env) -> None:
    env.oai.push(Fault("status", 503, "The server is overloaded"))
    raw = env.client.embeddings.with_raw_response.create(model="vectors", input=["a b", "c"])
    resp = raw.parse()
    assert raw.headers["x-switchyard-provider"] == "gemini"
    assert raw.headers["x-switchyard-attempts"] == "2"
    assert close(resp.data[1].embedding, expected_vector("c", DIMS))
    [sent] = env.gem.requests
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent.body["requests"][0]["outputDimensionality"] == DIMS
    rec = env.record()
    assert [(a["provider"], a["outcome"], a.get("status")) for a in rec.attempts] == [
        ("openai", "overloaded", 503),
        ("gemini", "ok", None),
    ]
    # Gemini reports no usage for embeddings: the gateway's estimate, flagged.
    assert (rec.input_tokens, rec.usage_estimated) == (2, True)
    assert resp.usage.prompt_tokens == 2
    assert rec.cost_usd == pytest.approx(2 * PRICE / 1_000_000)


def test_gemini_batches_of_100(env: Env) -> None:
    texts = [f"text {i}" for i in range(150)]
    resp = env.client.embeddings.create(model="gemini-first", input=texts)
    assert sorted(len(r.body["requests"]) for r in env.gem.requests) == [50, 100]
    assert [d.index for d in resp.data] == list(range(150))
    assert close(resp.data[149].embedding, expected_vector("text 149", DIMS))


def test_every_candidate_failing_is_one_error_in_openai_shape(env: Env) -> None:
    env.oai.push(Fault("status", 500))
    env.gem.push(Fault("status", 500))
    with pytest.raises(openai.APIStatusError) as err:
        env.client.embeddings.create(model="gemini-first", input="x")
    assert err.value.status_code == 502
    assert err.value.response.headers["x-request-id"].startswith("req_")
    rec = env.record()
    assert [a["outcome"] for a in rec.attempts] == ["server_error", "server_error"]


def test_a_chat_route_is_refused_on_embeddings(env: Env) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        env.client.embeddings.create(model="chat", input="x")
    assert err.value.code == "wrong_endpoint"
    assert "use POST /v1/chat/completions" in err.value.message
    assert env.oai.requests == []
    assert env.record().endpoint == EMBEDDINGS_ENDPOINT


def test_an_embeddings_route_is_refused_on_chat(env: Env) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        env.client.chat.completions.create(
            model="vectors", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.code == "wrong_endpoint"
    assert "use POST /v1/embeddings" in err.value.message


# --- the fakes themselves, proven with the providers' official SDKs ---------------------------


def test_the_openai_fake_speaks_what_the_openai_sdk_reads(env: Env) -> None:
    direct = openai.OpenAI(api_key=FAKE_KEYS["OPENAI_API_KEY"], base_url=env.oai.url + "/v1")
    resp = direct.embeddings.create(model="text-embedding-3-small", input=["a b"], dimensions=8)
    assert close(resp.data[0].embedding, expected_vector("a b", 8))
    assert resp.usage.prompt_tokens == 2
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        direct.embeddings.create(model="text-embedding-ada-002", input="a", dimensions=8)
    direct.close()


def test_the_gemini_fake_speaks_what_google_genai_sends_and_reads(env: Env) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key=FAKE_KEYS["GEMINI_API_KEY"], http_options=types.HttpOptions(base_url=env.gem.url)
    )
    resp = client.models.embed_content(
        model="gemini-embedding-001",
        contents=["hello", "world"],
        config=types.EmbedContentConfig(output_dimensionality=8),
    )
    assert resp.embeddings is not None
    assert [
        close(e.values or [], expected_vector(t, 8))
        for e, t in zip(resp.embeddings, ["hello", "world"], strict=True)
    ] == [True, True]
    [sent] = env.gem.requests
    assert sent.path.endswith("/models/gemini-embedding-001:batchEmbedContents")
