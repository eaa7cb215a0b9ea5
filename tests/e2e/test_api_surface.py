"""What every client meets before any model answers: model lookup by id (URL-encoded
`provider/model` ids too), 404s for paths the gateway does not serve in the API's error
shape listing what it serves, and an `x-request-id` on every response."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import openai
import pytest

from tests.gateway_env import Gateway


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


def _get(
    gateway: Gateway, path: str, key: str | None = None, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(gateway.url + path, method=method)
    if key is not None:
        req.add_header("authorization", f"Bearer {key}")
    for k, v in headers.items():
        req.add_header(k.replace("_", "-"), v)
    if method == "POST":
        req.data = b"{}"
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status, head = resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        raw = err.read()
        status, head = err.code, {k.lower(): v for k, v in err.headers.items()}
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode()
    return status, head, body


@pytest.mark.parametrize("model_id", ["chat", "offline", "openai/gpt", "mock/echo"])
def test_the_openai_sdk_retrieves_every_listed_model(
    model_id: str, gateway: Gateway, key: str
) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    listed = {m.id for m in client.models.list()}
    assert model_id in listed
    raw = client.models.with_raw_response.retrieve(model_id)
    model = raw.parse()
    assert model.id == model_id
    assert model.object == "model"
    assert raw.headers["x-request-id"].startswith("req_")


def test_a_provider_model_id_may_come_url_encoded_or_not(gateway: Gateway, key: str) -> None:
    for path in ("/v1/models/openai%2Fgpt", "/v1/models/openai/gpt"):
        status, _, body = _get(gateway, path, key)
        assert status == 200, body
        assert body["id"] == "openai/gpt"


def test_an_unknown_model_is_a_404_in_openais_shape(gateway: Gateway, key: str) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("openai/no-such-model")
    body: Any = err.value.body
    assert body["code"] == "model_not_found"
    assert "GET /v1/models" in body["message"]
    assert err.value.response.headers["x-request-id"].startswith("req_")


def test_model_lookup_needs_a_key(gateway: Gateway) -> None:
    status, head, body = _get(gateway, "/v1/models/chat")
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    assert head["x-request-id"].startswith("req_")


def test_model_lookup_is_recorded(gateway: Gateway, key: str) -> None:
    status, head, _ = _get(gateway, "/v1/models/chat", key)
    assert status == 200
    rec = gateway.record(head["x-request-id"])
    assert rec["endpoint"] == "/v1/models"
    assert rec["status"] == 200


def test_the_anthropic_sdk_retrieves_a_model_in_anthropics_shape(
    gateway: Gateway, key: str
) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    info = client.models.retrieve("chat")
    assert info.id == "chat"
    assert info.type == "model"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/completions"),  # legacy completions: not served
        ("GET", "/v1/files"),
        ("POST", "/v1/audio/speech"),
        ("GET", "/nothing-here"),
    ],
)
def test_an_unknown_path_is_a_404_saying_what_is_served(
    method: str, path: str, gateway: Gateway, key: str
) -> None:
    status, head, body = _get(gateway, path, key, method=method)
    assert status == 404
    err = body["error"]
    assert err["code"] == "not_found"
    assert err["type"] == "not_found_error"
    for served in (
        "POST /v1/chat/completions",
        "POST /v1/responses",
        "POST /v1/messages",
        "POST /v1/embeddings",
        "GET /v1/models",
    ):
        assert served in err["message"]
    assert head["x-request-id"].startswith("req_")


def test_the_openai_sdk_sees_a_404_for_legacy_completions(gateway: Gateway, key: str) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="chat", prompt="hi")
    assert "POST /v1/chat/completions" in str(err.value)


def test_an_unknown_messages_path_answers_in_anthropics_shape(gateway: Gateway, key: str) -> None:
    status, _, body = _get(gateway, "/v1/messages/batches", key, method="POST")
    assert status == 404
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("method", "path", "with_key"),
    [
        ("GET", "/healthz", False),
        ("GET", "/readyz", False),
        ("GET", "/metrics", False),
        ("GET", "/v1/models", True),
        ("GET", "/v1/models", False),
        ("GET", "/v1/chat/completions", True),  # 405
        ("GET", "/v1/responses", True),  # 405
        ("POST", "/v1/embeddings", False),  # 401
        ("POST", "/v1/messages", False),  # 401
        ("POST", "/v1/messages/count_tokens", False),  # 401
        ("POST", "/v1/unknown", True),  # 404
    ],
)
def test_every_response_carries_a_request_id(
    method: str, path: str, with_key: bool, gateway: Gateway, key: str
) -> None:
    _, head, _ = _get(gateway, path, key if with_key else None, method=method)
    assert head.get("x-request-id", "").startswith("req_"), (path, head)


def test_the_anthropic_sdk_lists_models_in_anthropics_shape(gateway: Gateway, key: str) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert "chat" in ids and "openai/gpt" in ids
    assert all(m.type == "model" and m.display_name == m.id for m in page.data)
    assert page.has_more is False
    assert (page.first_id, page.last_id) == (ids[0], ids[-1])


def test_a_stored_response_lookup_says_nothing_is_stored(gateway: Gateway, key: str) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.retrieve("resp_123")
    assert "does not store responses" in str(err.value)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_123")
