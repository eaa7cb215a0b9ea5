"""What OpenAI's chat-completions adapter (runtime/adapters/openai.py) and its Responses
passthrough (runtime/adapters/openai_native.py) read alike: error bodies and usage counts.
Apart so that neither adapter module imports the other."""

from __future__ import annotations

from typing import Any

from runtime.adapters import http
from runtime.adapters.transport_base import Headers
from runtime.errors import UpstreamError

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}


def _malformed(what: str) -> UpstreamError:
    return UpstreamError("server_error", what, code="upstream_malformed")


def _count(value: Any, what: str) -> int:
    """A token count of a usage object: a non-negative integer (null reads as 0)."""
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise _malformed(f"usage {what} is not a token count: {str(value)[:40]!r}")
    return value


def _detail(usage: dict[str, Any], group: str, key: str) -> int:
    details = usage.get(group)
    if details is None:
        return 0
    if not isinstance(details, dict):
        raise _malformed(f"usage {group} is not an object")
    return _count(details.get(key), f"{group}.{key}")


def map_error(status: int, body: Any, headers: Headers | None) -> UpstreamError:
    """OpenAI's error body {"error": {"message", "type", "code"}} -> an error class.

    429 `insufficient_quota` (and its codes `credit_balance_exhausted`, the spend limits) is
    quota exhaustion, not a rate; 403 `unsupported_country_region_territory` a region block
    (platform.openai.com/docs/guides/error-codes)."""
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    etype = err.get("type") if isinstance(err, dict) else None
    message = http.error_message(body, f"HTTP {status}")
    if code in _CONTEXT_CODES or "maximum context length" in message:
        cls = "context_length"
    elif status == 429 and (
        code in _QUOTA_CODES or etype in _QUOTA_CODES or "exceeded your current quota" in message
    ):
        cls = "quota_exhausted"  # credits or a spend limit: waiting does not bring it back
    elif status == 403 and (
        code == "unsupported_country_region_territory"
        or "country, region, or territory" in message.lower()
    ):
        cls = "upstream_config"  # a region block: where the gateway runs, not the request
    elif status == 529:
        cls = "overloaded"
    elif etype == "server_error" or status >= 500:
        cls = "overloaded" if status == 503 and "overload" in message.lower() else "server_error"
    else:
        cls = http.status_class(status)
    return UpstreamError(cls, message, status=status, code=str(code or etype or cls))  # type: ignore[arg-type]


# 429 codes and types that mean the account's credit or spend limit is used up.
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "billing_hard_limit_reached",
    }
)
