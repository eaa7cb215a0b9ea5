"""Fake providers: real HTTP servers on 127.0.0.1 that speak a provider's wire format.

Each fake runs an aiohttp server on its own event loop in a background thread, so sync tests
(and the official SDKs) can call it. A test scripts what the next requests get with
`fake.push(Fault(...))`; unscripted requests succeed. Every request received is kept in
`fake.requests` (path, headers, JSON body) so tests can assert what the gateway sent.

A provider module supplies a `Wire` (see below): its success bodies, its SSE events, its
error bodies. The fault kinds are shared, so one matrix covers every provider:

  ok                 success (non-streamed body, or the full stream with its terminator)
  status             an error status with the provider's error body (`status`, `message`)
  delay_headers      sleep `delay` seconds before answering at all
  delay_first_chunk  stream: send headers and non-content events, sleep `delay`, then the rest;
                     non-streamed: send headers, sleep, then the body
  reset              abort the TCP connection before any response
  malformed          200 with a body (or a stream event) that is not valid JSON
  drop_mid_stream    stream: send through the first content event and one more, then abort;
                     non-streamed: headers and half the body, then abort
  error_event        stream: after the first content event send the provider's error event
  no_terminator      stream: every event except the terminator, then a clean end of body
  slow_stream        stream: sleep `delay` seconds before every event after the first content
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web


@dataclass
class Fault:
    kind: str = "ok"
    status: int = 500
    message: str = "injected failure"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class StreamPlan:
    events: list[bytes]  # complete SSE events (each ending in a blank line), terminator last
    first_content: int  # index of the first event that carries content
    terminator: int  # how many trailing events form the terminator
    # The error event of this stream's API, when the wire speaks several (None: the wire's
    # `error_event()`); e.g. the OpenAI fake's Responses streams.
    error_event: bytes | None = None


class Wire(Protocol):
    """A provider's wire format, for the shared fake server."""

    routes: list[tuple[str, str]]  # (method, path pattern) served

    def is_stream(self, request: web.Request, body: Any) -> bool: ...

    def completion(self, request: web.Request, body: Any) -> dict[str, Any]: ...

    def stream(self, request: web.Request, body: Any) -> StreamPlan: ...

    def error(self, status: int, message: str) -> dict[str, Any]: ...

    def error_event(self) -> bytes: ...

    def check_auth(self, request: web.Request) -> web.Response | None: ...


class FakeProvider:
    """Run `wire` on 127.0.0.1:<free port>. Use as a context manager or start()/stop()."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.requests: list[Received] = []
        self.script: collections.deque[Fault] = collections.deque()
        self.default: Fault = Fault("ok")
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *faults: Fault) -> None:
        """The next requests get these faults, in order; later ones get `default`."""
        self.script.extend(faults)

    def reset(self) -> None:
        self.script.clear()
        self.requests.clear()
        self.default = Fault("ok")

    def start(self) -> FakeProvider:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path in self.wire.routes:
            app.router.add_route(method, path, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(Received(request.path_qs, dict(request.headers), body))
        denied = self.wire.check_auth(request)
        if denied is not None:
            return denied
        fault = self.script.popleft() if self.script else self.default
        stream = self.wire.is_stream(request, body)
        kind = fault.kind

        if kind == "delay_headers":
            await asyncio.sleep(fault.delay)
            kind = "ok"
        if kind == "reset":
            _abort(request)
            return web.Response()
        if kind == "status":
            headers = dict(fault.headers)
            return web.json_response(
                self.wire.error(fault.status, fault.message), status=fault.status, headers=headers
            )
        if not stream:
            if kind == "malformed":
                return web.Response(
                    body=b'{"choices": [{"message": ', content_type="application/json"
                )
            payload = json.dumps(self.wire.completion(request, body)).encode()
            if kind == "drop_mid_stream":
                # Headers promise the whole body; half of it arrives, then the connection dies.
                resp = web.StreamResponse(headers={"content-type": "application/json"})
                resp.content_length = len(payload)
                await resp.prepare(request)
                await resp.write(payload[: len(payload) // 2])
                await asyncio.sleep(0.01)
                _abort(request)
                return resp
            if kind == "delay_first_chunk":
                resp = web.StreamResponse(headers={"content-type": "application/json"})
                resp.content_length = len(payload)
                await resp.prepare(request)
                await asyncio.sleep(fault.delay)
                await resp.write(payload)
                await resp.write_eof()
                return resp
            return web.Response(body=payload, content_type="application/json")

        plan = self.wire.stream(request, body)
        resp = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await resp.prepare(request)
        events = plan.events
        for i, ev in enumerate(events):
            if kind == "delay_first_chunk" and i == plan.first_content:
                await asyncio.sleep(fault.delay)
            if kind == "slow_stream" and i > plan.first_content:
                await asyncio.sleep(fault.delay)
            if kind == "malformed" and i == plan.first_content:
                await resp.write(b"data: {not json\n\n")
                break
            if kind == "error_event" and i == plan.first_content + 1:
                await resp.write(plan.error_event or self.wire.error_event())
                break
            if kind == "no_terminator" and i == len(events) - plan.terminator:
                break
            await resp.write(ev)
            if kind == "drop_mid_stream" and i == plan.first_content + 1:
                # Close (FIN) rather than abort (RST): an RST can make the peer's kernel discard
                # bytes it has not read yet, which would turn this into a pre-commit failure.
                await asyncio.sleep(0.01)
                if request.transport is not None:
                    request.transport.close()
                return resp
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event (JSON data unless bytes/str given)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
