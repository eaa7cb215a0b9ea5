"""The request matrix every adapter is held to: OpenAI chat-completions bodies as clients send
them, covering what issue 11 names (system and developer messages, tool turns, rich JSON
Schema, every `tool_choice`, parallel tool calls, images, JSON modes, stop sequences,
sampling, output limits, `n`, `reasoning_effort`, streaming with usage, a prompt near the
window, a system-only request, and the reasoning fields the gateway hands back).

Each adapter's conformance test (tests/conformance/test_*_requests.py) runs every case
through the adapter with `capture` and validates the upstream body it emits against that
provider's official SDK request type. A case is `(body, stream)`; the model is `MODEL` (every
capability, a 200,000-token window, 64,000 output tokens) unless the test says otherwise.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from runtime.adapters import Call
from runtime.adapters.mock_transport import MockRequest, MockResponse, MockTransport
from runtime.adapters.transport_base import ConnectError
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import Unservable, UpstreamError

MODEL = ModelConfig(
    "m",
    "upstream-m",
    200_000,
    64_000,
    frozenset(
        {
            "streaming",
            "tools",
            "parallel_tool_calls",
            "vision",
            "json_mode",
            "json_schema",
            "reasoning",
        }
    ),
    None,
)

PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

# A schema with everything the Gemini conversion got wrong: a nullable enum, oneOf, anyOf,
# $defs/$ref and additionalProperties.
RICH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "priority": {"type": ["string", "null"], "enum": ["low", "high", None]},
        "target": {
            "oneOf": [
                {"type": "object", "properties": {"email": {"type": "string"}},
                 "required": ["email"]},
                {"type": "object", "properties": {"phone": {"type": "string"}},
                 "required": ["phone"]},
            ]
        },
        "due": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        "address": {"$ref": "#/$defs/address"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["priority", "target", "due", "address", "tags", "labels"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            "required": ["street", "city"],
            "additionalProperties": False,
        }
    },
}  # fmt: skip

RICH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "create_ticket",
        "description": "Open a support ticket.",
        "parameters": RICH_SCHEMA,
        "strict": True,
    },
}

TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_paris_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_rome_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_paris_1", "content": "18 C, cloudy"},
    {"role": "tool", "tool_call_id": "call_rome_1", "content": "24 C, sunny"},
    {"role": "user", "content": "And tomorrow?"},
]


def provider_config(
    adapter: str, base_url: str, timeout_s: float, *models: ModelConfig
) -> ProviderConfig:
    """A provider of `adapter` at `base_url` (id = adapter, key in <ADAPTER>_API_KEY)."""
    return ProviderConfig(
        id=adapter,
        adapter=adapter,
        base_url=base_url,
        credentials={"api_key": f"{adapter.upper()}_API_KEY"},
        credentials_optional=False,
        timeout_s=timeout_s,
        connect_timeout_s=1.0,
        models={m.name: m for m in models},
    )


def user(text: str = "Hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def body(**fields: Any) -> dict[str, Any]:
    """A chat-completions body for route `r`; `messages` defaults to one user turn."""
    out: dict[str, Any] = {"model": "r", "messages": user()}
    out.update(fields)
    return out


CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "plain": (body(), False),
    "system": (body(messages=[{"role": "system", "content": "Be brief."}, *user()]), False),
    "developer": (
        body(messages=[{"role": "developer", "content": "Answer in French."}, *user()]),
        False,
    ),
    "system_parts": (
        body(
            messages=[
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ]
        ),
        False,
    ),
    "system_only": (body(messages=[{"role": "system", "content": "Say hello."}]), False),
    "multi_turn": (
        body(
            messages=[
                *user("Hi"),
                {"role": "assistant", "content": "Hello! How can I help?"},
                *user("Tell me a joke."),
            ]
        ),
        False,
    ),
    "tool_results": (body(messages=TOOL_TURNS, tools=[WEATHER_TOOL]), False),
    "rich_schema_tool": (body(tools=[RICH_TOOL]), False),
    "tool_choice_auto": (body(tools=[WEATHER_TOOL], tool_choice="auto"), False),
    "tool_choice_none": (body(tools=[WEATHER_TOOL], tool_choice="none"), False),
    "tool_choice_required": (body(tools=[WEATHER_TOOL], tool_choice="required"), False),
    "tool_choice_named": (
        body(
            tools=[WEATHER_TOOL, RICH_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        ),
        False,
    ),
    "parallel_tool_calls_off": (
        body(tools=[WEATHER_TOOL], parallel_tool_calls=False),
        False,
    ),
    "image_url": (
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
                        },
                    ],
                }
            ]
        ),
        False,
    ),
    "image_base64": (
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"},
                        },
                    ],
                }
            ]
        ),
        False,
    ),
    "json_object": (
        body(
            messages=[{"role": "system", "content": "Reply in JSON."}, *user()],
            response_format={"type": "json_object"},
        ),
        False,
    ),
    "json_schema_strict": (
        body(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "ticket", "schema": RICH_SCHEMA, "strict": True},
            }
        ),
        False,
    ),
    "stop_newline": (body(stop="\n"), False),
    "stop_list": (body(stop=["END", " ", "\n\n", "STOP"]), False),
    "sampling_both": (body(temperature=0.2, top_p=0.9), False),
    "temperature": (body(temperature=1.5), False),
    "top_p": (body(top_p=0.5), False),
    "penalties_seed": (
        body(presence_penalty=0.5, frequency_penalty=0.3, seed=7, user="u-42"),
        False,
    ),
    "max_tokens": (body(max_tokens=256), False),
    "max_completion_tokens": (body(max_completion_tokens=512), False),
    "both_limits": (body(max_tokens=256, max_completion_tokens=512), False),
    "n_2": (body(n=2), False),
    "reasoning_low": (body(reasoning_effort="low"), False),
    "reasoning_medium": (body(reasoning_effort="medium", max_completion_tokens=8000), False),
    "reasoning_high": (body(reasoning_effort="high"), False),
    "reasoning_round_trip": (
        body(
            messages=[
                *user("What is 17 * 23?"),
                {
                    "role": "assistant",
                    "content": "391",
                    "reasoning_content": "17 * 23 = 391",
                    "thinking_blocks": [
                        {"type": "thinking", "thinking": "17 * 23 = 391", "signature": "c2ln"}
                    ],
                },
                *user("And 18 * 23?"),
            ],
            reasoning_effort="low",
        ),
        False,
    ),
    "tool_call_extras": (
        body(
            messages=[
                *user("Weather in Paris?"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_g_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                            "extra_content": {"google": {"thought_signature": "dGhvdWdodA=="}},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_g_1", "content": "18 C"},
            ],
            tools=[WEATHER_TOOL],
        ),
        False,
    ),
    "logprobs": (body(logprobs=True, top_logprobs=3), False),
    "stream_usage": (body(stream=True, stream_options={"include_usage": True}), True),
    "stream_tools": (body(stream=True, tools=[WEATHER_TOOL], messages=TOOL_TURNS), True),
    "near_window": (body(messages=user("word " * 150_000)), False),
    "cache_control": (
        body(
            messages=[
                {
                    "role": "system",
                    "content": [
                        {
                            "type": "text",
                            "text": "A long reference document.",
                            "cache_control": {"type": "ephemeral", "ttl": "1h"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "Summarise it.",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
            ],
            tools=[{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}}],
        ),
        False,
    ),
    "reasoning_none": (body(reasoning_effort="none"), False),
    "reasoning_minimal": (body(reasoning_effort="minimal"), False),
    "reasoning_xhigh": (body(reasoning_effort="xhigh", max_completion_tokens=4000), False),
    "reasoning_json_schema": (
        body(
            reasoning_effort="medium",
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "strict": True,
                    "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                },
            },
        ),
        False,
    ),
}


def capture(
    adapter_class: Any,
    provider: ProviderConfig,
    request: dict[str, Any],
    stream: bool,
    model: ModelConfig = MODEL,
    credentials: dict[str, str] | None = None,
) -> tuple[MockRequest | None, Call, str | None]:
    """Run `request` through the adapter and return the upstream request it sent (None when it
    sent nothing), the call (with its notes), and the reason when the adapter refused the
    candidate (`Unservable`)."""
    sent: list[MockRequest] = []

    def handler(req: MockRequest) -> MockResponse:
        sent.append(req)
        raise ConnectError("captured")

    adapter = adapter_class(provider, MockTransport(handler))
    call = Call(request, model, credentials or {"api_key": "test-key"}, "req_conformance")

    async def go() -> str | None:
        try:
            if stream:
                await adapter.open_stream(call)
            else:
                await adapter.complete(call)
        except Unservable as err:
            return err.message
        except UpstreamError:
            pass
        return None

    refused = asyncio.run(go())
    return (sent[0] if sent else None), call, refused
