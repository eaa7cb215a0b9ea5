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
    "embeddings",
]
CAPABILITIES: Final[tuple[str, ...]] = get_args(Capability)

Strategy = Literal["priority", "cheapest", "weighted"]
STRATEGIES: Final[tuple[str, ...]] = get_args(Strategy)

# What a route serves: chat (chat completions, responses, messages) or embeddings.
RouteKind = Literal["chat", "embeddings"]
ROUTE_KINDS: Final[tuple[str, ...]] = get_args(RouteKind)

LogSink = Literal["sqlite", "postgres"]
LOG_SINKS: Final[tuple[str, ...]] = get_args(LogSink)

# Where rate limits and budget reservations live: this process, or Redis (shared).
LimitsStore = Literal["memory", "redis"]
LIMITS_STORES: Final[tuple[str, ...]] = get_args(LimitsStore)
# Where gateway keys and BYOK credentials live: SQLite in the data dir, or PostgreSQL (shared).
KeysStore = Literal["sqlite", "postgres"]
KEYS_STORES: Final[tuple[str, ...]] = get_args(KeysStore)
# What the gateway does while Redis is unreachable: refuse (503) or fall back to this process's
# own counters.
OnUnavailable = Literal["closed", "open"]
ON_UNAVAILABLE: Final[tuple[str, ...]] = get_args(OnUnavailable)

# Every class an adapter gives a failed upstream attempt. Any of them may be named in a
# route's `fallback.on`, and the default is all of them: a request one candidate cannot take
# must never end a chain another could serve (a class left out of `on` ends the chain).
ErrorClass = Literal[
    "rate_limited",  # 429 from the provider: a per-minute rate, retry later
    "server_error",  # 5xx, a malformed body, a stream that broke before commit
    "timeout",  # no response / no first content chunk in time
    "connect_error",  # could not connect, connection reset before a response
    "overloaded",  # Anthropic 529, Gemini 503 UNAVAILABLE "overloaded"
    "context_length",  # prompt + max_tokens exceed the model's window
    "bad_request",  # the provider refused the request itself (4xx)
    "auth",  # the provider refused the gateway's credential (401/403)
    "not_found",  # unknown model upstream (404)
    "quota_exhausted",  # credits, billing or a daily quota used up: retrying does not help
    "upstream_config",  # a redirect, a region block: the provider's setup is wrong for us
]
ERROR_CLASSES: Final[tuple[str, ...]] = get_args(ErrorClass)

# The classes `fallback.on` may name: every one (kept as a name of its own for the schema).
FallbackErrorClass = ErrorClass
FALLBACK_ERROR_CLASSES: Final[tuple[str, ...]] = ERROR_CLASSES

# Where an adapter sends requests when the provider sets no `base_url` (`openai-compatible`
# must set one; `mock` sends nothing).
DEFAULT_BASE_URLS: Final[dict[str, str]] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
