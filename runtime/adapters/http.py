"""The HTTP boundary shared by the network adapters: the transport in, `UpstreamError` out.

Every transport/asyncio exception is mapped here, so adapters (and the gateway) only ever see
classified errors. A failure before response headers is `connect_error` (or `timeout`); once a
stream is flowing, a broken connection is `server_error` with code `stream_broken`. A redirect
is `upstream_config` (the gateway follows none: the provider's base_url is wrong). An error
body's text is scrubbed of the credential just sent (and every registered secret) before it is
cut to length, so no part of a key survives (runtime/scrub.py).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from runtime import scrub
from runtime.adapters.transport_base import (
    ConnectError,
    ConnectionLost,
    Headers,
    HTTPResponse,
    HTTPTransport,
    InvalidHeader,
    ProtocolError,
    Timeout,
)
from runtime.config import ProviderConfig
from runtime.errors import Unservable, UpstreamError
from runtime.sse import SSEParser

# (status, the decoded error body as it came, response headers) -> the classified error
ErrorMapper = Callable[[int, Any, Headers | None], UpstreamError]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """A provider's timeouts: a non-streamed call must finish within `timeout_s`; a stream
    may run long, and what must not exceed `timeout_s` is the silence between reads."""

    plain: Timeout
    stream: Timeout

    @classmethod
    def of(cls, provider: ProviderConfig) -> Timeouts:
        return cls(
            Timeout(total=provider.timeout_s, connect=provider.connect_timeout_s, read=None),
            Timeout(total=None, connect=provider.connect_timeout_s, read=provider.timeout_s),
        )

    def pick(self, stream: bool) -> Timeout:
        return self.stream if stream else self.plain


async def post(
    transport: HTTPTransport,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeout: Timeout,
    map_error: ErrorMapper,
) -> HTTPResponse:
    """POST and return the response once a 2xx status arrived; raise UpstreamError otherwise.

    On an error status the body is read and decoded (JSON if it is JSON, else text) and handed
    to `map_error(status, decoded_body, headers)`, the adapter's classifier.
    """
    try:
        resp = await transport.post(url, headers, body, timeout)
    except TimeoutError:
        raise UpstreamError("timeout", "no response before the timeout") from None
    except InvalidHeader as exc:  # e.g. a BYOK credential outside Latin-1: nothing was sent
        raise Unservable(str(exc)) from None
    except ConnectError as exc:
        raise UpstreamError("connect_error", str(exc)) from None
    except ConnectionLost as exc:
        raise UpstreamError("connect_error", str(exc)) from None
    except ProtocolError as exc:
        raise UpstreamError(
            "server_error", str(exc), code=exc.code or "upstream_malformed"
        ) from None
    except OSError as exc:
        raise UpstreamError("connect_error", f"request failed: {exc.strerror or exc}") from None
    if resp.status < 300:
        return resp
    scrub.register(scrub.secret_values(headers))
    if resp.status < 400:
        resp.release()
        raise _redirect(resp.status, url, resp.headers)
    try:
        raw = await resp.read()
    except TimeoutError:
        raise UpstreamError(
            "timeout", f"HTTP {resp.status} body did not arrive in time", status=resp.status
        ) from None
    except (ConnectionLost, ProtocolError) as exc:
        raise UpstreamError(
            "server_error", f"HTTP {resp.status}, body lost: {exc}", status=resp.status
        ) from None
    finally:
        resp.release()
    decoded: Any
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        decoded = scrub.scrub(raw.decode("utf-8", "replace"))[:2000]
    err = map_error(resp.status, decoded, resp.headers)
    if err.retry_after is None:
        err.retry_after = retry_after(resp.headers)
    raise err


async def read_json(resp: HTTPResponse) -> Any:
    """The full body of a success response, decoded; malformed or lost bodies are classified."""
    try:
        raw = await resp.read()
    except TimeoutError:
        raise UpstreamError("timeout", "response body did not arrive in time") from None
    except ProtocolError as exc:
        raise UpstreamError(
            "server_error", f"response body: {exc}", code=exc.code or "stream_broken"
        ) from None
    except ConnectionLost as exc:
        raise UpstreamError(
            "server_error", f"response body lost: {exc}", code="stream_broken"
        ) from None
    finally:
        resp.release()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            "server_error", f"malformed JSON in a {resp.status} response", code="upstream_malformed"
        ) from None


async def iter_sse(resp: HTTPResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of an SSE response; a broken connection raises `stream_broken`.

    Ends normally at the end of the body; the adapter decides whether its terminator came.
    """
    parser = SSEParser()
    try:
        async for piece in resp.iter_any():
            for ev in parser.feed(piece):
                yield ev
    except TimeoutError:
        raise UpstreamError(
            "timeout", "stream stalled past the timeout", code="stream_broken"
        ) from None
    except ProtocolError as exc:
        raise UpstreamError(
            "server_error", f"stream broken: {exc}", code=exc.code or "stream_broken"
        ) from None
    except ConnectionLost as exc:
        raise UpstreamError("server_error", f"stream broken: {exc}", code="stream_broken") from None
    finally:
        resp.release()


def loads(data: str | bytes) -> Any:
    """Decode one JSON payload of a stream; malformed payloads are classified."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            "server_error", "malformed JSON in the stream", code="upstream_malformed"
        ) from None


def retry_after(headers: Headers | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), if present."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body: Any, default: str) -> str:
    """The message inside a provider error body ({"error": {"message": ...}} and variants),
    scrubbed of credentials before it is cut to length."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return scrub.scrub(str(err["message"]))[:1000]
        if isinstance(err, str):
            return scrub.scrub(err)[:1000]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return error_message(body[0], default)
    if isinstance(body, str) and body.strip():
        return scrub.scrub(body.strip())[:300]
    return default


def status_class(status: int) -> str:
    """The error class a bare HTTP status means when the body says nothing more specific."""
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "bad_request"


def _redirect(status: int, url: str, headers: Headers | None) -> UpstreamError:
    """A 3xx: the gateway follows no redirect (it would resend the credential elsewhere), so
    the provider's base_url is wrong — a configuration error, not the caller's request."""
    location = headers.get("location") if headers is not None else None
    to = f" to {scrub.scrub(location)[:300]}" if location else ""
    return UpstreamError(
        "upstream_config",
        f"the provider answered HTTP {status} (a redirect{to}) for {url.split('?')[0]}; "
        "the gateway follows no redirects: check the provider's base_url",
        status=status,
        code="upstream_redirect",
    )
