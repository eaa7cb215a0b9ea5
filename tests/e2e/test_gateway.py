"""The gateway as its users see it: the official openai SDK against `python -m runtime serve`,
in front of fake OpenAI, Anthropic and Gemini servers on loopback."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.conftest import Fakes
from tests.gateway_env import Gateway, run_cli

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ"
    "GAhKmMIQAAAABJRU5ErkJggg=="
)
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.key()


@pytest.fixture(scope="module")
def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=15)


def _user(text: str) -> Any:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("route", "provider", "greeting"),
    [
        ("chat", "openai", "Hello from fake-openai"),
        ("anthropic-first", "anthropic", "Hello from fake-anthropic"),
        ("gemini-first", "gemini", "Hello from fake-gemini"),
        ("offline", "mock", "echo: "),
    ],
)
def test_plain_completion_through_each_adapter(
    route: str,
    provider: str,
    greeting: str,
    gateway: Gateway,
    client: openai.OpenAI,
    clean_fakes: Fakes,
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=route, messages=_user("plain please")
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert (completion.choices[0].message.content or "").startswith(greeting)
    assert completion.choices[0].finish_reason == "stop"
    assert (
        completion.usage is not None
        and completion.usage.prompt_tokens > 0
        and completion.usage.completion_tokens > 0
    )
    assert raw.headers["x-switchyard-provider"] == provider
    assert raw.headers["x-switchyard-attempts"] == "1"
    assert raw.headers["x-switchyard-route"] == route
    assert raw.headers["x-switchyard-model"]
    rec = gateway.record(raw.headers["x-request-id"])
    assert (rec["status"], rec["provider"], rec["route"], rec["requested_model"]) == (
        200,
        provider,
        route,
        route,
    )
    assert rec["input_tokens"] == completion.usage.prompt_tokens
    assert rec["output_tokens"] == completion.usage.completion_tokens
    assert rec["usage_estimated"] == 0
    assert rec["key_id"] and rec["key_id"] in client.api_key
    assert client.api_key not in json.dumps(rec)


@pytest.mark.parametrize(
    ("route", "greeting"),
    [
        ("chat", "Hello from fake-openai"),
        ("anthropic-first", "Hello from fake-anthropic"),
        ("gemini-first", "Hello from fake-gemini"),
        ("offline", "echo: "),
    ],
)
def test_streaming_with_usage(
    route: str, greeting: str, gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=route,
        messages=_user("stream please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    text, usage, finish, ids = "", None, None, set()
    for chunk in raw.parse():
        ids.add(chunk.id)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text.startswith(greeting)
    assert finish == "stop"
    assert len(ids) == 1
    assert usage is not None and usage.completion_tokens > 0
    rec = gateway.record(raw.headers["x-request-id"])
    assert rec["stream"] == 1 and rec["status"] == 200
    assert rec["ttfb_ms"] is not None and rec["ttfb_ms"] <= rec["latency_ms"]
    assert rec["output_tokens"] == usage.completion_tokens


def test_stream_without_include_usage_sends_no_usage_chunk(
    client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    chunks = list(client.chat.completions.create(model="chat", messages=_user("x"), stream=True))
    assert all(c.usage is None for c in chunks)
    # Upstream was still asked for usage, so the record has real numbers.
    assert clean_fakes.openai.requests[-1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("route", ["chat", "anthropic-first", "gemini-first", "offline"])
def test_tool_calls(route: str, client: openai.OpenAI, clean_fakes: Fakes) -> None:
    completion = client.chat.completions.create(
        model=route, messages=_user("weather in Paris?"), tools=TOOLS
    )
    msg = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather"
    assert isinstance(json.loads(msg.tool_calls[0].function.arguments), dict)
    # Streamed: the deltas accumulate into the same call.
    args, name = "", None
    for chunk in client.chat.completions.create(
        model=route, messages=_user("weather in Paris?"), tools=TOOLS, stream=True
    ):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                name = tc.function.name if tc.function and tc.function.name else name
                args += (tc.function.arguments or "") if tc.function else ""
    assert name == "get_weather"
    assert isinstance(json.loads(args), dict)


def test_tool_result_round_trip_to_anthropic(client: openai.OpenAI, clean_fakes: Fakes) -> None:
    messages: Any = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    completion = client.chat.completions.create(
        model="anthropic-first", messages=messages, tools=TOOLS
    )
    assert completion.choices[0].message.content
    sent = clean_fakes.anthropic.requests[-1].body
    blocks = [
        b
        for m in sent["messages"]
        for b in (m["content"] if isinstance(m["content"], list) else [])
    ]
    assert any(b.get("type") == "tool_result" and b.get("tool_use_id") == "call_1" for b in blocks)


def test_image_parts_need_vision_and_reach_the_provider(
    client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    content: Any = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    completion = client.chat.completions.create(
        model="anthropic-first", messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content
    sent = clean_fakes.anthropic.requests[-1].body
    assert any(
        b.get("type") == "image"
        for m in sent["messages"]
        for b in m["content"]
        if isinstance(m["content"], list)
    )


def test_response_format_skips_candidates_without_json_support(
    gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    # anthropic-first: claude lacks json_mode, so openai serves it, with the reason recorded.
    raw = client.chat.completions.with_raw_response.create(
        model="anthropic-first",
        messages=_user("json please"),
        response_format={"type": "json_object"},
    )
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert clean_fakes.openai.requests[-1].body["response_format"] == {"type": "json_object"}
    assert clean_fakes.anthropic.requests == []
    rec = gateway.record(raw.headers["x-request-id"])
    assert rec["skipped"] == [
        {
            "provider": "anthropic",
            "model": "claude",
            "reason": "lacks json_mode (needed by this request)",
        }
    ]


def test_upstream_model_id_is_sent(client: openai.OpenAI, clean_fakes: Fakes) -> None:
    client.chat.completions.create(model="chat", messages=_user("x"))
    assert clean_fakes.openai.requests[-1].body["model"] == "gpt-4o-2024-08-06"
    assert clean_fakes.openai.requests[-1].headers["Authorization"] == "Bearer test-openai-key"


def test_explicit_provider_model(client: openai.OpenAI, clean_fakes: Fakes) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gemini/gemini", messages=_user("x")
    )
    assert raw.headers["x-switchyard-provider"] == "gemini"
    assert "x-switchyard-route" not in raw.headers


def test_models_lists_what_the_key_may_use(gateway: Gateway, client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "chat" in ids and "offline" in ids and "openai/gpt" in ids
    limited = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=gateway.key(org="limited"), max_retries=0
    )
    assert [m.id for m in limited.models.list()] == ["offline"]
    with pytest.raises(openai.PermissionDeniedError) as exc:
        limited.chat.completions.create(model="chat", messages=_user("x"))
    assert exc.value.code == "route_not_allowed"


def test_unknown_route_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="nope", messages=_user("x"))
    assert exc.value.code == "model_not_found"
    assert "chat" in exc.value.message


def test_invalid_requests_are_400(gateway: Gateway, key: str) -> None:
    for body, code in [
        (b"{not json", "invalid_json"),
        (b"[]", "invalid_request"),
        (b'{"model": "chat"}', "invalid_request"),
        (b'{"model": "chat", "messages": []}', "invalid_request"),
    ]:
        status, doc, _ = _post(gateway, body, key)
        assert status == 400 and doc["error"]["code"] == code, (body, doc)


def test_max_tokens_over_every_window_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="solo", messages=_user("x"), max_tokens=10_000_000)
    assert exc.value.code == "no_candidate"
    assert "output limit" in exc.value.message


def test_context_length_falls_back_only_to_larger_windows(
    gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    from tests.fakes.base import Fault

    clean_fakes.openai.push(
        Fault("status", status=400, message="This model's maximum context length is 16000 tokens.")
    )
    raw = client.chat.completions.with_raw_response.create(
        model="small-then-large", messages=_user("long")
    )
    rec = gateway.record(raw.headers["x-request-id"])
    # gpt-small overflowed; gpt has a larger window and is tried next.
    assert [(a["model"], a["outcome"]) for a in rec["attempts"]] == [
        ("gpt-small", "context_length"),
        ("gpt", "ok"),
    ]
    # Now both OpenAI models overflow: claude (200k) is next, and gemini would be too.
    clean_fakes.openai.push(
        Fault("status", status=400, message="This model's maximum context length is 16000 tokens."),
        Fault(
            "status", status=400, message="This model's maximum context length is 128000 tokens."
        ),
    )
    raw = client.chat.completions.with_raw_response.create(
        model="small-then-large", messages=_user("long")
    )
    rec = gateway.record(raw.headers["x-request-id"])
    assert [a["outcome"] for a in rec["attempts"]] == ["context_length", "context_length", "ok"]
    assert raw.headers["x-switchyard-provider"] == "anthropic"


def test_error_class_not_in_fallback_on_is_not_retried(
    gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    from tests.fakes.base import Fault

    clean_fakes.openai.push(Fault("status", status=429))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="no-fallback-on-429", messages=_user("x"))
    assert clean_fakes.anthropic.requests == []


def test_max_attempts_bounds_the_chain(client: openai.OpenAI, clean_fakes: Fakes) -> None:
    from tests.fakes.base import Fault

    clean_fakes.openai.push(Fault("status", status=500))
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="one-attempt", messages=_user("x"))
    assert exc.value.status_code == 502
    assert clean_fakes.anthropic.requests == []


def test_cheapest_orders_by_estimated_cost(client: openai.OpenAI, clean_fakes: Fakes) -> None:
    raw = client.chat.completions.with_raw_response.create(model="cheapest", messages=_user("x"))
    assert raw.headers["x-switchyard-provider"] == "gemini"


def test_cost_cap_skips_expensive_candidates(
    gateway: Gateway, client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="capped", messages=_user("x"), max_tokens=1000
    )
    assert raw.headers["x-switchyard-provider"] == "openai"
    rec = gateway.record(raw.headers["x-request-id"])
    assert (
        rec["skipped"][0]["provider"] == "anthropic"
        and "over the route's cap" in rec["skipped"][0]["reason"]
    )


def test_weighted_spreads_first_picks(client: openai.OpenAI, clean_fakes: Fakes) -> None:
    seen = {"openai": 0, "anthropic": 0}
    for _ in range(40):
        raw = client.chat.completions.with_raw_response.create(
            model="weighted", messages=_user("x")
        )
        seen[raw.headers["x-switchyard-provider"]] += 1
    assert seen["anthropic"] > seen["openai"] > 0


# --- keys -----------------------------------------------------------------------------------


def _post(
    gateway: Gateway, body: bytes, key: str | None, path: str = "/v1/chat/completions"
) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(
        gateway.url + path, data=body, method="POST", headers={"content-type": "application/json"}
    )
    if key is not None:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


BODY = json.dumps({"model": "offline", "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_auth_failures_are_401_and_recorded(gateway: Gateway, key: str) -> None:
    cases = {
        None: "missing_api_key",
        "sk-not-ours": "invalid_api_key",
        key[:-4] + "AAAA": "invalid_api_key",
        "sy_production_abcdefabcdef_" + "x" * 40: "key_wrong_environment",
    }
    for token, code in cases.items():
        status, doc, headers = _post(gateway, BODY, token)
        assert status == 401 and doc["error"]["code"] == code, (token, doc)
        assert doc["error"]["type"] == "authentication_error"
        rec = gateway.record(headers["x-request-id"])
        assert (rec["status"], rec["error_code"], rec["key_id"]) == (401, code, None)
        if token:
            assert token not in json.dumps(rec)
    status, doc, _ = _post(gateway, BODY, "sy_production_abcdefabcdef_" + "x" * 40)
    assert "production" in doc["error"]["message"] and "test" in doc["error"]["message"]


def test_revoked_and_rotated_keys(gateway: Gateway) -> None:
    import time

    old = gateway.key(name="rotating")
    new = gateway.key(name="rotating")
    time.sleep(1.5)  # the gateway picks up new keys within its refresh interval
    assert _post(gateway, BODY, old)[0] == 200
    assert _post(gateway, BODY, new)[0] == 200  # both active during rotation
    old_id = old.split("_")[2]
    run_cli("keys", "revoke", "--env", "test", old_id, "--data-dir", str(gateway.data_dir))
    time.sleep(1.5)
    status, doc, _ = _post(gateway, BODY, old)
    assert status == 401 and doc["error"]["code"] == "key_revoked"
    assert _post(gateway, BODY, new)[0] == 200


def test_health_readiness_metrics(gateway: Gateway, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="offline", messages=_user("x"))
    with urllib.request.urlopen(gateway.url + "/healthz") as resp:
        assert json.loads(resp.read())["status"] == "ok"
    with urllib.request.urlopen(gateway.url + "/readyz") as resp:
        assert json.loads(resp.read())["ready"] is True
    with urllib.request.urlopen(gateway.url + "/metrics") as resp:
        text = resp.read().decode()
    assert 'switchyard_requests_total{route="offline",provider="mock",status="200"}' in text
    assert "switchyard_request_duration_seconds_bucket" in text
    assert "switchyard_time_to_first_byte_seconds_bucket" in text
    assert 'switchyard_tokens_total{route="offline",provider="mock",direction="input"}' in text


def test_unknown_path_is_openai_shaped_404(gateway: Gateway) -> None:
    try:
        urllib.request.urlopen(gateway.url + "/v1/nothing")
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        assert json.loads(exc.read())["error"]["code"] == "not_found"


def test_stream_chunks_are_passed_on_as_they_arrive(
    client: openai.OpenAI, clean_fakes: Fakes
) -> None:
    """Chunks that arrive together are written together, but nothing waits for later ones."""
    import time

    from tests.fakes.base import Fault

    clean_fakes.openai.push(Fault("slow_stream", delay=0.25))
    arrivals: list[float] = []
    start = time.monotonic()
    for chunk in client.chat.completions.create(
        model="solo", messages=_user("slowly"), stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) >= 3
    # Each content chunk reached the client about 0.25 s after the previous one, not in a batch.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(g > 0.15 for g in gaps), gaps
    assert arrivals[0] < 0.2, arrivals
