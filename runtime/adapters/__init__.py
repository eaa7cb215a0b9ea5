"""Adapters, one module per provider wire format, chosen by the registry below."""

from __future__ import annotations

from runtime.adapters.anthropic import AnthropicAdapter
from runtime.adapters.base import (
    Adapter,
    AnyChunk,
    Call,
    Chunk,
    Completion,
    Embeddings,
    NativeEvent,
    NativeRequest,
    RelayChunk,
    UpstreamStream,
    Usage,
)
from runtime.adapters.gemini import GeminiAdapter
from runtime.adapters.mock import MockAdapter
from runtime.adapters.openai import OpenAIAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "openai-compatible": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "mock": MockAdapter,
}

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AnyChunk",
    "Call",
    "Chunk",
    "Completion",
    "Embeddings",
    "NativeEvent",
    "NativeRequest",
    "RelayChunk",
    "UpstreamStream",
    "Usage",
]
