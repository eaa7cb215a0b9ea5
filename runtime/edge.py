"""The `edge` service: a TCP load balancer in front of N gateway replicas.

With `replicas > 1` compose runs N `gateway` containers that publish nothing and one `edge`
container that publishes the port (docs/artifacts.md). Compose's DNS resolves the service
name `gateway` to every replica's IP, so the edge re-resolves its upstream names every few
seconds and spreads connections round-robin over the addresses it got. It works at the TCP
level, so HTTP keep-alive and SSE streams pass through untouched; balancing is per
connection. The one thing it reads is the start of each connection's first request line:
`GET /healthz` (or `HEAD`) is answered by the edge itself — it reads no config and has no
secrets, so being up and listening is all its health means.

    python -m runtime.edge --listen 0.0.0.0:8000 --upstream gateway:8000
    python -m runtime.edge --listen 127.0.0.1:8000 --upstream 127.0.0.1:9001,127.0.0.1:9002

A backend whose connect fails is marked down for a few seconds and the connection is retried
on the next one; backends marked down are still tried, last, before a client is turned away.
SIGTERM/SIGINT stop accepting, let open connections finish (up to `--drain-timeout`), exit 0.
Only the standard library (and uvloop when importable).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger("switchyard.edge")

Address = tuple[str, int]
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port) -> IP addresses`; raises OSError when the name does not resolve."""

_HEALTH_PREFIXES = (b"GET /healthz ", b"GET /healthz?", b"HEAD /healthz ", b"HEAD /healthz?")
_HEALTH_HEAD_MAX = max(len(p) for p in _HEALTH_PREFIXES)
_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_LINGER_S = 2.0  # how long a health client may take to read the answer and hang up
_FIN_TIMEOUT_S = 5.0  # once a backend has finished sending, how long the client may stay open


def format_address(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, *, allow_port_zero: bool = False) -> Address:
    """`HOST:PORT` (or `[IPv6]:PORT`) -> `(host, port)`; ValueError when malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


def parse_upstreams(text: str) -> list[Address]:
    """A comma-separated list of `HOST:PORT` -> addresses; ValueError when malformed or empty."""
    targets = [parse_address(part) for part in text.split(",") if part.strip()]
    if not targets:
        raise ValueError(f"{text!r}: expected HOST:PORT[,HOST:PORT...]")
    return targets


def system_resolver() -> Resolver:
    """The default resolver: getaddrinfo on the running loop (off the event loop thread)."""

    async def resolve(host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})

    return resolve


@dataclass(eq=False)
class Backend:
    """One upstream address; `down_until` (monotonic) is in the future while marked down."""

    host: str
    port: int
    down_until: float = 0.0
    down: bool = False  # the state last logged; a backend stays "down" until a connect succeeds

    @property
    def label(self) -> str:
        return format_address(self.host, self.port)


class Pool:
    """The backends behind the upstream names, their up/down state and the round-robin pick."""

    def __init__(
        self, targets: Sequence[Address], *, resolver: Resolver, down_for: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = list(targets)
        self._resolver = resolver
        self._down_for = down_for
        self._clock = clock
        self._resolved: dict[Address, list[Address]] = {}  # last good answer per target
        self._failing: set[Address] = set()
        self._backends: dict[Address, Backend] = {}
        self._next = 0
        self._refreshed = False

    @property
    def backends(self) -> list[Backend]:
        """Every known backend, in a stable order."""
        return list(self._backends.values())

    async def refresh(self) -> None:
        """Resolve every upstream name again; a name that fails keeps its last addresses."""
        for target in self._targets:
            host, port = target
            try:
                ips = await self._resolver(host, port)
            except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA rejects
                if target not in self._failing:
                    self._failing.add(target)
                    log.warning("cannot resolve %s (%s); keeping its last known backends",
                                format_address(host, port), exc)
                continue
            if target in self._failing:
                self._failing.discard(target)
                log.info("%s resolves again", format_address(host, port))
            self._resolved[target] = [(ip, port) for ip in ips]
        wanted = sorted({addr for addrs in self._resolved.values() for addr in addrs})
        backends: dict[Address, Backend] = {}
        for addr in wanted:
            backend = self._backends.get(addr)
            if backend is None:
                backend = Backend(*addr)
                if self._refreshed:  # the first ones are in the start line
                    log.info("backend added: %s", backend.label)
            backends[addr] = backend
        for addr, backend in self._backends.items():
            if addr not in backends:
                log.info("backend removed: %s", backend.label)
        self._backends = backends
        self._refreshed = True

    def candidates(self) -> list[Backend]:
        """The backends to try for one new connection, in order.

        Round-robin over the backends not marked down, then (last resort) those marked down.
        """
        now = self._clock()
        up = [b for b in self._backends.values() if b.down_until <= now]
        down = [b for b in self._backends.values() if b.down_until > now]
        if up:
            start = self._next % len(up)
            self._next = start + 1
            up = up[start:] + up[:start]
        return up + down

    def mark_down(self, backend: Backend, reason: BaseException) -> None:
        """A connect to `backend` failed: skip it for `down_for` seconds."""
        backend.down_until = self._clock() + self._down_for
        if not backend.down:
            backend.down = True
            log.warning("backend down: %s (%s)", backend.label, _describe(reason))

    def mark_up(self, backend: Backend) -> None:
        """A connect to `backend` succeeded."""
        backend.down_until = 0.0
        if backend.down:
            backend.down = False
            log.info("backend up: %s", backend.label)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    return f"{type(exc).__name__}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else repr(exc)


class _Side(asyncio.Protocol):
    """One TCP connection of a proxied pair: what it receives is written to its peer.

    Backpressure: when this side's write buffer fills, the peer stops reading until it drains.
    Half-close: an EOF received is passed on as an EOF written; the pair closes once both
    directions have ended, or as soon as either connection is lost (aborted on an error).
    This class is the backend's side; once a backend has ended its direction, the client
    gets `_FIN_TIMEOUT_S` to end its own, so a client that never hangs up leaks nothing.
    """

    fin_timeout: float | None = _FIN_TIMEOUT_S

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False
        self.lost = False
        self._lost_error: BaseException | None = None
        self._pending = bytearray()  # received before the peer is attached

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._pending += data
            self._pause_reading()  # bounded buffering until there is somewhere to send it
        else:
            self.peer._write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None:
            self._forward_eof()
        return True  # keep the transport open: the other direction may still be sending

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer._pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer._resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._lost_error = exc
        if self.peer is not None:
            self.peer._close(abort=exc is not None)

    def attach(self, peer: _Side) -> None:
        """Pair with `peer` and pass on whatever either side received before."""
        self.peer, peer.peer = peer, self
        for side in (self, peer):
            side._flush()

    def _flush(self) -> None:
        peer = self.peer
        assert peer is not None
        # Resume before writing: the write may fill the peer's buffer and pause us again.
        if not (self.lost or self.eof):
            self._resume_reading()
        if self._pending:
            peer._write(bytes(self._pending))
            self._pending.clear()
        if self.lost:
            peer._close(abort=self._lost_error is not None)
        elif self.eof:
            self._forward_eof()

    def _forward_eof(self) -> None:
        peer = self.peer
        assert peer is not None and peer.transport is not None
        if peer.eof:
            self._close(abort=False)
            peer._close(abort=False)
        elif peer.transport.can_write_eof() and not peer.transport.is_closing():
            peer.transport.write_eof()
            if self.fin_timeout is not None:
                asyncio.get_running_loop().call_later(self.fin_timeout, self._close_pair)
        else:
            peer._close(abort=False)

    def _close_pair(self) -> None:
        self._close()
        if self.peer is not None:
            self.peer._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.eof:
            self.transport.resume_reading()

    def _close(self, abort: bool = False) -> None:
        if self.transport is not None:
            if abort:
                self.transport.abort()
            elif not self.transport.is_closing():
                self.transport.close()  # flushes what is still buffered first


class _ClientSide(_Side):
    """The accepted connection: answers a health check itself, or connects a backend."""

    fin_timeout = None  # a client may half-close and still wait long for its response

    def __init__(self, edge: Edge) -> None:
        super().__init__()
        self._edge = edge
        self._mode = "head"  # -> "health" or "proxy" once the first bytes tell
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._edge.connection_started(self)

    def data_received(self, data: bytes) -> None:
        if self._mode == "proxy":
            super().data_received(data)
        elif self._mode == "head":
            self._pending += data
            is_health = _health_request(bytes(self._pending[:_HEALTH_HEAD_MAX]))
            if is_health is not None:
                self._decide(health=is_health)
        # "health": the rest of the request is read and dropped

    def eof_received(self) -> bool:
        if self._mode == "head" and self._pending:
            self._decide(health=False)
        if self._mode == "proxy":
            return super().eof_received()
        self._close(abort=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._edge.connection_done(self)

    def _decide(self, *, health: bool) -> None:
        assert self.transport is not None
        if health:
            self._mode = "health"
            head_only = self._pending.startswith(b"HEAD")
            self._pending.clear()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(_HEALTH_BODY), b"" if head_only else _HEALTH_BODY))
            # Half-close and let the client hang up: closing while its bytes may still arrive
            # would reset the connection, which can destroy the answer before it is read.
            self.transport.write_eof()
            asyncio.get_running_loop().call_later(_HEALTH_LINGER_S, self._close, False)
        else:
            self._mode = "proxy"
            self._pause_reading()
            self._task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        edge = self._edge
        if not edge.pool.backends:
            await edge.pool.refresh()
        loop = asyncio.get_running_loop()
        for backend in edge.pool.candidates():
            if self.lost:
                return
            try:
                _, upstream = await asyncio.wait_for(
                    loop.create_connection(_Side, backend.host, backend.port), edge.connect_timeout)
            except (OSError, TimeoutError) as exc:
                edge.pool.mark_down(backend, exc)
                continue
            edge.pool.mark_up(backend)
            self.attach(upstream)
            return
        edge.unreachable()
        self._close(abort=False)


def _health_request(head: bytes) -> bool | None:
    """Whether a connection's first bytes are a health check; None while too few to tell."""
    if head.startswith(_HEALTH_PREFIXES):
        return True
    if len(head) < _HEALTH_HEAD_MAX and any(p.startswith(head) for p in _HEALTH_PREFIXES):
        return None
    return False


class Edge:
    """The accepting side: one `_ClientSide` per connection, tracked for a graceful stop."""

    def __init__(self, pool: Pool, *, connect_timeout: float, upstream: str) -> None:
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.connections: set[_ClientSide] = set()
        self._upstream = upstream
        self._idle = asyncio.Event()
        self._idle.set()
        self._unreachable = 0
        self._unreachable_logged = float("-inf")

    def protocol(self) -> _ClientSide:
        """The protocol factory for `loop.create_server`."""
        return _ClientSide(self)

    def connection_started(self, side: _ClientSide) -> None:
        self.connections.add(side)
        self._idle.clear()

    def connection_done(self, side: _ClientSide) -> None:
        self.connections.discard(side)
        if not self.connections:
            self._idle.set()

    def unreachable(self) -> None:
        """Log that a client was turned away (at most one line a second, with a count)."""
        self._unreachable += 1
        now = time.monotonic()
        if now - self._unreachable_logged >= 1.0:
            log.warning("no backend of %s reachable: closed %d client connection(s)",
                        self._upstream, self._unreachable)
            self._unreachable, self._unreachable_logged = 0, now

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for open connections to end, then cut the rest."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("closing %d connection(s) still open after %.0f s", len(self.connections), timeout)
            for side in list(self.connections):
                side._close(abort=True)
                if side.peer is not None:
                    side.peer._close(abort=True)


async def run(
    listen: str, upstream: str, *, resolve_interval: float = 2.0, connect_timeout: float = 2.0,
    down_for: float = 3.0, drain_timeout: float = 10.0, stop: asyncio.Event | None = None,
    resolver: Resolver | None = None,
) -> None:
    """Serve until `stop` is set (by default: until SIGTERM or SIGINT), then drain and return."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    host, port = parse_address(listen, allow_port_zero=True)
    pool = Pool(parse_upstreams(upstream), resolver=resolver or system_resolver(), down_for=down_for)
    await pool.refresh()
    edge = Edge(pool, connect_timeout=connect_timeout, upstream=upstream)
    server = await loop.create_server(edge.protocol, host, port, backlog=1024)
    bound = ", ".join(format_address(*s.getsockname()[:2]) for s in server.sockets)
    log.info("listening on %s, upstream %s, backends: %s", bound, upstream,
             ", ".join(b.label for b in pool.backends) or "none yet")
    refresher = loop.create_task(_refresh_every(pool, resolve_interval))
    try:
        await stop.wait()
    finally:
        server.close()
        refresher.cancel()
        log.info("stopping: no longer accepting, %d connection(s) open", len(edge.connections))
        await edge.drain(drain_timeout)
        log.info("stopped")


async def _refresh_every(pool: Pool, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await pool.refresh()


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _checked(parse: Callable[[str], object]) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        type=_checked(lambda t: parse_address(t, allow_port_zero=True)),
                        help="address to accept connections on (port 0: any free port)")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                        type=_checked(parse_upstreams),
                        help="backends; a name stands for every address it resolves to")
    parser.add_argument("--resolve-interval", type=float, default=2.0, metavar="SECONDS",
                        help="how often to resolve the upstream names again (default 2)")
    parser.add_argument("--connect-timeout", type=float, default=2.0, metavar="SECONDS",
                        help="give up connecting to one backend after this long (default 2)")
    parser.add_argument("--down-for", type=float, default=3.0, metavar="SECONDS",
                        help="skip a backend whose connect failed for this long (default 3)")
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="on SIGTERM, wait this long for open connections (default 10)")
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s edge %(levelname)s %(message)s")
    _run_loop(run(args.listen, args.upstream, resolve_interval=args.resolve_interval,
                  connect_timeout=args.connect_timeout, down_for=args.down_for,
                  drain_timeout=args.drain_timeout))
    return 0


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `edge` subcommand (its `func` takes the parsed args, returns the exit code)."""
    parser = subparsers.add_parser(
        "edge", help="balance TCP connections over the gateway replicas",
        description="Balance TCP connections over every address of the upstream names.")
    _add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m runtime.edge ...`: the edge without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="python -m runtime.edge",
                                     description="Balance TCP connections over every address of the upstream names.")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
