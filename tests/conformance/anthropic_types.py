"""Anthropic's official SDK request types as strict validators for the conformance tests.

The SDK's request types are TypedDicts that pydantic validates with extra keys IGNORED and
its `Iterable` fields lazily; `request_validator` builds a `TypeAdapter` with extra keys
FORBIDDEN on every SDK TypedDict (except the JSON-Schema dict the SDK itself opens), and
`validate` consumes the lazy iterables, so an unknown key anywhere in a body fails.

The validators are the SDK types exactly, nothing added: SDK 2.x's `MessageCreateParams`
declares no sampling parameter (`temperature`, `top_p`, `top_k`), so a body carrying one fails.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import anthropic.types
import pydantic
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from pydantic import TypeAdapter
from typing_extensions import is_typeddict

FORBID: dict[str, Any] = {"extra": "forbid", "arbitrary_types_allowed": True}


def _sdk_typeddicts() -> list[type]:
    found: list[type] = []
    for info in pkgutil.iter_modules(anthropic.types.__path__):
        module = importlib.import_module(f"anthropic.types.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and is_typeddict(value) and value not in found:
                found.append(value)
    return found


def request_validator(tp: Any) -> TypeAdapter[Any]:
    """A TypeAdapter for `tp` with extra keys forbidden on every SDK TypedDict (the SDK's
    own configuration is restored afterwards: the schema is fixed when the adapter is built)."""
    saved: dict[type, Any] = {}
    for cls in _sdk_typeddicts():
        own = cls.__dict__.get("__pydantic_config__")
        saved[cls] = own
        if not (own and own.get("extra") == "allow"):
            cls.__pydantic_config__ = FORBID  # type: ignore[attr-defined]
    try:
        return TypeAdapter(tp)
    finally:
        for cls, own in saved.items():
            if own is None:
                del cls.__pydantic_config__  # type: ignore[attr-defined]
            else:
                cls.__pydantic_config__ = own  # type: ignore[attr-defined]


def _drain(value: Any) -> Any:
    """Consume pydantic's lazy iterables (validating their items) and refuse response models
    (which the SDK accepts as input) carrying keys they do not declare."""
    if isinstance(value, dict):
        return {k: _drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ValidatorIterator":
        return [_drain(v) for v in value]
    if isinstance(value, pydantic.BaseModel) and value.model_extra:
        raise ValueError(f"{type(value).__name__} has undeclared keys {sorted(value.model_extra)}")
    return value


NON_STREAMING = request_validator(MessageCreateParamsNonStreaming)
STREAMING = request_validator(MessageCreateParamsStreaming)


def validate(body: dict[str, Any], stream: bool) -> None:
    """Raise (pydantic ValidationError or ValueError) unless `body` is a valid request."""
    _drain((STREAMING if stream else NON_STREAMING).validate_python(body))
