"""The transport interface the adapters depend on, like httpx's `BaseTransport`: one method,
`post(url, headers, body, timeout)`, returning a response whose body is read whole or as it
arrives. Its errors are here too, so an adapter never imports a concrete transport.

Implementations: runtime/adapters/transport.py (pooled HTTP/1.1 connections, the gateway's)
and runtime/adapters/mock_transport.py (in memory, a plain function answers; for tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


class TransportError(Exception):
    """Base of the transport errors."""


class ConnectError(TransportError):
    """Could not open a connection (refused, DNS, TLS handshake, proxy refused)."""


class InvalidHeader(ConnectError):
    """A request header cannot be sent (a line break, or a character outside Latin-1); raised
    before anything was sent. The message names the header, never its value."""


class ConnectionLost(TransportError):
    """The connection closed or reset before the response was complete.

    `response_started` says whether any of the response had arrived.
    """

    def __init__(self, message: str, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class ProtocolError(TransportError):
    """The peer did not speak valid HTTP/1.1, or its response broke a limit or its encoding.

    `code`, when set, is the error code the gateway reports (`upstream_malformed` for a corrupt
    compressed body, `upstream_body_too_large` for a body over the transport's limit).
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Timeout:
    """The limits of one exchange."""

    total: float | None  # the whole exchange, request to end of body
    connect: float  # opening the connection (and the TLS handshake, and the proxy tunnel)
    read: float | None  # longest silence while waiting for the response head or body


class Headers(dict[str, str]):
    """Response headers, names lower-cased; repeated headers joined with ", "."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


class HTTPResponse(Protocol):
    """A response whose status and headers arrived; the body may still be on its way.

    `read()` the whole body or `iter_any()` its pieces as they come (a body cut short raises
    `ConnectionLost`, a silence past the read timeout `TimeoutError`); `release()` when done.
    `before_wait`, when set, is awaited right before the reader would wait for more bytes:
    the gateway writes what it buffered for its client there.
    """

    status: int
    headers: Headers
    before_wait: Callable[[], Awaitable[None]] | None

    async def read(self) -> bytes:
        """The whole body (then the response is released)."""
        ...

    def iter_any(self) -> AsyncIterator[bytes]:
        """Body pieces as they arrive."""
        ...

    def release(self) -> None:
        """Give the connection back (or close it); idempotent."""
        ...


class HTTPTransport(Protocol):
    """Sends a POST and returns once the response head arrived."""

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: Timeout
    ) -> HTTPResponse:
        """Raise ConnectError, ConnectionLost, ProtocolError or TimeoutError on failure; an
        HTTP error status is a response like any other."""
        ...

    async def close(self) -> None:
        """Release everything the transport holds."""
        ...
