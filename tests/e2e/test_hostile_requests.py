"""Hostile and malformed bodies against a running gateway (`python -m runtime serve` over the
fake providers): each is a 400 in OpenAI's error shape naming the field, with `x-request-id`
and a record; mutated valid requests never get a 500; the per-request cost cap cannot be
bypassed by the form `max_tokens` is sent in (issue 12, point 1)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Fakes
from tests.gateway_env import Gateway
from tests.unit.test_request_check import HOSTILE, encode, nested, nested_list


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


def post(gateway: Gateway, key: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=body,
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            raw = resp.read()
            status, headers = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    if headers.get("content-type", "").startswith("text/event-stream"):
        return status, {"stream": raw.decode()}, headers
    return status, json.loads(raw), headers


def assert_openai_error(status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str)
    assert headers["x-request-id"].startswith("req_")
    if status == 400:
        assert body["error"]["type"] == "invalid_request_error"


def routed(body: dict[str, Any], model: str = "offline") -> dict[str, Any]:
    return {**body, "model": model} if body.get("model") == "chat" else body


@pytest.mark.parametrize(
    ("body", "param"), [(b, p) for _, b, p in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_each_malformed_body_is_a_400_naming_the_field(
    gateway: Gateway, key: str, body: dict[str, Any], param: str
) -> None:
    status, answer, headers = post(gateway, key, encode(routed(body)))
    assert status == 400, answer
    assert_openai_error(status, answer, headers)
    assert answer["error"]["param"] == param
    assert headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("body", "param_prefix"),
    [
        ({"vendor": nested(300)}, "vendor.a"),
        ({"tools": nested_list(1000)}, "tools"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": nested(1000)}}
                ]
            },
            "tools[0].function.parameters",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "x": nested(1000)}]}
                ]
            },
            "messages[0].content[0].x",
        ),
        ({"messages": [{"role": "user", "content": nested_list(1000)}]}, "messages[0].content"),
    ],
)
def test_deep_nesting_is_a_400_and_recorded(
    gateway: Gateway, key: str, body: dict[str, Any], param_prefix: str
) -> None:
    full = {"model": "offline", "messages": [{"role": "user", "content": "hi"}], **body}
    status, answer, headers = post(gateway, key, encode(full))
    assert status == 400, answer
    assert_openai_error(status, answer, headers)
    assert answer["error"]["param"].startswith(param_prefix)
    rec = gateway.record(headers["x-request-id"])
    assert (rec["status"], rec["error_code"], rec["requested_model"]) == (
        400,
        "invalid_request",
        "offline",
    )


def test_a_string_stream_does_not_stream(gateway: Gateway, key: str) -> None:
    body = {"model": "offline", "messages": [{"role": "user", "content": "hi"}], "stream": "false"}
    status, answer, headers = post(gateway, key, orjson.dumps(body))
    assert status == 400 and answer["error"]["param"] == "stream"
    assert headers["content-type"] == "application/json"
    assert gateway.record(headers["x-request-id"])["stream"] == 0


def test_a_huge_model_name_is_neither_echoed_nor_stored_whole(gateway: Gateway, key: str) -> None:
    model = "m" * 5_000_000
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    status, answer, headers = post(gateway, key, body)
    assert status == 400 and answer["error"]["param"] == "model"
    assert len(json.dumps(answer)) < 1000
    rec = gateway.record(headers["x-request-id"])
    assert rec["requested_model"] == "m" * 64 + "..."


# -- the per-request cost cap: route `capped` ($0.005) over claude ($15/M output) and
# gpt-small ($0.6/M output); 10,000 output tokens on gpt-small cost $0.006, over the cap.


@pytest.mark.parametrize(
    "limits",
    [
        {"max_tokens": 10000},
        {"max_tokens": 10000.0},
        {"max_completion_tokens": 10000.0},
        {"max_tokens": 10000, "max_completion_tokens": None},
        {"max_tokens": 10000, "max_completion_tokens": 10000},
    ],
    ids=["int", "float", "float_newer", "null_beside", "both_equal"],
)
def test_the_cost_cap_holds_whatever_the_form_of_the_limit(
    gateway: Gateway, key: str, limits: dict[str, Any]
) -> None:
    body = {"model": "capped", "messages": [{"role": "user", "content": "hi"}], **limits}
    status, answer, _ = post(gateway, key, orjson.dumps(body))
    assert status == 400, answer
    assert answer["error"]["code"] == "no_candidate"
    assert "over the route's cap" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("limits", "param"),
    [
        ({"max_tokens": "10000"}, "max_tokens"),
        ({"max_tokens": 10000, "max_completion_tokens": 10}, "max_tokens"),
        ({"max_tokens": 10, "max_completion_tokens": 10000}, "max_tokens"),
        ({"max_completion_tokens": 10000.5}, "max_completion_tokens"),
    ],
)
def test_limits_the_cap_cannot_read_are_refused(
    gateway: Gateway, key: str, limits: dict[str, Any], param: str
) -> None:
    body = {"model": "capped", "messages": [{"role": "user", "content": "hi"}], **limits}
    status, answer, _ = post(gateway, key, orjson.dumps(body))
    assert status == 400 and answer["error"]["param"] == param


def test_a_small_limit_is_served_under_the_cap(gateway: Gateway, key: str) -> None:
    body = {"model": "capped", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50.0}
    status, answer, _ = post(gateway, key, orjson.dumps(body))
    assert status == 200, answer


@pytest.mark.parametrize("route", ["solo", "gemini-first", "anthropic-first"])
def test_every_adapter_sends_the_limit_the_cap_used(
    gateway: Gateway, key: str, clean_fakes: Fakes, route: str
) -> None:
    """`max_completion_tokens: null` beside `max_tokens: 10` used to reach OpenAI as
    `max_completion_tokens: null` and Gemini as no limit at all; `10.0` as a float."""
    for limits in ({"max_tokens": 10, "max_completion_tokens": None}, {"max_tokens": 10.0}):
        body = {"model": route, "messages": [{"role": "user", "content": "hi"}], **limits}
        status, answer, _ = post(gateway, key, orjson.dumps(body))
        assert status == 200, answer
        if route == "solo":
            sent = clean_fakes.openai.requests[-1].body
            assert sent["max_tokens"] == 10 and type(sent["max_tokens"]) is int
            assert "max_completion_tokens" not in sent
        elif route == "gemini-first":
            config = clean_fakes.gemini.requests[-1].body["generationConfig"]
            assert config["maxOutputTokens"] == 10 and type(config["maxOutputTokens"]) is int
        else:
            sent = clean_fakes.anthropic.requests[-1].body
            assert sent["max_tokens"] == 10 and type(sent["max_tokens"]) is int


# -- mutated valid requests never get a 500 ------------------------------------------------

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
VALID: list[dict[str, Any]] = [
    {"model": "offline", "messages": [{"role": "user", "content": "hi"}]},
    {
        "model": "solo",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ],
        "tools": [TOOL],
        "tool_choice": "auto",
        "max_tokens": 50,
    },
    {
        "model": "anthropic-first",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
    },
    {
        "model": "gemini-first",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {"type": "object"}},
        },
        "n": 1,
        "stop": ["END"],
        "metadata": {"k": "v"},
    },
]

INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what JSON (orjson) carries
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.just("x" * 300_000),
    st.lists(st.one_of(INTS, st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(INTS, st.text(max_size=5)), max_size=3),
    st.sampled_from([nested(70), nested(300), nested_list(1000), nested_list(65)]),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (keys and indexes), the value itself included."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(paths(v, (*prefix, i)))
    return found


def mutate(body: dict[str, Any], path: tuple[Any, ...], junk: Any, add: bool) -> Any:
    """`body` with the value at `path` replaced by `junk` (or, with `add`, a new field
    `zz_extra` set to `junk` in the object at `path`)."""
    body = json.loads(json.dumps(body))
    if not path:
        return {**body, "zz_extra": junk} if add else junk
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    target = parent[path[-1]]
    if add and isinstance(target, dict):
        target["zz_extra"] = junk
    else:
        parent[path[-1]] = junk
    return body


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_requests_never_get_a_500(gateway: Gateway, key: str, data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(VALID))
    path = data.draw(st.sampled_from(paths(body)))
    mutated = mutate(body, path, data.draw(JUNK), data.draw(st.booleans()))
    status, answer, headers = post(gateway, key, encode(mutated))
    assert status != 500, (mutated if len(str(mutated)) < 2000 else path, answer)
    assert headers["x-request-id"].startswith("req_")
    if status != 200:
        assert_openai_error(status, answer, headers)
        assert answer["error"]["code"] != "internal_error"


def test_the_gateway_is_still_up_after_all_this(gateway: Gateway, key: str) -> None:
    with urllib.request.urlopen(gateway.url + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    status, _, _ = post(gateway, key, orjson.dumps(VALID[0]))
    assert status == 200
