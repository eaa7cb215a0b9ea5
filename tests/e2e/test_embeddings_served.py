"""`POST /v1/embeddings` as the deployed gateway serves it: `python -m runtime serve` (the real
app, its routing of paths) with an embedding route over the offline mock, driven by the
official openai SDK; the record it leaves. The adapters, batching and fallback over fake
providers are tests/e2e/test_embeddings_api.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Fakes
from tests.gateway_env import Gateway, model_config, route_config, runtime_config


@pytest.fixture(scope="module")
def embed_gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url)
    mock = config.providers["mock"]
    embed = dataclasses.replace(
        model_config("embed", "mock-embed", ["embeddings"], 8192, (0.02, 0.0), None),
        dimensions=64,
    )
    mock = dataclasses.replace(mock, models={**mock.models, "embed": embed})
    route = dataclasses.replace(route_config("embed", [("mock", "embed")]), kind="embeddings")
    config = dataclasses.replace(
        config,
        providers={**config.providers, "mock": mock},
        routes={**config.routes, "embed": route},
    ).with_hash()
    gw = Gateway(config, Path(tmp_path_factory.mktemp("embed-gateway")))
    gw.start()
    yield gw
    gw.stop()


def test_the_sdk_embeds_through_the_served_app(embed_gateway: Gateway) -> None:
    client = openai.OpenAI(
        base_url=embed_gateway.url + "/v1", api_key=embed_gateway.key(), max_retries=0
    )
    raw = client.embeddings.with_raw_response.create(model="embed", input=["one", "two"])
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 64 for d in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    again = client.embeddings.create(model="embed", input="one", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(result.data[0].embedding)
    rec = embed_gateway.record(raw.headers["x-request-id"])
    assert rec["endpoint"] == "/v1/embeddings"
    assert rec["status"] == 200
    assert rec["provider"] == "mock"
    assert rec["route"] == "embed"
    assert rec["input_tokens"] > 0


def test_a_chat_route_is_refused_on_embeddings_and_the_reverse(embed_gateway: Gateway) -> None:
    client = openai.OpenAI(
        base_url=embed_gateway.url + "/v1", api_key=embed_gateway.key(), max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="offline", input="x")
    assert "/v1/chat/completions" in str(err.value) or "chat" in str(err.value)
    with pytest.raises(openai.BadRequestError) as err2:
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "x"}])
    assert "/v1/embeddings" in str(err2.value)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="embed", input="x")
