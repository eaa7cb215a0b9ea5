"""The fake Gemini server speaks Google's wire format: proven with the official google-genai SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google import genai
from google.genai import errors, types

from tests.fakes.base import FakeProvider, Fault
from tests.fakes.gemini_fake import (
    DEFAULT_API_KEY,
    OVERLOADED_MESSAGE,
    RETRY_DELAY_S,
    gemini_fake,
    signature_for,
)

MODEL = "gemini-2.0-flash"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with gemini_fake() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture
def sdk(fake: FakeProvider) -> Iterator[genai.Client]:
    with client(fake) as c:
        yield c


def client(fake: FakeProvider, api_key: str = DEFAULT_API_KEY) -> genai.Client:
    """A real SDK client aimed at the fake (keep a reference: a collected Client closes itself)."""
    # A custom base_url plus an explicit api_version: the SDK sends to <base>/v1beta/models/...
    options = types.HttpOptions(
        base_url=fake.url, api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=api_key, http_options=options)


def test_generate_content_returns_the_echo_and_usage(fake: FakeProvider, sdk: genai.Client) -> None:
    resp = sdk.models.generate_content(
        model=MODEL,
        contents="What is the capital of France?",
        config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.2),
    )

    assert resp.text == "Hello from fake-gemini: What is the capital of France?"
    assert resp.candidates is not None
    assert resp.candidates[0].finish_reason == types.FinishReason.STOP
    assert resp.model_version == MODEL
    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    sent = fake.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == DEFAULT_API_KEY
    assert sent.body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert sent.body["generationConfig"] == {"temperature": 0.2}


def test_stream_accumulates_text_and_reports_usage(fake: FakeProvider, sdk: genai.Client) -> None:
    pieces = list(sdk.models.generate_content_stream(model=MODEL, contents="stream me"))

    assert len(pieces) >= 3
    assert "".join(p.text or "" for p in pieces) == "Hello from fake-gemini: stream me"
    last = pieces[-1]
    assert (
        last.candidates is not None and last.candidates[0].finish_reason == types.FinishReason.STOP
    )
    assert all(p.candidates and p.candidates[0].finish_reason is None for p in pieces[:-1])
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count
    assert fake.requests[-1].path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"


def test_declared_tools_get_a_function_call(fake: FakeProvider, sdk: genai.Client) -> None:
    weather = types.FunctionDeclaration(
        name="get_weather",
        description="Current weather",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"city": types.Schema(type=types.Type.STRING)},
            required=["city"],
        ),
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )

    resp = sdk.models.generate_content(model=MODEL, contents="Weather in Paris?", config=config)

    assert resp.function_calls is not None
    assert [(c.name, c.args) for c in resp.function_calls] == [("get_weather", {"city": "Paris"})]


def test_json_schema_tool_gets_a_call_with_id_and_thought_signature(
    fake: FakeProvider, sdk: genai.Client
) -> None:
    weather = types.FunctionDeclaration(
        name="get_weather",
        parameters_json_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )

    resp = sdk.models.generate_content(model=MODEL, contents="Weather in Paris?", config=config)

    assert resp.candidates and resp.candidates[0].content and resp.candidates[0].content.parts
    part = resp.candidates[0].content.parts[0]
    assert part.function_call is not None and part.function_call.id
    assert part.function_call.args == {"city": "Paris"}
    assert part.thought_signature is not None
    assert part.thought_signature.decode() == f"sig:{part.function_call.id}"
    assert signature_for(part.function_call.id)


@pytest.mark.parametrize("streamed", [False, True])
def test_include_thoughts_gets_a_thought_summary_counted_apart(
    fake: FakeProvider, sdk: genai.Client, streamed: bool
) -> None:
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
    )

    if streamed:
        pieces = list(
            sdk.models.generate_content_stream(model=MODEL, contents="2+2?", config=config)
        )
    else:
        pieces = [sdk.models.generate_content(model=MODEL, contents="2+2?", config=config)]

    parts = [p for r in pieces if r.candidates for p in r.candidates[0].content.parts or []]  # type: ignore[union-attr]
    assert [p.text for p in parts if p.thought] == ["Thinking about: 2+2?"]
    assert "".join(p.text or "" for p in parts if not p.thought) == "Hello from fake-gemini: 2+2?"
    usage = pieces[-1].usage_metadata
    assert usage is not None and usage.thoughts_token_count == 5
    assert usage.total_token_count == (
        (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0) + 5
    )


def test_a_function_response_turn_gets_text_not_another_call(
    fake: FakeProvider, sdk: genai.Client
) -> None:
    weather = types.FunctionDeclaration(name="get_weather", description="Current weather")
    contents = [
        types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
        types.Content(
            role="model",
            parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={}))],
        ),
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"t": 21})],
        ),
    ]
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )

    resp = sdk.models.generate_content(model=MODEL, contents=contents, config=config)

    assert resp.function_calls is None
    assert resp.text == "Hello from fake-gemini: Weather in Paris?"


def test_streamed_function_call(fake: FakeProvider, sdk: genai.Client) -> None:
    weather = types.FunctionDeclaration(
        name="get_weather",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"city": types.Schema(type=types.Type.STRING)},
            required=["city"],
        ),
    )
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[weather])])

    pieces = list(
        sdk.models.generate_content_stream(model=MODEL, contents="Weather?", config=config)
    )

    calls = [c for p in pieces for c in p.function_calls or []]
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert (
        pieces[-1].candidates and pieces[-1].candidates[0].finish_reason == types.FinishReason.STOP
    )


@pytest.mark.parametrize(
    ("status", "message", "kind", "google_status"),
    [
        (
            429,
            "Resource has been exhausted (e.g. check quota).",
            errors.ClientError,
            "RESOURCE_EXHAUSTED",
        ),
        (400, "Invalid JSON payload received.", errors.ClientError, "INVALID_ARGUMENT"),
        (404, "models/nope is not found for API version v1beta", errors.ClientError, "NOT_FOUND"),
        (500, "An internal error has occurred.", errors.ServerError, "INTERNAL"),
        (503, OVERLOADED_MESSAGE, errors.ServerError, "UNAVAILABLE"),
    ],
)
def test_error_statuses_raise_the_sdk_error(
    fake: FakeProvider,
    sdk: genai.Client,
    status: int,
    message: str,
    kind: type[errors.APIError],
    google_status: str,
) -> None:
    fake.push(Fault("status", status=status, message=message))

    with pytest.raises(kind) as info:
        sdk.models.generate_content(model=MODEL, contents="hi")

    assert info.value.code == status
    assert info.value.status == google_status
    assert info.value.message == message


def test_rate_limit_carries_google_retry_info(fake: FakeProvider, sdk: genai.Client) -> None:
    fake.push(Fault("status", status=429, message="quota"))

    with pytest.raises(errors.ClientError) as info:
        sdk.models.generate_content(model=MODEL, contents="hi")

    details = info.value.details["error"]["details"]
    assert details == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{RETRY_DELAY_S}s"}
    ]


def test_wrong_api_key_is_google_400_api_key_invalid(fake: FakeProvider) -> None:
    with client(fake, api_key="wrong-key") as wrong, pytest.raises(errors.ClientError) as info:
        wrong.models.generate_content(model=MODEL, contents="hi")

    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_stream_error_status_raises_before_any_piece(fake: FakeProvider, sdk: genai.Client) -> None:
    fake.push(Fault("status", status=503, message=OVERLOADED_MESSAGE))

    with pytest.raises(errors.ServerError) as info:
        list(sdk.models.generate_content_stream(model=MODEL, contents="hi"))

    assert info.value.code == 503


def test_responses_validate_as_sdk_types(fake: FakeProvider) -> None:
    """Every success body parses strictly into the SDK's pydantic GenerateContentResponse."""
    wire = fake.wire
    request = _FakeRequest(MODEL)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    doc = wire.completion(request, body)  # type: ignore[arg-type]

    parsed = types.GenerateContentResponse.model_validate(doc)

    assert parsed.text == "Hello from fake-gemini: hi"
    assert parsed.response_id == doc["responseId"]


class _FakeRequest:
    def __init__(self, model: str) -> None:
        self.match_info = {"rest": f"{model}:generateContent"}
