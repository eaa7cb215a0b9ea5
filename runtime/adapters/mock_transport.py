"""An in-memory `HTTPTransport`: a plain function answers each request (like httpx's
`MockTransport`). Tests hand it to the adapters to check the bytes they send and how they
parse what comes back, without a socket.

    def handler(request: MockRequest) -> MockResponse:
        assert request.json()["model"] == "gpt-4o"
        return MockResponse(200, b'{"choices": [...]}')

    adapter = OpenAIAdapter(provider, MockTransport(handler))

A streamed body is an iterable of parts: `bytes` (delivered as one read), `Pause(seconds)`
(the provider is silent that long) or an exception instance (raised by the read, e.g.
`ConnectionLost` for a dropped connection). The handler may be async (to stall, or to
answer after a delay), and may raise the transport errors (`ConnectError`...) itself.
Timeouts behave as the pooled transport's: a head or a pause longer than `timeout.read`, or
an exchange longer than `timeout.total`, raises `TimeoutError`. As there, a header value with a
line break or a character outside Latin-1 raises `InvalidHeader` before the handler is called.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from runtime.adapters.transport_base import ConnectError, Headers, InvalidHeader, Timeout


@dataclass(frozen=True, slots=True)
class MockRequest:
    """One request as the adapter sent it."""

    url: str
    headers: dict[str, str]
    body: bytes
    timeout: Timeout

    def json(self) -> Any:
        """The body, decoded."""
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class Pause:
    """A silence of `seconds` in a streamed body."""

    seconds: float


BodyPart = bytes | Pause | BaseException


@dataclass(frozen=True, slots=True)
class MockResponse:
    """What the handler answers: a status, headers, and a body (bytes, or parts to stream)."""

    status: int = 200
    body: bytes | Iterable[BodyPart] = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[MockRequest], MockResponse | Awaitable[MockResponse]]


def sse(*events: Any) -> list[bytes]:
    """Body parts of an SSE stream, one `data:` event per item (dicts are JSON-encoded)."""
    return [
        b"data: " + (e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n\n"
        for e in events
    ]


class MockTransport:
    """Answers every `post` with `handler(request)`; keeps the requests in `requests`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []
        self.closed = False

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: Timeout
    ) -> MockResponseStream:
        """Call the handler (within the read and total timeouts) and return its response."""
        if self.closed:
            raise ConnectError("transport is closed")
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise InvalidHeader(f"header {name!r} contains a line break")
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise InvalidHeader(
                    f"header {name!r} has a character outside Latin-1 and cannot be sent"
                ) from None
        loop = asyncio.get_running_loop()
        deadline = None if timeout.total is None else loop.time() + timeout.total
        request = MockRequest(url, dict(headers), body, timeout)
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            limit = _limit(timeout.read, deadline, loop.time())
            async with asyncio.timeout(limit):
                answer = await answer
        assert isinstance(answer, MockResponse)
        return MockResponseStream(answer, timeout.read, deadline)

    async def close(self) -> None:
        """Refuse further requests."""
        self.closed = True


class MockResponseStream:
    """The `HTTPResponse` of a MockResponse: its body parts, read whole or one by one."""

    def __init__(self, answer: MockResponse, gap: float | None, deadline: float | None) -> None:
        self.status = answer.status
        self.headers = Headers({k.lower(): v for k, v in answer.headers.items()})
        self.before_wait: Callable[[], Awaitable[None]] | None = None
        self.released = False
        self._parts: list[BodyPart] = (
            [answer.body] if isinstance(answer.body, bytes) else list(answer.body)
        )
        self._gap = gap
        self._deadline = deadline

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return b"".join([piece async for piece in self.iter_any()])
        finally:
            self.release()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body's parts in order; pauses wait (calling `before_wait` first)."""
        while self._parts:
            part = self._parts.pop(0)
            if isinstance(part, BaseException):
                raise part
            if isinstance(part, Pause):
                if self.before_wait is not None:
                    await self.before_wait()
                await self._pause(part.seconds)
                continue
            yield part

    def release(self) -> None:
        """Mark the response released."""
        self.released = True

    async def _pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        limit = _limit(self._gap, self._deadline, loop.time())
        if limit is not None and seconds > limit:
            await asyncio.sleep(limit)
            raise TimeoutError
        await asyncio.sleep(seconds)


def _limit(gap: float | None, deadline: float | None, now: float) -> float | None:
    if deadline is None:
        return gap
    left = max(0.0, deadline - now)
    return left if gap is None else min(gap, left)
