"""Error classes: what went wrong upstream (and whether to retry), and what the client sees.

Adapters translate every provider error, and every exception of the HTTP library, into an
`UpstreamError` with one of the ERROR_CLASSES (runtime/vocabulary.py) at the boundary;
nothing else escapes them. An UpstreamError's message and code are scrubbed of credentials
when it is made (runtime/scrub.py), so provider text is clean wherever it goes next.
The gateway turns its own refusals and a final upstream failure into a `GatewayError`, which
renders as OpenAI's error shape: {"error": {"message", "type", "param", "code"}};
`from_upstream` says plainly what a final upstream failure means and whether a retry helps.
"""

from __future__ import annotations

from typing import Any

from runtime.scrub import scrub
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
        message = scrub(message)
        super().__init__(message)
        self.error_class: ErrorClass = error_class
        self.message = message
        self.status = status
        self.code = scrub(code)[:100] if code else error_class
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
    "quota_exhausted": (503, "upstream_quota_exhausted"),
    "upstream_config": (502, "upstream_config_error"),
}

# Final failures a retry of the same request cannot fix: the answer carries
# `x-should-retry: false`, which the official OpenAI and Anthropic SDKs obey before looking at
# the status (their `_should_retry`), and never a Retry-After.
NOT_RETRYABLE: frozenset[str] = frozenset(
    {"context_length", "bad_request", "auth", "not_found", "quota_exhausted", "upstream_config"}
)


def from_upstream(
    err: UpstreamError,
    provider: str,
    *,
    secret_names: tuple[str, ...] = (),
    byok: bool = False,
    base_url: str | None = None,
) -> GatewayError:
    """The client-facing error for an upstream failure that ended the request.

    `secret_names` are the NAMES of the secrets holding the provider's credential (never their
    values), `byok` whether the org's own credential was used, `base_url` where the gateway
    sends the provider's requests: an auth failure and a configuration error say which.
    """
    status, code = CLIENT_STATUS[err.error_class]
    message = f"{provider}: {_plain(err, provider, secret_names, byok, base_url)}"
    headers = {}
    if err.error_class in NOT_RETRYABLE:
        headers["x-should-retry"] = "false"
    elif err.retry_after is not None and status in (429, 503):
        headers["retry-after"] = str(max(1, int(err.retry_after + 0.999)))
    return GatewayError(status, code, message, headers=headers)


def _plain(
    err: UpstreamError,
    provider: str,
    secret_names: tuple[str, ...],
    byok: bool,
    base_url: str | None,
) -> str:
    """What the failure means, in the gateway's words, with the provider's reason after
    (scrubbed again: a credential registered since the error was made is caught too)."""
    http = f"HTTP {err.status}" if err.status is not None else "no HTTP status"
    reason = scrub(err.message)
    if err.error_class == "auth":
        if byok:
            whose = f"the org's own (BYOK) credential for {provider}"
        elif secret_names:
            whose = f"the gateway's credential for {provider} (secret {', '.join(secret_names)})"
        else:
            whose = f"the gateway's credential for {provider}"
        return f"{whose} was refused by the provider ({http}): {reason}"
    if err.error_class == "quota_exhausted":
        return (
            f"the provider account's quota or credit is exhausted ({http}); retrying will not "
            f"help until it is raised or renewed: {reason}"
        )
    if err.error_class == "upstream_config":
        where = f" (base_url {base_url})" if base_url else ""
        return f"the gateway's setup for this provider{where} is wrong: {reason}"
    return reason
