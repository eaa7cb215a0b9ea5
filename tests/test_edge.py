"""The `edge` load balancer (runtime/edge.py), run as a real subprocess in front of real HTTP
backends on 127.0.0.1 — what a client of `127.0.0.1:<port>` sees with `replicas > 1`.

Balancing is per TCP connection, round-robin over the backends that are up; a backend that
refuses connections is skipped without the client noticing; streams pass through as they are
produced; SIGTERM stops accepting, lets in-flight requests finish and exits 0. The pool's
resolution and round-robin rules are also tested in-process with a fake resolver.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runtime.edge import Pool, parse_address, parse_upstreams, run

ROOT = Path(__file__).resolve().parent.parent
BIG = hashlib.sha256(b"switchyard").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB
HUGE_PIECES = 8


class _Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


class FakeGateway:
    """A tiny HTTP/1.1 server in a thread that says who it is.

    GET /whoami -> its name; GET /healthz -> "backend"; GET /slow -> waits 1 s first;
    GET /stream -> a chunked SSE-like stream that holds after its first event until
    `stream_gate` is set; GET /big -> 8 MiB; GET /huge -> 64 MiB, then sets `huge_sent`;
    POST /echo -> length and sha256 of the body.
    """

    def __init__(self, name: str, port: int = 0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.stream_gate = threading.Event()
        self.slow_started = threading.Event()
        self.huge_sent = threading.Event()
        self.connections = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                gateway.connections += 1

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/stream":
                    self._stream()
                    return
                if self.path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Length", str(HUGE_PIECES * len(BIG)))
                    self.end_headers()
                    for _ in range(HUGE_PIECES):
                        self.wfile.write(BIG)
                    gateway.huge_sent.set()
                    return
                if self.path == "/slow":
                    gateway.slow_started.set()
                    time.sleep(1.0)
                body = {"/healthz": b"backend", "/big": BIG}.get(self.path, gateway.name.encode())
                self._send(body)

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                self._send(f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(5):
                    if i == 1:
                        gateway.stream_gate.wait(10)
                    event = f"data: event {i} from {gateway.name}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.server = _Server((host, port), Handler)
        self.port: int = self.server.server_address[1]
        self.address = f"{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def kill(self) -> None:
        """Stop listening: connects to its port are refused from now on."""
        self.server.shutdown()
        self.server.server_close()


class EdgeProcess:
    """`python -m runtime.edge` as a subprocess; its stderr lines are collected."""

    def __init__(self, upstream: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.edge", "--listen", "127.0.0.1:0", "--upstream", upstream,
             "--resolve-interval", "0.2", *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        started = self.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        self.port = int(started.group(1))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line)

    def wait_for(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """The first stderr line (already seen or coming) matching `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if match := re.search(pattern, line):
                    return match
            try:
                self.lines.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}") from None

    def stderr(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "".join(self.lines)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get(self, path: str = "/whoami") -> tuple[int, bytes]:
        return self.request("GET", path)


@pytest.fixture
def gateways() -> Iterator[list[FakeGateway]]:
    servers = [FakeGateway(f"gw{i}") for i in range(3)]
    yield servers
    for server in servers:
        server.stream_gate.set()
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def start_edge() -> Iterator[type[EdgeProcess]]:
    started: list[EdgeProcess] = []

    class Started(EdgeProcess):
        def __init__(self, upstream: str, *extra: str) -> None:
            super().__init__(upstream, *extra)
            started.append(self)

    yield Started
    for edge in started:
        if edge.proc.poll() is None:
            edge.proc.kill()
            edge.proc.wait(5)
        assert "Traceback" not in edge.stderr(), edge.stderr()


def upstream_of(servers: list[FakeGateway]) -> str:
    return ",".join(s.address for s in servers)


# ---------------------------------------------------------------------------------------
# balancing and failover


def test_start_line_names_listen_address_upstream_and_backends(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(upstream_of(gateways))
    line = edge.wait_for(r"listening on .*").group(0)
    assert f"upstream {upstream_of(gateways)}" in line
    assert f"backends: {', '.join(sorted(s.address for s in gateways))}" in line


def test_connections_are_spread_round_robin_over_every_backend(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(upstream_of(gateways))
    served = Counter(edge.get()[1].decode() for _ in range(30))
    assert served == {"gw0": 10, "gw1": 10, "gw2": 10}


def test_a_keep_alive_connection_stays_on_one_backend(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(upstream_of(gateways))
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    answers = set()
    for _ in range(6):
        conn.request("GET", "/whoami")
        answers.add(conn.getresponse().read())
    conn.close()
    assert len(answers) == 1
    assert sum(s.connections for s in gateways) == 1


def test_a_killed_backend_is_skipped_without_client_visible_failures(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(upstream_of(gateways))
    gateways[1].kill()
    results = [edge.get() for _ in range(30)]
    assert all(status == 200 for status, _ in results)
    assert Counter(body.decode() for _, body in results) == {"gw0": 15, "gw2": 15}
    edge.wait_for(rf"backend down: {gateways[1].address} \(ConnectionRefusedError")
    assert edge.stderr().count("backend down") == 1, "one line per change, not per connection"


def test_a_backend_that_comes_back_gets_connections_again(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(upstream_of(gateways), "--down-for", "0.3")
    gateways[1].kill()
    assert {edge.get()[1] for _ in range(4)} == {b"gw0", b"gw2"}
    revived = FakeGateway("gw1-revived", port=gateways[1].port)
    try:
        time.sleep(0.4)
        served = {edge.get()[1] for _ in range(6)}
        assert b"gw1-revived" in served
        edge.wait_for(rf"backend up: {revived.address}")
    finally:
        revived.kill()


def test_with_no_backend_reachable_the_client_connection_is_closed(start_edge: type[EdgeProcess]) -> None:
    dead = [FakeGateway("dead0"), FakeGateway("dead1")]
    for server in dead:
        server.kill()
    edge = start_edge(upstream_of(dead))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        edge.get()
    edge.wait_for(r"no backend of .* reachable: closed 1 client connection")


def test_healthz_is_answered_by_the_edge_itself(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    dead = FakeGateway("dead")
    dead.kill()
    for upstream in (upstream_of(gateways), dead.address):
        edge = start_edge(upstream)
        assert edge.get("/healthz") == (200, b'{"status":"ok"}')
        assert edge.request("HEAD", "/healthz") == (200, b"")
    assert sum(s.connections for s in gateways) == 0


def test_paths_that_only_start_like_healthz_are_proxied(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(gateways[0].address)
    assert edge.get("/healthzz") == (200, b"gw0")
    assert edge.get("/v1/healthz") == (200, b"gw0")
    assert edge.request("POST", "/healthz", b"x") == (200, b"1 " + hashlib.sha256(b"x").hexdigest().encode())


# ---------------------------------------------------------------------------------------
# piping


def test_a_streamed_response_passes_through_incrementally_and_intact(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(gateways[0].address)
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    # The backend holds the rest of the stream until we have read the first event.
    assert response.readline() == b"data: event 0 from gw0\n"
    assert response.readline() == b"\n"
    gateways[0].stream_gate.set()
    rest = response.read()
    conn.close()
    assert rest == b"".join(f"data: event {i} from gw0\n\n".encode() for i in range(1, 5))


def test_large_bodies_pass_intact_both_ways(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(gateways[0].address)
    status, body = edge.get("/big")
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
    upload = BIG[: 5 * 1024 * 1024 + 7]
    status, body = edge.request("POST", "/echo", upload)
    assert body.decode() == f"{len(upload)} {hashlib.sha256(upload).hexdigest()}"


def test_a_slow_reader_holds_back_the_backend_and_still_gets_every_byte(
    gateways: list[FakeGateway], start_edge: type[EdgeProcess],
) -> None:
    edge = start_edge(gateways[0].address)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(1.0)
        # Backpressure: the edge stops reading from the backend while we do not read, so
        # the backend is still blocked sending 64 MiB instead of the edge buffering them.
        assert not gateways[0].huge_sent.is_set()
        data = bytearray()
        while chunk := sock.recv(1 << 20):
            data += chunk
    assert gateways[0].huge_sent.is_set()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert body == BIG * HUGE_PIECES


def test_a_half_closed_client_still_receives_the_response(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(gateways[0].address)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\ngw0")


# ---------------------------------------------------------------------------------------
# shutdown


def test_sigterm_stops_accepting_and_exits_0_after_in_flight_requests(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(gateways[0].address)
    result: list[object] = []

    def in_flight() -> None:
        try:
            result.append(edge.get("/slow"))
        except OSError as exc:
            result.append(exc)

    client = threading.Thread(target=in_flight)
    client.start()
    assert gateways[0].slow_started.wait(5)
    edge.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    deadline = time.monotonic() + 2
    while True:  # the listening socket goes away at once
        try:
            socket.create_connection(("127.0.0.1", edge.port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):  # reset: caught in the closing backlog
            break
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        time.sleep(0.05)

    client.join(10)
    assert result == [(200, b"gw0")]
    assert edge.proc.wait(5) == 0
    assert time.monotonic() - signalled < 5, "waited for the drain timeout instead of the request"


def test_connections_still_open_after_the_drain_timeout_are_cut(gateways: list[FakeGateway], start_edge: type[EdgeProcess]) -> None:
    edge = start_edge(gateways[0].address, "--drain-timeout", "0.5")
    idle = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
    idle.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: stays open
    answer = b""
    while not answer.endswith(b"gw0"):
        answer += idle.recv(65536)
    started = time.monotonic()
    edge.proc.send_signal(signal.SIGTERM)
    assert edge.proc.wait(5) == 0
    assert 0.4 < time.monotonic() - started < 3
    assert idle.recv(65536) == b""  # cut by the edge
    idle.close()


# ---------------------------------------------------------------------------------------
# the pool, in-process


class FakeDNS:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def labels(pool: Pool) -> list[str]:
    return [b.label for b in pool.candidates()]


def test_a_name_stands_for_every_address_it_resolves_to() -> None:
    pool = Pool([("gateway", 8000)], resolver=FakeDNS({"gateway": ["10.0.0.3", "10.0.0.2"]}))
    asyncio.run(pool.refresh())
    assert [b.label for b in pool.backends] == ["10.0.0.2:8000", "10.0.0.3:8000"]
    assert [labels(pool)[0] for _ in range(4)] == ["10.0.0.2:8000", "10.0.0.3:8000"] * 2


def test_re_resolution_adds_and_removes_backends(caplog: pytest.LogCaptureFixture) -> None:
    dns = FakeDNS({"gateway": ["10.0.0.2"]})
    pool = Pool([("gateway", 8000)], resolver=dns)
    asyncio.run(pool.refresh())
    caplog.set_level(logging.INFO, "switchyard.edge")
    dns.answers["gateway"] = ["10.0.0.3", "10.0.0.4"]
    asyncio.run(pool.refresh())
    assert [b.label for b in pool.backends] == ["10.0.0.3:8000", "10.0.0.4:8000"]
    assert caplog.messages == ["backend added: 10.0.0.3:8000", "backend added: 10.0.0.4:8000",
                               "backend removed: 10.0.0.2:8000"]


def test_a_name_that_stops_resolving_keeps_its_last_backends(caplog: pytest.LogCaptureFixture) -> None:
    dns = FakeDNS({"gateway": ["10.0.0.2"], "other": ["10.0.0.9"]})
    pool = Pool([("gateway", 8000), ("other", 9000)], resolver=dns)
    asyncio.run(pool.refresh())
    del dns.answers["gateway"]
    caplog.set_level(logging.INFO, "switchyard.edge")
    asyncio.run(pool.refresh())
    asyncio.run(pool.refresh())
    assert [b.label for b in pool.backends] == ["10.0.0.2:8000", "10.0.0.9:9000"]
    assert len(caplog.messages) == 1 and caplog.messages[0].startswith("cannot resolve gateway:8000")


def test_a_backend_marked_down_is_skipped_until_its_time_is_up_then_tried_again() -> None:
    clock = Clock()
    pool = Pool([("gateway", 8000)], resolver=FakeDNS({"gateway": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}),
                down_for=3.0, clock=clock)
    asyncio.run(pool.refresh())
    b2 = pool.backends[1]
    pool.mark_down(b2, ConnectionRefusedError(111, "Connection refused"))
    firsts = [labels(pool)[0] for _ in range(4)]
    assert firsts == ["10.0.0.1:8000", "10.0.0.3:8000"] * 2  # even over the ones that are up
    assert labels(pool)[-1] == "10.0.0.2:8000"  # a last resort, never dropped
    clock.now += 3.1
    assert "10.0.0.2:8000" in [labels(pool)[0] for _ in range(3)]
    assert b2.down  # until a connect succeeds
    pool.mark_up(b2)
    assert not b2.down


def test_in_process_run_spreads_over_every_address_a_name_resolves_to() -> None:
    first = FakeGateway("on-127.0.0.1")
    second = FakeGateway("on-127.0.0.2", port=first.port, host="127.0.0.2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dns = FakeDNS({"gateway": ["127.0.0.1", "127.0.0.2"]})

    async def scenario() -> list[bytes]:
        stop = asyncio.Event()
        edge = asyncio.create_task(run(f"127.0.0.1:{port}", f"gateway:{first.port}", stop=stop, resolver=dns))
        bodies: list[bytes] = []
        while len(bodies) < 4:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:  # not listening yet
                await asyncio.sleep(0.02)
                continue
            writer.write(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            bodies.append((await reader.read()).rpartition(b"\r\n\r\n")[2])
            writer.close()
        stop.set()
        await asyncio.wait_for(edge, 5)
        return bodies

    try:
        assert asyncio.run(scenario()) == [b"on-127.0.0.1", b"on-127.0.0.2"] * 2
    finally:
        first.kill()
        second.kill()


def test_addresses_are_parsed_strictly() -> None:
    assert parse_address("gateway:8000") == ("gateway", 8000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_upstreams("127.0.0.1:9001, 127.0.0.1:9002") == [("127.0.0.1", 9001), ("127.0.0.1", 9002)]
    for bad in ("gateway", ":8000", "gateway:", "gateway:http", "gateway:0", "gateway:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)
    with pytest.raises(ValueError):
        parse_upstreams(" , ")


def test_a_malformed_address_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "runtime.edge", "--listen", "127.0.0.1:0", "--upstream", "gateway"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--upstream: 'gateway': expected HOST:PORT" in proc.stderr
    assert "Traceback" not in proc.stderr
