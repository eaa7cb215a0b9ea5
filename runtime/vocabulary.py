"""The words runtime.json and gateway.yaml share: adapters, capabilities, strategies, error
classes, log sinks and the providers' default base URLs — defined once, here.

A light module (standard library only): the compiler imports it to validate and document
gateway.yaml, the gateway to read runtime.json and classify upstream failures. Adding a word
here is a contract change: docs/runtime-config.md and the generated schema follow it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Adapter = Literal["openai", "openai-compatible", "anthropic", "gemini", "mock"]
ADAPTER_NAMES: Final[tuple[str, ...]] = get_args(Adapter)

Capability = Literal[
    "streaming",
    "tools",
    "parallel_tool_calls",
    "vision",
    "json_mode",
    "json_schema",
    "reasoning",
]
CAPABILITIES: Final[tuple[str, ...]] = get_args(Capability)

Strategy = Literal["priority", "cheapest", "weighted"]
STRATEGIES: Final[tuple[str, ...]] = get_args(Strategy)

LogSink = Literal["sqlite", "postgres"]
LOG_SINKS: Final[tuple[str, ...]] = get_args(LogSink)

# The error classes a route's `fallback.on` may name: failures another candidate may not have.
FallbackErrorClass = Literal[
    "rate_limited",  # 429 from the provider
    "server_error",  # 5xx, a malformed body, a stream that broke before commit
    "timeout",  # no response / no first content chunk in time
    "connect_error",  # could not connect, connection reset before a response
    "overloaded",  # Anthropic 529, Gemini 503 UNAVAILABLE "overloaded"
    "context_length",  # prompt + max_tokens exceed the model's window
]
FALLBACK_ERROR_CLASSES: Final[tuple[str, ...]] = get_args(FallbackErrorClass)

# Every class an adapter gives a failed upstream attempt: the fallback ones, and those where
# the request or our setup is at fault, so another candidate would fail the same way.
ErrorClass = Literal[
    FallbackErrorClass,
    "bad_request",  # the provider refused the request itself (4xx): the caller must fix it
    "auth",  # the provider refused our credentials (401/403)
    "not_found",  # unknown model upstream (404)
]
ERROR_CLASSES: Final[tuple[str, ...]] = get_args(ErrorClass)

# Where an adapter sends requests when the provider sets no `base_url` (`openai-compatible`
# must set one; `mock` sends nothing).
DEFAULT_BASE_URLS: Final[dict[str, str]] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
