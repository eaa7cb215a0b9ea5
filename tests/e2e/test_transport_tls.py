"""TLS failures of the gateway's transport say why — expired, hostname mismatch, self-signed,
unknown issuer, no protocol version in common, not TLS at all — as httpx does on the same
loopback servers, instead of a bare CERTIFICATE_VERIFY_FAILED. Certificates are made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runtime.adapters import http as upstream
from runtime.adapters.transport import ConnectError, Timeout, Transport
from runtime.errors import UpstreamError
from tests.e2e.test_transport import (  # noqa: F401 (no_proxy_env: an autouse fixture)
    Server,
    answering,
    no_proxy_env,
    response,
    run,
    serve,
)

T = Timeout(total=5.0, connect=2.0, read=2.0)
NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def server(self, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(out: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    pair = Pair(out / f"{stem}.pem", out / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@dataclass(frozen=True)
class Certs:
    ca: Path
    good: Pair
    expired: Pair
    other_host: Pair
    self_signed: Pair

    def client(self, minimum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if minimum is not None:
            ctx.minimum_version = minimum
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    out = tmp_path_factory.mktemp("tls-variants")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("switchyard test CA"))
        .issuer_name(_name("switchyard test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(
        stem: str,
        names: list[x509.GeneralName],
        before: datetime.datetime,
        after: datetime.datetime,
        self_signed: bool = False,
    ) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(_name(stem) if self_signed else ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(before)
            .not_valid_after(after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key if self_signed else ca_key, hashes.SHA256())
        )
        return _write(out, stem, cert, key)

    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    return Certs(
        out / "ca.pem",
        good=leaf("good", local, NOW - DAY, NOW + DAY),
        expired=leaf("expired", local, NOW - 3 * DAY, NOW - 2 * DAY),
        other_host=leaf("other", [x509.DNSName("api.example.com")], NOW - DAY, NOW + DAY),
        self_signed=leaf("self", local, NOW - DAY, NOW + DAY, self_signed=True),
    )


async def both_fail(
    url: str, client: ssl.SSLContext, ours_says: str, httpx_says: str | None = None
) -> str:
    """Our transport and httpx both refuse; each says why. Returns our message."""
    async with Transport(ssl_context=client) as t:
        with pytest.raises(ConnectError) as exc:
            await t.post(url, {}, b"{}", T)
    ours = str(exc.value)
    assert ours_says in ours, ours
    assert ours.startswith("TLS handshake with localhost:")
    async with httpx.AsyncClient(verify=client, trust_env=False, timeout=2.0) as c:
        with pytest.raises(httpx.ConnectError) as ref:
            await c.post(url, content=b"{}")
    assert (httpx_says or ours_says) in str(ref.value), str(ref.value)
    return ours


def test_the_good_certificate_is_accepted_by_both(certs: Certs) -> None:
    async def main() -> None:
        async with serve(answering(response(b"ok")), tls=certs.good.server()) as srv:
            async with Transport(ssl_context=certs.client()) as t:
                resp = await t.post(srv.url(host="localhost"), {}, b"{}", T)
                assert await resp.read() == b"ok"
            async with httpx.AsyncClient(verify=certs.client(), trust_env=False) as c:
                assert (await c.post(srv.url(host="localhost"), content=b"{}")).content == b"ok"

    run(main())


def test_an_expired_certificate_says_expired(certs: Certs) -> None:
    async def main() -> None:
        async with serve(answering(response()), tls=certs.expired.server()) as srv:
            await both_fail(srv.url(host="localhost"), certs.client(), "certificate has expired")

    run(main())


def test_a_certificate_for_another_host_says_hostname_mismatch(certs: Certs) -> None:
    async def main() -> None:
        async with serve(answering(response()), tls=certs.other_host.server()) as srv:
            msg = await both_fail(srv.url(host="localhost"), certs.client(), "Hostname mismatch")
            assert "'localhost'" in msg

    run(main())


def test_a_self_signed_certificate_says_self_signed(certs: Certs) -> None:
    async def main() -> None:
        async with serve(answering(response()), tls=certs.self_signed.server()) as srv:
            await both_fail(srv.url(host="localhost"), certs.client(), "self-signed certificate")

    run(main())


def test_an_unknown_issuer_says_so(certs: Certs) -> None:
    async def main() -> None:
        async with serve(answering(response()), tls=certs.good.server()) as srv:
            system_trust = ssl.create_default_context()  # does not know the test CA
            await both_fail(
                srv.url(host="localhost"), system_trust, "unable to get local issuer certificate"
            )

    run(main())


@contextlib.contextmanager
def blocking_tls_server(ctx: ssl.SSLContext) -> Iterator[int]:
    """A TLS server in a thread that handshakes with a blocking socket, so its alerts (such as
    protocol_version) reach the client before it closes — asyncio's server resets instead."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn, contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True):
                pass

    threads = [threading.Thread(target=serve_one, daemon=True) for _ in range(2)]
    for th in threads:
        th.start()
    try:
        yield port
    finally:
        listener.close()
        for th in threads:
            th.join(2)


def test_no_protocol_version_in_common_says_so(certs: Certs) -> None:
    async def main() -> None:
        with blocking_tls_server(certs.good.server(maximum=ssl.TLSVersion.TLSv1_2)) as port:
            await both_fail(
                f"https://localhost:{port}/v1/x",
                certs.client(minimum=ssl.TLSVersion.TLSv1_3),
                "no TLS protocol version in common",
                httpx_says="PROTOCOL_VERSION",
            )

    run(main())


def test_a_server_resetting_the_handshake_says_so(certs: Certs) -> None:
    async def main() -> None:
        tls13 = certs.good.server()
        tls13.minimum_version = ssl.TLSVersion.TLSv1_3
        async with serve(answering(response()), tls=tls13) as srv:
            old = certs.client()
            old.maximum_version = ssl.TLSVersion.TLSv1_2
            async with Transport(ssl_context=old) as t:
                with pytest.raises(ConnectError) as exc:
                    await t.post(srv.url(host="localhost"), {}, b"{}", T)
            assert "closed the connection during the handshake" in str(exc.value)
            assert str(exc.value).startswith("TLS handshake with localhost:")

    run(main())


def test_a_plain_http_server_on_an_https_url_says_it_does_not_speak_tls(certs: Certs) -> None:
    async def plain(srv: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with serve(plain) as srv:
            url = srv.url(host="localhost").replace("http://", "https://")
            await both_fail(
                url,
                certs.client(),
                "the server does not speak TLS on this port",
                httpx_says="WRONG_VERSION_NUMBER",
            )

    run(main())


def test_a_tls_failure_is_a_connect_error_naming_the_cause_at_the_adapter_boundary(
    certs: Certs,
) -> None:
    async def main() -> None:
        async with (
            serve(answering(response()), tls=certs.expired.server()) as srv,
            Transport(ssl_context=certs.client()) as t,
        ):
            with pytest.raises(UpstreamError) as exc:
                await upstream.post(t, srv.url(host="localhost"), {}, b"{}", T, _unused)
            assert exc.value.error_class == "connect_error"
            assert "certificate has expired" in exc.value.message

    run(main())


def _unused(status: int, body: object, headers: object) -> UpstreamError:
    raise AssertionError("no response expected")
