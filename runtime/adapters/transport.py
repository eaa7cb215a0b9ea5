"""A small HTTP/1.1 client for calling providers: pooled keep-alive connections, TLS, an
optional CONNECT proxy, and timeouts — nothing else (no cookies, redirects or retries).

Why not a general client library: on the gateway's hot path the upstream call was two thirds
of the gateway's own CPU time with aiohttp's client (bench/README.md). This one writes each
request with one `write()`, parses responses with httptools (llhttp, in C) and wakes the
caller only when there is something to read.

Errors are the transport interface's (runtime/adapters/transport_base.py): `ConnectError` (no
connection), `ConnectionLost` (the peer went away mid-exchange), `ProtocolError` (not valid
HTTP, a broken limit or encoding), `InvalidHeader` (a header that cannot be sent), and the
builtin `TimeoutError`. runtime/adapters/http.py maps them to error classes.

What it holds to (docs/runtime.md, "Transport"): a body read whole may be up to `max_body`
bytes (decoded); gzip and deflate bodies are decoded (streamed ones too); a response head may
be at most MAX_HEAD_BYTES and MAX_HEADERS headers; at most `max_per_host` connections per
(scheme, host, port), further requests wait for one within their connect timeout; a pooled
connection idle for IDLE_KEEP_S is closed by a timer; TLS failures say why.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import urllib.parse
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httptools

from runtime.adapters.transport_base import (
    ConnectError,
    ConnectionLost,
    Headers,
    InvalidHeader,
    ProtocolError,
    Timeout,
    TransportError,
)
from runtime.config import DEFAULT_MAX_UPSTREAM_BODY

__all__ = [
    "ConnectError",
    "ConnectionLost",
    "Headers",
    "InvalidHeader",
    "ProtocolError",
    "Response",
    "Timeout",
    "Transport",
    "TransportError",
]

IDLE_KEEP_S = 20.0  # close pooled connections idle this long (servers drop them ~60 s)
MAX_BUFFER = 4 * 1024 * 1024  # pause reading a streamed body beyond this until it is consumed
MAX_BODY = DEFAULT_MAX_UPSTREAM_BODY  # default limit of a body read whole, decoded
MAX_HEAD_BYTES = 100 * 1024  # a response head (status line and headers), as httpcore's h11
MAX_HEADERS = 100  # headers in a response head, as Python's http.client
MAX_PER_HOST = 100  # default connections per (scheme, host, port), as httpx's max_connections
ACCEPT_ENCODING = "gzip, deflate"
_DECODE_STEP = 1024 * 1024  # decompress at most this much per step (a small bomb stays small)

PoolKey = tuple[str, str, int]


class Transport:
    """A connection pool per (scheme, host, port). Use one per process; `close()` at the end.

    Implements runtime.adapters.transport_base.HTTPTransport (its responses: HTTPResponse)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
        max_body: int = MAX_BODY,
        max_per_host: int = MAX_PER_HOST,
    ) -> None:
        self._pools: dict[PoolKey, list[_Conn]] = {}  # idle connections, newest last
        self._targets: dict[str, tuple[PoolKey, str]] = {}  # url -> (pool key, head start)
        self._open: dict[PoolKey, int] = {}  # connections open or opening, idle or busy
        self._waiting: dict[PoolKey, collections.deque[asyncio.Future[_Conn | None]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._ssl = ssl_context
        self._proxies = _proxies() if trust_env else {}
        self._closed = False
        self.max_body = max_body
        self.max_per_host = max_per_host

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every pooled connection; responses in flight close theirs when released."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in list(self._pools.values()):
            for c in conns:
                c.close()
        self._pools.clear()
        for waiters in self._waiting.values():
            for w in waiters:
                if not w.done():
                    w.set_exception(ConnectError("transport is closed"))
        self._waiting.clear()

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
                raise InvalidHeader(f"header {name!r} contains a line break")
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        try:
            request = "".join(head).encode("latin-1") + body
        except UnicodeEncodeError:
            raise InvalidHeader(_not_latin1(headers)) from None
        conn = self._idle(key, loop.time())
        if conn is None:
            conn = await self._connection(key, timeout.connect, deadline)
        return await conn.exchange(request, timeout.read, deadline, self._release, self.max_body)

    def _idle(self, key: PoolKey, now: float) -> _Conn | None:
        pool = self._pools.get(key)
        while pool:
            conn = pool.pop()
            if not conn.closed and now - conn.idle_since < IDLE_KEEP_S:
                return conn
            conn.close()
        return None

    def _release(self, conn: _Conn) -> None:
        """A response read to its end gives its connection back: to a request waiting for
        one, else to the pool (swept after IDLE_KEEP_S)."""
        if self._closed or conn.closed:
            conn.close()
            return
        waiters = self._waiting.get(conn.key)
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._pools.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(IDLE_KEEP_S, self._expire_idle)

    def _expire_idle(self) -> None:
        """Close pooled connections idle for IDLE_KEEP_S; run again when the next one is due."""
        self._sweep = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due: float | None = None
        for key, pool in list(self._pools.items()):
            keep = [c for c in pool if not c.closed and now - c.idle_since < IDLE_KEEP_S]
            for c in pool:
                if c not in keep:
                    c.close()
            if keep:
                self._pools[key] = keep
                first = min(c.idle_since for c in keep) + IDLE_KEEP_S
                due = first if due is None else min(due, first)
            else:
                del self._pools[key]
        if due is not None:
            self._sweep = loop.call_at(due, self._expire_idle)

    def _gone(self, conn: _Conn) -> None:
        """A connection closed: its slot goes to the first request waiting for one."""
        self._open[conn.key] -= 1
        self._offer_slot(conn.key)

    def _offer_slot(self, key: PoolKey) -> None:
        """A slot is free: it becomes the first waiting request's (it opens a connection)."""
        if self._closed:
            return
        waiters = self._waiting.get(key)
        while waiters:
            w = waiters.popleft()
            if not w.done():
                self._open[key] += 1
                w.set_result(None)
                return

    async def _connection(
        self, key: PoolKey, connect_timeout: float, deadline: float | None
    ) -> _Conn:
        """A new connection; or, with `max_per_host` open, the first one given back (or the
        slot of one that closed) within the connect timeout."""
        loop = asyncio.get_running_loop()
        limit = (
            connect_timeout
            if deadline is None
            else max(0.0, min(connect_timeout, deadline - loop.time()))
        )
        give_up = loop.time() + limit
        while self._open.get(key, 0) >= self.max_per_host:
            got = await self._wait_for_slot(key, give_up - loop.time())
            if self._closed:
                if got is not None:
                    got.close()
                else:
                    self._open[key] -= 1
                raise ConnectError("transport is closed")
            if got is None:
                break  # a slot was handed over (and counted)
            if not got.closed:
                return got
        else:
            self._open[key] = self._open.get(key, 0) + 1
        try:
            return await self._open_new(key, max(0.0, give_up - loop.time()))
        except BaseException:
            self._open[key] -= 1
            self._offer_slot(key)
            raise

    async def _wait_for_slot(self, key: PoolKey, limit: float) -> _Conn | None:
        """Wait for a connection given back (returned) or a free slot (None, counted)."""
        host = f"{key[1]}:{key[2]}"
        waiter: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(key, collections.deque())
        queue.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, limit)):
                return await asyncio.shield(waiter)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                got = waiter.result()  # handed over just as we gave up: pass it on
                if got is not None:
                    self._release(got)
                else:
                    self._open[key] -= 1
                    self._offer_slot(key)
            else:
                waiter.cancel()
                if waiter in queue:
                    queue.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ConnectError(
                    f"all {self.max_per_host} connections to {host} stayed busy for {limit:g} s"
                ) from None
            raise

    async def _open_new(self, key: PoolKey, limit: float) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
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
                f"TLS handshake with {host}:{port} failed: {tls_reason(exc)}"
            ) from None
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            if ctx is None:
                raise ConnectError(
                    f"cannot connect to {host}:{port}: {exc.strerror or exc}"
                ) from None
            raise ConnectError(
                f"TLS handshake with {host}:{port} failed: the server closed the connection"
                " during the handshake (no TLS version or cipher in common?)"
            ) from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        conn.attach(self._gone)
        return conn


def _target(url: str) -> tuple[PoolKey, str]:
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
    return (scheme, host, port), (
        f"POST {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: switchyard\r\n"
        f"accept-encoding: {ACCEPT_ENCODING}\r\ncontent-length: "
    )


def _not_latin1(headers: dict[str, str]) -> str:
    """Why a request cannot be sent: the names of the headers outside Latin-1 (no values)."""
    bad = []
    for name, value in headers.items():
        try:
            name.encode("latin-1")
            value.encode("latin-1")
        except UnicodeEncodeError:
            bad.append(repr(name))
    return f"header {', '.join(bad) or '?'} has a character outside Latin-1 and cannot be sent"


def tls_reason(exc: ssl.SSLError) -> str:
    """Why a TLS handshake failed, in words: the certificate check's own message (expired,
    hostname mismatch, self-signed, unknown issuer) or the handshake's reason."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    reason = exc.reason or ""
    words = _TLS_REASONS.get(reason)
    if words is not None:
        return f"{words} ({reason})"
    return reason or str(exc) or type(exc).__name__


_TLS_REASONS = {
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS protocol version in common with the server",
    "UNSUPPORTED_PROTOCOL": "no TLS protocol version in common with the server",
    "NO_PROTOCOLS_AVAILABLE": "no TLS protocol version in common with the server",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server refused the handshake (no cipher in common?)",
    "TLSV1_ALERT_INTERNAL_ERROR": "the server failed the handshake (internal error)",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake",
    "EOF": "the server closed the connection during the handshake",
}


class _Decoder:
    """Decodes a gzip or deflate body (deflate: zlib-wrapped, or raw as some servers send it,
    as httpx accepts); a corrupt or truncated body is a ProtocolError `upstream_malformed`."""

    __slots__ = ("_d", "_deflate", "_first")

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding == "deflate"
        self._first = True
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16 if not self._deflate else zlib.MAX_WBITS)

    def decode(self, data: bytes, out: Callable[[bytes], bool]) -> None:
        """Decode `data`, handing out pieces of at most _DECODE_STEP; stop if `out` says so."""
        first, self._first = self._first, False
        try:
            piece = self._d.decompress(data, _DECODE_STEP)
        except zlib.error as exc:
            if not (first and self._deflate):
                raise _malformed(exc) from None
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(data, out)
        while True:
            if piece and not out(piece):
                return
            tail = self._d.unconsumed_tail
            if not tail:
                return
            try:
                piece = self._d.decompress(tail, _DECODE_STEP)
            except zlib.error as exc:
                raise _malformed(exc) from None

    def finish(self) -> bytes:
        """What is left; a body that ended before its compressed stream did is malformed."""
        try:
            rest = self._d.flush()
        except zlib.error as exc:
            raise _malformed(exc) from None
        if not self._d.eof and not self._first:
            raise ProtocolError("compressed response body ended early", code="upstream_malformed")
        return rest


def _malformed(exc: zlib.error) -> ProtocolError:
    return ProtocolError(f"corrupt compressed response body: {exc}", code="upstream_malformed")


def _decoder(encoding: str | None) -> _Decoder | None:
    """The decoder of a Content-Encoding we asked for; others are passed on as they are."""
    if not encoding:
        return None
    enc = encoding.strip().lower()
    if enc in ("gzip", "x-gzip"):
        return _Decoder("gzip")
    if enc == "deflate":
        return _Decoder("deflate")
    return None


class Response:
    """One response. Read it with `read()` or `iter_any()`; `release()` when done."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_deadline",
        "_done",
        "_error",
        "_gap",
        "_max",
        "_on_release",
        "_released",
        "_size",
        "_total",
        "_waiter",
        "_whole",
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
        max_body: int,
    ) -> None:
        self._conn = conn
        self._max = max_body
        self._total = 0  # decoded body bytes received
        self._whole = False  # read() is collecting the body: no pause, the size limit applies
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
        """The whole body, at most the transport's `max_body` bytes (decoded); a longer one
        raises ProtocolError `upstream_body_too_large` (and the connection is closed)."""
        self._whole = True
        length = self.headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > self._max
            and "content-encoding" not in self.headers
        ):
            raise self._too_large()
        self._conn.resume()  # a body paused at MAX_BUFFER before read() was called
        while True:
            if self._total > self._max:
                raise self._too_large()
            if self._done:
                break
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

    def _feed(self, data: bytes) -> bool:
        """Take a piece of the body; False when the response failed (stop feeding)."""
        if self._error is not None:
            return False
        self._chunks.append(data)
        self._size += len(data)
        self._total += len(data)
        if self._whole:
            if self._total > self._max:
                self._too_large()
                return False
        elif self._size > MAX_BUFFER:
            self._conn.pause()
        self._wake()
        return True

    def _too_large(self) -> ProtocolError:
        """Fail the response (and close its connection): the body is over the limit."""
        exc = ProtocolError(
            f"response body larger than the limit of {self._max} bytes",
            code="upstream_body_too_large",
        )
        self._chunks, self._size = [], 0
        self._conn._error(exc)
        self._error = exc
        return exc

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

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self._on_gone: Callable[[_Conn], None] | None = None  # called once, when closed
        self._decoder: _Decoder | None = None
        self._head_wire = 0  # bytes received while the response head is incomplete
        self._head_bytes = 0  # bytes of the headers parsed so far
        self._headers = 0
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
        max_body: int,
    ) -> Response:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        resp = self.response = Response(self, gap, deadline, on_release, max_body)
        self._head = loop.create_future()
        self._started = False
        self._framed = False
        self._decoder = None
        self._head_wire = self._head_bytes = self._headers = 0
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

    def attach(self, on_gone: Callable[[_Conn], None]) -> None:
        """Count this connection in a pool: `on_gone(self)` once it closes (now if it did)."""
        self._on_gone = on_gone
        if self.closed:
            self._gone()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._gone()

    def _gone(self) -> None:
        on_gone, self._on_gone = self._on_gone, None
        if on_gone is not None:
            on_gone(self)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._started = True
        head = self._head
        try:
            self.parser.feed_data(data)
            if head is not None and not head.done():
                self._head_wire += len(data)
                if self._head_wire > MAX_HEAD_BYTES:  # a head that does not end
                    self._error(_head_too_large())
        except ProtocolError as exc:  # raised by a callback
            self._error(exc)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            self._error(
                cause if isinstance(cause, ProtocolError) else ProtocolError(f"invalid HTTP: {exc}")
            )
        except httptools.HttpParserUpgrade:
            self._error(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._error(ProtocolError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._gone()
        resp = self.response
        if resp is None:
            return
        if self._head is None and not self._framed and not resp._done:
            self.on_message_complete()  # a body delimited by the end of the connection
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
        self._headers += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._headers > MAX_HEADERS:
            raise ProtocolError(
                f"response has more than {MAX_HEADERS} headers", code="upstream_malformed"
            )
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _head_too_large()
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
        self._decoder = _decoder(self.response.headers.get("content-encoding"))
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        resp = self.response
        if resp is None:
            return
        if self._decoder is None:
            resp._feed(body)
        else:
            self._decoder.decode(body, resp._feed)  # a ProtocolError fails the response

    def on_message_complete(self) -> None:
        resp = self.response
        if resp is None:
            return
        if self._decoder is not None:
            try:
                rest = self._decoder.finish()
            except ProtocolError as exc:
                self._error(exc)
                return
            if rest and not resp._feed(rest):
                return
        resp._finish()


def _head_too_large() -> ProtocolError:
    return ProtocolError(
        f"response head larger than {MAX_HEAD_BYTES} bytes", code="upstream_malformed"
    )


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
    key: PoolKey,
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
