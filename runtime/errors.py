"""Error classes: what went wrong upstream (and whether to retry), and what the client sees.

Adapters translate every provider error, and every exception of the HTTP library, into an
`UpstreamError` with one of the ERROR_CLASSES (runtime/vocabulary.py) at the boundary;
nothing else escapes them.
The gateway turns its own refusals and a final upstream failure into a `GatewayError`, which
renders as OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

from typing import Any

from runtime.vocabulary import ErrorClass as ErrorClass  # re-exported: adapters raise with it


class UpstreamError(Exception):
    """One failed upstream attempt, already classified.

    `status` is the provider's HTTP status (None when there was no response), `code` a short
    machine word (`upstream_malformed`, `stream_truncated`, the provider's own error type...),
    `retry_after` seconds when the provider said so.
    """

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class: ErrorClass = error_class
        self.message = message
        self.status = status
        self.code = code or error_class
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"UpstreamError({self.error_class!r}, {self.message!r}, status={self.status})"


class Unservable(UpstreamError):
    """The candidate cannot take this request at all (e.g. `n > 1` on a provider that answers
    one choice); raised by an adapter before it sends anything. The fallback loop skips the
    candidate with `message` as the reason, and does not count it as an attempt."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_request", message, code="unsupported_by_candidate")


class GatewayError(Exception):
    """An error the client sees: HTTP status plus OpenAI's error body with our own code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type or _TYPE_BY_STATUS.get(status, "api_error")
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
}

# How a final upstream failure (no fallback left) is shown to the client.
CLIENT_STATUS: dict[str, tuple[int, str]] = {
    "rate_limited": (429, "upstream_rate_limited"),
    "overloaded": (503, "upstream_overloaded"),
    "server_error": (502, "upstream_error"),
    "timeout": (504, "upstream_timeout"),
    "connect_error": (502, "upstream_unreachable"),
    "context_length": (400, "context_length_exceeded"),
    "bad_request": (400, "upstream_bad_request"),
    "auth": (502, "upstream_auth_failed"),
    "not_found": (502, "upstream_model_not_found"),
}


def from_upstream(err: UpstreamError, provider: str) -> GatewayError:
    """The client-facing error for an upstream failure that ended the request."""
    status, code = CLIENT_STATUS[err.error_class]
    headers = {}
    if err.retry_after is not None and status in (429, 503):
        headers["retry-after"] = str(max(1, int(err.retry_after + 0.999)))
    return GatewayError(status, code, f"{provider}: {err.message}", headers=headers)
