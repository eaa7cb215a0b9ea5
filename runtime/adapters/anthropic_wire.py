"""What Anthropic's chat-completions adapter (runtime/adapters/anthropic.py) and its Messages
passthrough (runtime/adapters/anthropic_native.py) read alike: the API version, stop reasons,
usage and error bodies. Apart so that neither adapter module imports the other."""

from __future__ import annotations

from typing import Any, cast

from runtime.adapters import http
from runtime.adapters.base import Usage
from runtime.adapters.transport_base import Headers
from runtime.errors import ErrorClass, UpstreamError

API_VERSION = "2023-06-01"


STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


_TYPE_CLASS: dict[str, ErrorClass] = {
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "api_error": "server_error",
    "timeout_error": "timeout",
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "not_found_error": "not_found",
    "request_too_large": "bad_request",
    "invalid_request_error": "bad_request",
}


_CONTEXT_PHRASES = ("prompt is too long", "exceed context limit", "exceeds the context window")


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(f"{what} is not a string")
    return value


def _object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed("tool_use input is not an object")
    return value


def _count(u: dict[str, Any], key: str) -> int:
    value = u.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _malformed(f"usage {key} is not a count: {value!r}")
    return value


def _usage(u: Any) -> Usage | None:
    """Anthropic's usage in OpenAI's sense: input counts fresh, cache-read and cache-written
    tokens (Anthropic reports the three apart); the parts stay apart for pricing."""
    if u is None:
        return None
    if not isinstance(u, dict):
        raise _malformed("usage is not an object")
    if "input_tokens" not in u and "output_tokens" not in u:
        return None
    read = _count(u, "cache_read_input_tokens")
    written = _count(u, "cache_creation_input_tokens")
    ttl = u.get("cache_creation")
    written_1h = 0
    if ttl is not None:
        if not isinstance(ttl, dict):
            raise _malformed("usage cache_creation is not an object")
        written_1h = _count(ttl, "ephemeral_1h_input_tokens")
        written = max(written, _count(ttl, "ephemeral_5m_input_tokens") + written_1h)
    output = _count(u, "output_tokens")
    details = u.get("output_tokens_details")
    thinking = _count(details, "thinking_tokens") if isinstance(details, dict) else 0
    return Usage(
        _count(u, "input_tokens") + read + written,
        output,
        cached_input_tokens=read,
        cache_write_tokens=written - written_1h,
        cache_write_1h_tokens=written_1h,
        reasoning_tokens=min(thinking, output),
    )


def _malformed(message: str) -> UpstreamError:
    return UpstreamError("server_error", message, code="upstream_malformed")


def _classify(status: int | None, etype: Any, message: str) -> ErrorClass:
    low = message.lower()
    if etype == "billing_error" or status == 402 or any(p in low for p in _QUOTA_PHRASES):
        # 402 billing_error, or a 400 saying the credit balance or the spend limit ran out:
        # waiting does not bring it back (docs.anthropic.com/en/api/errors).
        return "quota_exhausted"
    if (etype == "invalid_request_error" or (status == 400 and etype is None)) and any(
        p in low for p in _CONTEXT_PHRASES
    ):
        return "context_length"
    if isinstance(etype, str) and etype in _TYPE_CLASS:
        return _TYPE_CLASS[etype]
    return cast(ErrorClass, http.status_class(status)) if status is not None else "server_error"


def map_error(status: int, body: Any, headers: Headers | None) -> UpstreamError:
    """Anthropic's error body {"type": "error", "error": {"type", "message"}} -> an error class."""
    err = body.get("error") if isinstance(body, dict) else None
    etype = err.get("type") if isinstance(err, dict) else None
    message = http.error_message(body, f"HTTP {status}")
    if status == 529:
        cls: ErrorClass = "overloaded"
    elif status == 429:
        cls = "rate_limited"
    else:
        cls = _classify(status, etype, message)
    return UpstreamError(cls, message, status=status, code=str(etype or cls))


def stream_error(doc: dict[str, Any]) -> UpstreamError:
    """The `error` event of a stream -> an error class (the status was already 200)."""
    err = doc.get("error")
    etype = err.get("type") if isinstance(err, dict) else None
    message = http.error_message(doc, "error event in the stream")
    cls = _classify(None, etype, message)
    return UpstreamError(cls, f"stream error event ({etype}): {message}", code="stream_error_event")


# Anthropic's 400 texts for an account that cannot pay: credit used up, spend limit reached.
_QUOTA_PHRASES = ("credit balance is too low", "reached your specified api usage limits")
