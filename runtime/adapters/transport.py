"""A small HTTP/1.1 client for calling providers: pooled keep-alive connections, TLS, an
optional CONNECT proxy, and timeouts — nothing else (no cookies, redirects or retries).

Why not a general client library: on the gateway's hot path the upstream call was two thirds
of the gateway's own CPU time with aiohttp's client (bench/README.md). This one writes each
request with one `write()`, parses responses with httptools (llhttp, in C) and wakes the
caller only when there is something to read.

Errors are the transport interface's (runtime/adapters/transport_base.py): `ConnectError` (no
connection), `ConnectionLost` (the peer went away mid-exchange), `ProtocolError` (not valid
HTTP), and the builtin `TimeoutError`.
runtime/adapters/http.py maps them to error classes.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable

import httptools

from runtime.adapters.transport_base import (
    ConnectError,
    ConnectionLost,
    Headers,
    ProtocolError,
    Timeout,
    TransportError,
)

__all__ = [
    "ConnectError",
    "ConnectionLost",
    "Headers",
    "ProtocolError",
    "Response",
    "Timeout",
    "Transport",
    "TransportError",
]

IDLE_KEEP_S = 20.0  # close pooled connections idle longer than this (servers drop them ~60 s)
MAX_BUFFER = 4 * 1024 * 1024  # pause reading a response body beyond this until it is consumed


class Transport:
    """A connection pool per (scheme, host, port). Use one per process; `close()` at the end.

    Implements runtime.adapters.transport_base.HTTPTransport (its responses: HTTPResponse)."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, trust_env: bool = True
    ) -> None:
        self._pools: dict[tuple[str, str, int], list[_Conn]] = {}
        self._targets: dict[
            str, tuple[tuple[str, str, int], str]
        ] = {}  # url -> (pool key, request head start)
        self._ssl = ssl_context
        self._proxies = _proxies() if trust_env else {}
        self._closed = False

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for conns in self._pools.values():
            for c in conns:
                c.close()
        self._pools.clear()

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: Timeout
    ) -> Response:
        """Send a POST and return once the response head arrived (the body may still stream)."""
        if self._closed:
            raise ConnectError("transport is closed")
        loop = asyncio.get_running_loop()
        deadline = None if timeout.total is None else loop.time() + timeout.total
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _target(url)
        key, start = target
        head = [start, str(len(body)), "\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ConnectError(f"header {name!r} contains a line break")
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        conn = self._idle(key, loop.time())
        if conn is None:
            conn = await self._open(key, timeout.connect, deadline)
        return await conn.exchange(
            "".join(head).encode("latin-1") + body, timeout.read, deadline, self._release
        )

    def _idle(self, key: tuple[str, str, int], now: float) -> _Conn | None:
        pool = self._pools.get(key)
        while pool:
            conn = pool.pop()
            if not conn.closed and now - conn.idle_since < IDLE_KEEP_S:
                return conn
            conn.close()
        return None

    def _release(self, conn: _Conn) -> None:
        if self._closed or conn.closed:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._pools.setdefault(conn.key, []).append(conn)

    async def _open(
        self, key: tuple[str, str, int], connect_timeout: float, deadline: float | None
    ) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        limit = (
            connect_timeout
            if deadline is None
            else max(0.0, min(connect_timeout, deadline - loop.time()))
        )
        ctx = None
        if scheme == "https":
            ctx = self._ssl or _default_ssl()
        proxy = None if _bypass(host) else self._proxies.get(scheme)
        try:
            async with asyncio.timeout(limit):
                if proxy is None:
                    _, conn = await loop.create_connection(
                        lambda: _Conn(key),
                        host,
                        port,
                        ssl=ctx,
                        server_hostname=host if ctx else None,
                    )
                else:
                    conn = await _tunnel(loop, proxy, key, ctx)
        except TimeoutError:
            raise ConnectError(
                f"connecting to {host}:{port} took longer than {limit:g} s"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectError(
                f"TLS handshake with {host}:{port} failed: {exc.reason or exc}"
            ) from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return conn


def _target(url: str) -> tuple[tuple[str, str, int], str]:
    """(pool key, the request head up to the content-length value) for a URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConnectError(f"unsupported URL {url!r}")
    host = parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    authority = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
    if any(c in path for c in " \r\n"):
        raise ConnectError(f"URL path of {url!r} contains whitespace")
    return (
        scheme,
        host,
        port,
    ), f"POST {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: switchyard\r\ncontent-length: "


class Response:
    """One response. Read it with `read()` or `iter_any()`; `release()` when done."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_deadline",
        "_done",
        "_error",
        "_gap",
        "_on_release",
        "_released",
        "_size",
        "_waiter",
        "before_wait",
        "headers",
        "status",
    )

    def __init__(
        self,
        conn: _Conn,
        gap: float | None,
        deadline: float | None,
        on_release: Callable[[_Conn], None],
    ) -> None:
        self._conn = conn
        self._gap = gap
        self._deadline = deadline
        self._on_release = on_release
        self.status = 0
        self.headers = Headers()
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        # Awaited right before the reader would wait for the network: the gateway flushes
        # what it buffered for the client there, so chunks that arrived together are written
        # together and nothing is held back while the provider is silent.
        self.before_wait: Callable[[], Awaitable[None]] | None = None

    async def read(self) -> bytes:
        """The whole body."""
        while not self._done:
            await self._wait()
        body = b"".join(self._chunks)
        self._chunks = []
        self.release()
        return body

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Body pieces as they arrive; raises ConnectionLost if the body is cut short."""
        while True:
            if self._chunks:
                chunks, self._chunks, self._size = self._chunks, [], 0
                self._conn.resume()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                continue
            if self._done:
                return
            if self.before_wait is not None:
                await self.before_wait()
                if self._chunks or self._done or self._error is not None:
                    continue
            await self._wait()

    def release(self) -> None:
        """Give the connection back (kept alive if the body was read to the end), or close it."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        conn.response = None
        if self._done and self._error is None and conn.keep_alive and not conn.closed:
            self._on_release(conn)
        else:
            conn.close()

    # -- fed by the connection ----------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > MAX_BUFFER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._done:
            return
        self._error = exc
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(exc)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        limit = self._gap
        if self._deadline is not None:
            left = self._deadline - loop.time()
            limit = left if limit is None else min(limit, left)
        timer = None
        if limit is not None:
            timer = loop.call_later(max(0.0, limit), _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Conn(asyncio.Protocol):
    """One keep-alive connection; carries at most one exchange at a time."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._head: asyncio.Future[None] | None = None
        self._started = False
        self._paused = False
        self._framed = False  # content-length or chunked: the body has a defined end
        self.tunnel: asyncio.StreamWriter | None = (
            None  # the proxy stream this connection took over
        )

    # -- exchange ------------------------------------------------------------------------
    async def exchange(
        self,
        request: bytes,
        gap: float | None,
        deadline: float | None,
        on_release: Callable[[_Conn], None],
    ) -> Response:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        resp = self.response = Response(self, gap, deadline, on_release)
        self._head = loop.create_future()
        self._started = False
        self._framed = False
        self.keep_alive = False
        self.transport.write(request)
        limit = gap
        if deadline is not None:
            left = deadline - loop.time()
            limit = left if limit is None else min(limit, left)
        timer = loop.call_later(max(0.0, limit), _expire, self._head) if limit is not None else None
        try:
            await self._head
        except BaseException:
            self.response = None
            self.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._head = None
        return resp

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._error(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._error(ProtocolError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.response
        if resp is None:
            return
        if self._head is None and not self._framed and not resp._done:
            resp._finish()  # a body delimited by the end of the connection
            return
        what = "reset" if isinstance(exc, ConnectionResetError) else "closed"
        self._error(
            ConnectionLost(
                f"connection {what} by the provider"
                f" {'mid-response' if self._started else 'before any response'}",
                self._started,
            )
        )

    def _error(self, exc: BaseException) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
        elif self.response is not None:
            self.response._fail(exc)
        self.close()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        h = self.response.headers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        dict.__setitem__(h, key, f"{dict.__getitem__(h, key)}, {text}" if key in h else text)
        if key == "content-length" or (key == "transfer-encoding" and "chunked" in text.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        resp = self.response
        if resp is not None:
            resp._finish()


_SSL: ssl.SSLContext | None = None


def _default_ssl() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:
        _SSL = ssl.create_default_context()
        _SSL.set_alpn_protocols(["http/1.1"])
    return _SSL


def _proxies() -> dict[str, str]:
    """http/https proxy URLs from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY)."""
    found = urllib.request.getproxies_environment()
    out = {}
    for scheme in ("http", "https"):
        url = found.get(scheme) or found.get("all")
        if url:
            out[scheme] = url
    return out


def _bypass(host: str) -> bool:
    if host in ("127.0.0.1", "localhost", "::1"):
        return True
    bypass = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 (not in the stubs)
    return bool(os.environ.get("no_proxy") or os.environ.get("NO_PROXY")) and bool(bypass(host))


async def _tunnel(
    loop: asyncio.AbstractEventLoop,
    proxy_url: str,
    key: tuple[str, str, int],
    ctx: ssl.SSLContext | None,
) -> _Conn:
    """Open a CONNECT tunnel through an HTTP proxy, then TLS to the target when https."""
    _, host, port = key
    p = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
    proxy = f"{p.hostname}:{p.port or 80}"
    reader, writer = await asyncio.open_connection(p.hostname, p.port or 80)
    try:
        auth = ""
        if p.username:
            import base64

            user = urllib.parse.unquote(p.username)
            password = urllib.parse.unquote(p.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            auth = f"proxy-authorization: Basic {token}\r\n"
        writer.write(
            f"CONNECT {host}:{port} HTTP/1.1\r\nhost: {host}:{port}\r\n{auth}\r\n".encode()
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise ConnectError(
                f"proxy {proxy} did not answer the tunnel request to {host}:{port}"
            ) from None
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
        if status != b"200":
            raise ConnectError(
                f"proxy {proxy} refused the tunnel to {host}:{port}: "
                + head.splitlines()[0].decode("latin-1", "replace")
            )
        transport = writer.transport
        conn = _Conn(key)
        if ctx is not None:
            tls = await loop.start_tls(
                transport, transport.get_protocol(), ctx, server_hostname=host
            )
            assert tls is not None
            transport = tls
        transport.set_protocol(conn)
        conn.connection_made(transport)
    except BaseException:
        writer.close()
        raise
    # A collected StreamWriter closes its transport (Python >= 3.11.5): the connection keeps it.
    conn.tunnel = writer
    return conn
