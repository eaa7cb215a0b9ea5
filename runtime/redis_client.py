"""A small asyncio Redis client (RESP2) of our own, for the limits store.

One connection per process (per event loop), with automatic pipelining: every command issued
in the same loop iteration goes out in one write, and replies resolve their callers in order.
Scripts run with EVALSHA, falling back to EVAL (which loads them) on NOSCRIPT. Connecting
(TCP, AUTH, SELECT, PING) is bounded by `connect_timeout_s`, every reply by
`command_timeout_s`: a reply that does not come in time closes the connection and fails every
command on it. After a failed connect or a lost connection, commands fail at once
(`RedisUnavailable`) until a backoff of 0.1 s doubling to 2 s has passed; then the next
command connects again. So when Redis is down or hangs, a caller waits at most one timeout,
and callers never pile up.

URLs: `redis://[[user]:password@]host[:port][/db]`. `rediss://` (TLS) and unix sockets are
refused with a message saying what to use instead. The URL holds a password: errors name
`host:port/db` only (`RedisURL.where`), never the URL.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from dataclasses import dataclass
from typing import TypeAlias, cast
from urllib.parse import unquote, urlsplit

Arg: TypeAlias = str | bytes | int | float
# A reply; an error reply inside an array (never at the top: that raises) stays an object.
Reply: TypeAlias = "str | int | bytes | list[Reply] | RedisReplyError | None"


class RedisError(Exception):
    """Redis could not be used for a command."""


class RedisUnavailable(RedisError):
    """No connection, a connect or reply timeout, or the connection was lost: retry later."""


class RedisReplyError(RedisError):
    """Redis answered the command with an error (`-ERR ...`); `prefix` is its first word."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.prefix = message.split(" ", 1)[0]


class _Incomplete(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RedisURL:
    """Where Redis is and how to log in; parsed from a `redis://` URL."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        """Parse `redis://[[user]:password@]host[:port][/db]`; ValueError naming the problem
        (never the password)."""
        try:
            parts = urlsplit(url)
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the Redis URL is malformed (expected redis://host:port/db)") from None
        if parts.scheme == "rediss":
            raise ValueError(
                "rediss:// (TLS) is not supported: use redis:// on a private network, or a TLS "
                "tunnel (stunnel, spiped) listening on 127.0.0.1 and redis:// to it"
            )
        if parts.scheme != "redis":
            raise ValueError(
                f"the Redis URL's scheme is {parts.scheme or '(none)'!r}; expected redis://"
            )
        if not parts.hostname:
            raise ValueError("the Redis URL has no host (expected redis://host:port/db)")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the Redis URL's database must be a number, not {path!r}")
        return cls(
            host=parts.hostname,
            port=port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    @property
    def where(self) -> str:
        """`host:port/db`, for messages (no credentials)."""
        return f"{self.host}:{self.port}/{self.db}"


class Script:
    """A Lua script and its SHA1, for EVALSHA."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def encode(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if type(a) is str:
            b = a.encode()
        elif type(a) is int:
            b = b"%d" % a
        elif isinstance(a, bytes):
            b = a
        else:
            b = repr(a).encode()
        out += (b"$%d\r\n" % len(b), b, b"\r\n")
    return b"".join(out)


def parse(buf: bytes | bytearray, pos: int) -> tuple[Reply, int]:
    """One RESP2 reply from `buf` at `pos`: (reply, position after it); raises _Incomplete
    when `buf` does not hold all of it yet. An error reply is returned as RedisReplyError."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    line = bytes(buf[pos + 1 : end])
    after = end + 2
    if kind == 0x2B:  # +
        return line.decode(), after
    if kind == 0x2D:  # -
        return RedisReplyError(line.decode(errors="replace")), after
    if kind == 0x3A:  # :
        return int(line), after
    if kind == 0x24:  # $
        n = int(line)
        if n < 0:
            return None, after
        if len(buf) < after + n + 2:
            raise _Incomplete
        return bytes(buf[after : after + n]), after + n + 2
    if kind == 0x2A:  # *
        n = int(line)
        if n < 0:
            return None, after
        items: list[Reply] = []
        for _ in range(n):
            item, after = parse(buf, after)
            items.append(item)
        return items, after
    raise RedisUnavailable(f"Redis sent a reply this client cannot read (type byte {kind!r})")


class _Connection(asyncio.Protocol):
    """One TCP connection: writes batched per loop iteration, replies matched in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, where: str) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.where = where
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[asyncio.Future[Reply], float]] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.watchdog: asyncio.TimerHandle | None = None
        self.inbuf = bytearray()
        self.closed = False
        self.error: RedisUnavailable | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have write/abort.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes) -> asyncio.Future[Reply]:
        """Queue one encoded command; the future gets its reply."""
        fut: asyncio.Future[Reply] = self.loop.create_future()
        if self.closed:
            fut.set_exception(self.error or RedisUnavailable(f"Redis at {self.where}: closed"))
            return fut
        self.pending.append((fut, self.loop.time() + self.timeout_s))
        self.out.append(command)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(self.pending[0][1], self._check)
        return fut

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.transport is not None and not self.closed:
            data = b"".join(self.out)
            self.out.clear()
            self.transport.write(data)

    def _check(self) -> None:
        self.watchdog = None
        if not self.pending:
            return
        deadline = self.pending[0][1]
        if deadline <= self.loop.time():
            self.abort(
                RedisUnavailable(
                    f"Redis at {self.where} did not answer within {self.timeout_s:g} s"
                )
            )
        else:
            self.watchdog = self.loop.call_at(deadline, self._check)

    def data_received(self, data: bytes) -> None:
        buf = self.inbuf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                reply, pos = parse(buf, pos)
                if not self.pending:
                    raise RedisUnavailable(f"Redis at {self.where} sent a reply nobody asked for")
                fut, _ = self.pending.popleft()
                if not fut.done():
                    if isinstance(reply, RedisReplyError):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
        except _Incomplete:
            pass
        except (RedisUnavailable, ValueError) as exc:
            self.abort(
                exc
                if isinstance(exc, RedisUnavailable)
                else RedisUnavailable(f"{self.where}: {exc}")
            )
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(RedisUnavailable(f"the connection to Redis at {self.where} was lost"))

    def abort(self, error: RedisUnavailable) -> None:
        """Close the connection and fail every command waiting on it with `error`."""
        if self.closed:
            return
        self.closed = True
        self.error = error
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.transport is not None:
            self.transport.abort()
        while self.pending:
            fut, _ = self.pending.popleft()
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # a caller that went away must not log "never retrieved"


class RedisClient:
    """The process's connection to Redis; use it from one event loop.

    `up` says whether the last attempt to use Redis worked; `last_error` why it did not.
    """

    BACKOFF_MIN_S = 0.1
    BACKOFF_MAX_S = 2.0

    def __init__(
        self,
        url: str | RedisURL,
        *,
        connect_timeout_s: float = 0.5,
        command_timeout_s: float = 0.5,
    ) -> None:
        self.url = url if isinstance(url, RedisURL) else RedisURL.parse(url)
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.up = False
        self.last_error: str | None = None
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._retry_at = 0.0
        self._backoff = self.BACKOFF_MIN_S
        self._closed = False

    async def execute(self, *args: Arg) -> Reply:
        """Send one command and return its reply; RedisReplyError for an error reply,
        RedisUnavailable when Redis cannot be reached in time."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        try:
            reply = await conn.send(encode(args))
        except RedisUnavailable as exc:
            if self._conn is conn:  # the first of the commands the connection failed
                self._conn = None
                self._back_off()
            self._down(str(exc))
            raise
        self.up = True
        return reply

    async def run_script(self, script: Script, keys: list[str], args: list[Arg]) -> Reply:
        """EVALSHA `script`; EVAL it (which loads it) when Redis does not know it yet."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if exc.prefix != "NOSCRIPT":
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    def script_nowait(
        self, script: Script, keys: list[str], args: list[Arg]
    ) -> asyncio.Future[Reply] | None:
        """EVALSHA `script` on the open connection without waiting for it: the future gets
        the reply (a NOSCRIPT error included: then use `run_script`). None when no
        connection is open; the caller uses the awaited `run_script`, which connects."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        return conn.send(encode(("EVALSHA", script.sha, len(keys), *keys, *args)))

    async def close(self) -> None:
        """Close the connection; commands after this fail."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.abort(RedisUnavailable(f"the client of Redis at {self.url.where} closed"))
            self._conn = None

    def _back_off(self) -> None:
        self._retry_at = asyncio.get_running_loop().time() + self._backoff
        self._backoff = min(self.BACKOFF_MAX_S, self._backoff * 2)

    def _down(self, reason: str) -> None:
        self.up = False
        self.last_error = reason

    async def _connection(self) -> _Connection:
        if self._closed:
            raise RedisUnavailable(f"the client of Redis at {self.url.where} is closed")
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            if loop.time() < self._retry_at:
                raise RedisUnavailable(self.last_error or f"Redis at {self.url.where} is down")
            self._connecting = loop.create_task(self._connect())
        task = self._connecting
        return await asyncio.shield(task)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        u = self.url
        conn: _Connection | None = None
        try:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop, self.connect_timeout_s, u.where), u.host, u.port
                    )
                    handshake: list[asyncio.Future[Reply]] = []
                    if u.password is not None:
                        auth: tuple[Arg, ...] = (
                            ("AUTH", u.username, u.password) if u.username else ("AUTH", u.password)
                        )
                        handshake.append(conn.send(encode(auth)))
                    if u.db:
                        handshake.append(conn.send(encode(("SELECT", u.db))))
                    # A server that accepts connections but does not answer (stopped, or
                    # overloaded) is down: only a reply makes the connection count.
                    handshake.append(conn.send(encode(("PING",))))
                    for fut in handshake:
                        await fut
            except TimeoutError:
                raise RedisUnavailable(
                    f"cannot connect to Redis at {u.where} within {self.connect_timeout_s:g} s"
                ) from None
            except OSError as exc:
                raise RedisUnavailable(
                    f"cannot connect to Redis at {u.where}: {exc.strerror or exc}"
                ) from None
            except RedisReplyError as exc:
                raise RedisUnavailable(
                    f"Redis at {u.where} refused the login or database ({exc.prefix}): check the "
                    "user, password and database number in the Redis URL secret"
                ) from None
        except RedisUnavailable as exc:
            if conn is not None:
                conn.abort(exc)
            self._back_off()
            self._down(str(exc))
            raise
        finally:
            self._connecting = None
        assert conn is not None
        conn.timeout_s = self.command_timeout_s
        self._conn = conn
        self._backoff = self.BACKOFF_MIN_S
        self.up = True
        return conn
