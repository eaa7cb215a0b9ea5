"""The gateway's own HTTP/1.1 client (runtime/adapters/transport.py), against real loopback servers.

Servers here are raw asyncio servers so each test controls the exact bytes on the wire; they
run in the test's own event loop (`asyncio.run`), and count the TCP connections they accept.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.adapters import transport as transport_mod
from runtime.adapters.transport import (
    ConnectError,
    ConnectionLost,
    ProtocolError,
    Response,
    Timeout,
    Transport,
)

T = Timeout(total=5.0, connect=2.0, read=2.0)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from an environment without proxy settings (the CI host may have some)."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# -- servers -------------------------------------------------------------------------------


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request off the wire, or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *rest = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for h in rest:
        if h:
            name, _, value = h.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(line, headers, body)


Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    handler: Handler
    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # a connection ended
    port: int = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self.closed.set()

    async def next_request(self, reader: asyncio.StreamReader) -> Request | None:
        req = await read_request(reader)
        if req is not None:
            self.requests.append(req)
        return req

    def url(self, path: str = "/v1/x", host: str | None = None) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"


@contextlib.asynccontextmanager
async def serve(
    handler: Handler, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    srv = Server(handler, host, tls)
    server = await asyncio.start_server(srv._accept, host, 0, ssl=tls)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        server.close()


def response(body: bytes = b"hello", *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(h + "\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def answering(*raw: bytes) -> Handler:
    """Answer each request on a connection with the next of `raw` (the last one repeats)."""

    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        n = 0
        while await srv.next_request(reader) is not None:
            writer.write(raw[min(n, len(raw) - 1)])
            await writer.drain()
            n += 1

    return handler


async def get_body(t: Transport, url: str, timeout: Timeout = T) -> tuple[Response, bytes]:
    resp = await t.post(url, {"content-type": "application/json"}, b"{}", timeout)
    return resp, await resp.read()


# -- 1. bodies and headers -----------------------------------------------------------------


def test_content_length_body_read_whole_and_headers_lower_cased_with_repeats_joined() -> None:
    raw = response(
        b'{"ok":true}',
        "Content-Type: application/json",
        "X-Thing: a",
        "x-thing: b",
        status="201 Created",
    )

    async def main() -> None:
        async with serve(answering(raw)) as srv, Transport() as t:
            resp, body = await get_body(t, srv.url())
            assert (resp.status, body) == (201, b'{"ok":true}')
            assert resp.headers["content-type"] == "application/json"
            assert resp.headers.get("Content-Type") == "application/json"
            assert resp.headers["x-thing"] == "a, b"
            assert resp.headers.get("missing") is None

    run(main())


def test_content_length_body_through_iter_any() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"56789")
        await reader.read()

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"", T)
            pieces = [p async for p in resp.iter_any()]
            assert b"".join(pieces) == b"0123456789"
            assert len(pieces) == 2
            resp.release()

    run(main())


def test_chunked_body_read_whole_and_through_iter_any() -> None:
    raw = CHUNKED_HEAD + chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n") + b"0\r\n\r\n"

    async def main() -> None:
        async with serve(answering(raw)) as srv, Transport() as t:
            resp, body = await get_body(t, srv.url())
            assert body == b"data: 1\n\ndata: 2\n\n"
            assert resp.headers["transfer-encoding"] == "chunked"
            resp = await t.post(srv.url(), {}, b"", T)
            assert b"".join([p async for p in resp.iter_any()]) == b"data: 1\n\ndata: 2\n\n"
            resp.release()

    run(main())


def test_body_delimited_by_connection_close_is_read_to_the_end() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"end")

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            _, body = await get_body(t, srv.url())
            assert body == b"until the end"

    run(main())


# -- 2. keep-alive -------------------------------------------------------------------------


def test_sequential_requests_reuse_one_connection() -> None:
    async def main() -> None:
        async with (
            serve(answering(response(b"a"), response(b"b"), response(b"c"))) as srv,
            Transport() as t,
        ):
            bodies = [(await get_body(t, srv.url()))[1] for _ in range(3)]
            assert bodies == [b"a", b"b", b"c"]
            assert srv.connections == 1

    run(main())


def test_connection_close_response_is_not_reused() -> None:
    async def main() -> None:
        async with serve(answering(response(b"x", "Connection: close"))) as srv, Transport() as t:
            for _ in range(2):
                await get_body(t, srv.url())
            assert srv.connections == 2

    run(main())


def test_response_released_before_its_end_closes_the_connection() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if srv.connections > 1:
            return await answering(response(b"abcdef"))(srv, reader, writer)
        await srv.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc")  # the rest never comes
        await reader.read()  # until the client hangs up

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"", T)
            resp.release()
            await asyncio.wait_for(srv.closed.wait(), 0.5)  # the client hung up at once
            _, body = await get_body(t, srv.url())
            assert body == b"abcdef"
            assert srv.connections == 2

    run(main())


def test_idle_connections_older_than_idle_keep_are_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_mod, "IDLE_KEEP_S", 0.05)

    async def main() -> None:
        async with serve(answering(response())) as srv, Transport() as t:
            await get_body(t, srv.url())
            await get_body(t, srv.url())
            assert srv.connections == 1  # quick enough: reused
            await asyncio.sleep(0.1)
            await get_body(t, srv.url())
            assert srv.connections == 2

    run(main())


def test_pooled_connection_closed_by_the_server_while_idle_is_not_used() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(response(b"once"))  # keep-alive by default, but the server then hangs up
        await writer.drain()

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            await get_body(t, srv.url())
            await asyncio.wait_for(srv.closed.wait(), 2)
            await asyncio.sleep(0.05)  # let the client see the FIN
            resp, body = await get_body(t, srv.url())
            assert (resp.status, body) == (200, b"once")
            assert srv.connections == 2

    run(main())


# -- 3. errors -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_connection_refused_is_connect_error() -> None:
    async def main() -> None:
        async with Transport() as t:
            with pytest.raises(ConnectError, match=r"cannot connect to 127\.0\.0\.1"):
                await t.post(f"http://127.0.0.1:{free_port()}/v1/x", {}, b"", T)

    run(main())


def test_server_closing_without_an_answer_is_connection_lost_before_response() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            with pytest.raises(ConnectionLost) as exc:
                await t.post(srv.url(), {}, b"{}", T)
            assert exc.value.response_started is False
            assert len(srv.requests) == 1

    run(main())


def test_body_cut_short_is_connection_lost_from_read_and_iter_any() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
        await writer.drain()
        await asyncio.sleep(0.05)

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"", T)
            with pytest.raises(ConnectionLost) as exc:
                await resp.read()
            assert exc.value.response_started is True
            resp.release()

            resp = await t.post(srv.url(), {}, b"", T)
            got = b""
            with pytest.raises(ConnectionLost):
                async for piece in resp.iter_any():
                    got += piece
            assert got == b"01234"
            resp.release()

    run(main())


def test_garbage_instead_of_http_is_protocol_error() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            with pytest.raises(ProtocolError):
                await t.post(srv.url(), {}, b"", T)

    run(main())


def silent(delay: float, first: bytes = b"") -> Handler:
    """Send `first` (maybe nothing), then say nothing for `delay` seconds."""

    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(delay)

    return handler


def test_no_response_head_within_read_timeout_is_timeout_error() -> None:
    async def main() -> None:
        async with serve(silent(3)) as srv, Transport() as t:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                await t.post(srv.url(), {}, b"", Timeout(total=None, connect=1.0, read=0.2))
            assert 0.15 < time.monotonic() - start < 1.0

    run(main())


def test_body_stalling_past_read_timeout_is_timeout_error_from_iter_any() -> None:
    async def main() -> None:
        async with serve(silent(3, CHUNKED_HEAD + chunk(b"first"))) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"", Timeout(total=None, connect=1.0, read=0.2))
            got = []
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                async for piece in resp.iter_any():
                    got.append(piece)
            assert got == [b"first"]
            assert 0.15 < time.monotonic() - start < 1.0
            resp.release()

    run(main())


def test_total_timeout_bounds_the_whole_exchange() -> None:
    async def dripping(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(CHUNKED_HEAD)
        for _ in range(50):  # never silent for long, never done
            writer.write(chunk(b"."))
            await writer.drain()
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with serve(dripping) as srv, Transport() as t:
            start = time.monotonic()
            resp = await t.post(srv.url(), {}, b"", Timeout(total=0.4, connect=1.0, read=1.0))
            got = b""
            with pytest.raises(TimeoutError):
                async for piece in resp.iter_any():
                    got += piece
            assert got.startswith(b"..")
            assert 0.35 < time.monotonic() - start < 1.0
            resp.release()

        async with serve(silent(3)) as srv, Transport() as t:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                await t.post(srv.url(), {}, b"", Timeout(total=0.2, connect=1.0, read=None))
            assert time.monotonic() - start < 1.0

    run(main())


# -- 4. TLS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def server(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A test CA and a server certificate for localhost, 127.0.0.1 and 127.0.0.2."""
    out = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchyard test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.2")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certs(out / "ca.pem", out / "cert.pem", out / "key.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_https_with_the_test_ca_works_and_keeps_the_connection_alive(certs: Certs) -> None:
    async def main() -> None:
        async with (
            serve(answering(response(b"secure")), tls=certs.server()) as srv,
            Transport(ssl_context=certs.client()) as t,
        ):
            for host in ("localhost", "127.0.0.1"):
                resp, body = await get_body(t, srv.url(host=host))
                assert (resp.status, body) == (200, b"secure")
            await get_body(t, srv.url(host="localhost"))
            assert srv.connections == 2  # one per host name, the second localhost call reused

    run(main())


def test_https_with_an_untrusted_certificate_is_connect_error(certs: Certs) -> None:
    async def main() -> None:
        async with serve(answering(response()), tls=certs.server()) as srv, Transport() as t:
            with pytest.raises(ConnectError, match="TLS handshake") as exc:
                await t.post(srv.url(host="localhost"), {}, b"", T)
            assert "unable to get local issuer certificate" in str(exc.value)

    run(main())


# -- 5. CONNECT proxy ----------------------------------------------------------------------


@dataclass
class Proxy:
    """A CONNECT proxy; `answer` replaces the tunnel with a canned reply, `route` remaps targets."""

    answer: bytes | None = None
    route: dict[str, tuple[str, int]] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def connects(self) -> list[str]:
        return [h.split("\r\n", 1)[0] for h in self.heads]

    def header(self, i: int, name: str) -> str | None:
        for line in self.heads[i].split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == name:
                return v.strip()
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            if self.answer is not None:
                writer.write(self.answer)
                await writer.drain()
                return
            target = head.split(" ")[1]
            host, _, port = target.rpartition(":")
            dest = self.route.get(target, (host, int(port)))
            up_reader, up_writer = await asyncio.open_connection(*dest)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except ConnectionError:
        pass
    finally:
        dst.close()


@contextlib.asynccontextmanager
async def proxy(
    answer: bytes | None = None, route: dict[str, tuple[str, int]] | None = None
) -> AsyncIterator[Proxy]:
    p = Proxy(answer, route or {})
    server = await asyncio.start_server(p._accept, "127.0.0.1", 0)
    p.port = server.sockets[0].getsockname()[1]
    try:
        yield p
    finally:
        server.close()


def test_plain_http_goes_through_the_connect_tunnel(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with serve(answering(response(b"tunnelled")), host="127.0.0.2") as srv, proxy() as px:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{px.port}")
            async with Transport() as t:
                for _ in range(2):
                    resp, body = await get_body(t, srv.url())
                    assert (resp.status, body) == (200, b"tunnelled")
            assert px.connects == [
                f"CONNECT 127.0.0.2:{srv.port} HTTP/1.1"
            ]  # the tunnel was kept alive
            assert srv.connections == 1
            assert srv.requests[0].headers["host"] == f"127.0.0.2:{srv.port}"

    run(main())


def test_https_goes_through_the_tunnel_with_tls_to_the_target(
    monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> None:
    async def main() -> None:
        # https on the default port: the proxy maps 127.0.0.2:443 to the test server.
        async with (
            serve(
                answering(response(b"secure tunnel")), host="127.0.0.2", tls=certs.server()
            ) as srv,
            proxy(route={"127.0.0.2:443": ("127.0.0.2", srv.port)}) as px,
        ):
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{px.port}")
            async with Transport(ssl_context=certs.client()) as t:
                for _ in range(2):
                    resp, body = await get_body(t, "https://127.0.0.2/v1/x")
                    assert (resp.status, body) == (200, b"secure tunnel")
            assert px.connects == ["CONNECT 127.0.0.2:443 HTTP/1.1"]
            assert srv.connections == 1
            assert srv.requests[0].headers["host"] == "127.0.0.2"  # default port: no ":443"

    run(main())


def test_proxy_credentials_in_the_url_are_sent_as_proxy_authorization(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        async with serve(answering(response()), host="127.0.0.2") as srv, proxy() as px:
            monkeypatch.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{px.port}")
            async with Transport() as t:
                await get_body(t, srv.url())
            assert (
                px.header(0, "proxy-authorization")
                == "Basic " + base64.b64encode(b"user:p@ss").decode()
            )

    run(main())


def test_proxy_refusing_the_tunnel_is_connect_error_with_its_status_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refusal = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b"Proxy-Authenticate: Basic\r\ncontent-length: 0\r\n\r\n"
    )

    async def main() -> None:
        async with proxy(answer=refusal) as px:
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{px.port}")
            async with Transport() as t:
                with pytest.raises(ConnectError, match="407 Proxy Authentication Required"):
                    await t.post("https://127.0.0.2:8443/v1/x", {}, b"", T)
            assert px.connects == ["CONNECT 127.0.0.2:8443 HTTP/1.1"]

    run(main())


def test_proxy_hanging_up_before_answering_is_connect_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        async with proxy(answer=b"") as px:
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{px.port}")
            async with Transport() as t:
                with pytest.raises(ConnectError, match="proxy"):
                    await t.post("https://127.0.0.2:8443/v1/x", {}, b"", T)

    run(main())


def test_no_proxy_and_loopback_bypass_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with (
            serve(answering(response(b"direct")), host="127.0.0.2") as far,
            serve(answering(response(b"local"))) as near,
            proxy() as px,
        ):
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{px.port}")
            monkeypatch.setenv("NO_PROXY", "127.0.0.2")
            async with Transport() as t:
                assert (await get_body(t, far.url()))[1] == b"direct"
            monkeypatch.delenv("NO_PROXY")
            async with Transport() as t:
                assert (await get_body(t, near.url()))[1] == b"local"
            assert px.heads == []

    run(main())


def test_trust_env_false_ignores_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with serve(answering(response(b"direct")), host="127.0.0.2") as srv, proxy() as px:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{px.port}")
            async with Transport(trust_env=False) as t:
                assert (await get_body(t, srv.url()))[1] == b"direct"
            assert px.heads == []

    run(main())


# -- 6. before_wait ------------------------------------------------------------------------


def test_before_wait_runs_once_before_waiting_for_the_second_piece() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"one"))
        await writer.drain()
        await asyncio.sleep(0.15)
        writer.write(chunk(b"two") + b"0\r\n\r\n")
        await reader.read()

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"", T)
            seen: list[bytes] = []
            waits: list[int] = []

            async def before_wait() -> None:
                waits.append(len(seen))

            resp.before_wait = before_wait
            async for piece in resp.iter_any():
                seen.append(piece)
            assert seen == [b"one", b"two"]
            assert waits == [1]  # after "one" was handed out, not before it (already buffered)
            resp.release()

    run(main())


def test_data_arriving_during_before_wait_is_read_without_waiting_again() -> None:
    async def handler(
        srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await srv.next_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"one"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(chunk(b"two") + b"0\r\n\r\n")
        await reader.read()

    async def main() -> None:
        async with serve(handler) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"", Timeout(total=None, connect=1.0, read=0.5))

            async def slow_flush() -> None:
                await asyncio.sleep(0.2)  # the rest of the body lands meanwhile

            resp.before_wait = slow_flush
            assert [p async for p in resp.iter_any()] == [b"one", b"two"]
            resp.release()

    run(main())


def test_before_wait_not_called_when_the_body_is_already_buffered() -> None:
    raw = CHUNKED_HEAD + chunk(b"one") + chunk(b"two") + b"0\r\n\r\n"

    async def main() -> None:
        async with serve(answering(raw)) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"", T)
            waits: list[None] = []

            async def before_wait() -> None:
                waits.append(None)

            resp.before_wait = before_wait
            assert b"".join([p async for p in resp.iter_any()]) == b"onetwo"
            assert waits == []
            resp.release()

    run(main())


# -- 7. request framing --------------------------------------------------------------------


def test_request_line_host_content_length_and_headers_reach_the_server() -> None:
    async def main() -> None:
        async with serve(answering(response())) as srv, Transport() as t:
            body = b'{"model":"m"}'
            headers = {
                "authorization": "Bearer sk-test",
                "content-type": "application/json",
                "X-Custom": "v",
            }
            resp = await t.post(srv.url("/v1/models/m:generate?alt=sse&x=1"), headers, body, T)
            await resp.read()
            req = srv.requests[0]
            assert req.line == "POST /v1/models/m:generate?alt=sse&x=1 HTTP/1.1"
            assert req.headers["host"] == f"127.0.0.1:{srv.port}"
            assert req.headers["content-length"] == str(len(body))
            assert req.headers["authorization"] == "Bearer sk-test"
            assert req.headers["content-type"] == "application/json"
            assert req.headers["x-custom"] == "v"
            assert req.body == body

    run(main())


def test_header_value_with_a_line_break_is_refused_before_sending() -> None:
    async def main() -> None:
        async with serve(answering(response())) as srv, Transport() as t:
            with pytest.raises(ConnectError, match="line break"):
                await t.post(srv.url(), {"x-bad": "a\r\ninjected: 1"}, b"", T)
            await asyncio.sleep(0.05)
            assert srv.connections == 0
            await get_body(t, srv.url())
            with pytest.raises(ConnectError, match="line break"):
                await t.post(srv.url(), {"x-bad": "a\ninjected: 1"}, b"", T)
            await get_body(t, srv.url())
            assert srv.connections == 1  # the pooled connection survived the refusal
            assert len(srv.requests) == 2
            assert all("injected" not in r.headers for r in srv.requests)

    run(main())
