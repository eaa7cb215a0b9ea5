"""The gateway's HTTP/1.1 client (runtime/adapters/transport.py) holds where a provider's answer is
large, compressed, oddly headed, or where many requests go to one host — compared with httpx (the
reference client the providers' own SDKs use) on the SAME raw loopback servers: same decoded body,
same refusal. Idle pooled connections and the per-host cap are counted on the server side.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2 as httpx
import pytest

from runtime.adapters import http as upstream
from runtime.adapters import transport as transport_mod
from runtime.adapters.transport import (
    ConnectError,
    InvalidHeader,
    ProtocolError,
    Timeout,
    Transport,
)
from runtime.errors import Unservable, UpstreamError
from tests.e2e.test_transport import (  # noqa: F401 (no_proxy_env: an autouse fixture)
    CHUNKED_HEAD,
    Handler,
    Server,
    answering,
    chunk,
    no_proxy_env,
    response,
    run,
    serve,
)

T = Timeout(total=5.0, connect=2.0, read=2.0)
MiB = 1024 * 1024


async def ours(url: str, transport: Transport | None = None) -> tuple[int, bytes]:
    """(status, body) read whole by the gateway's transport."""
    t = transport or Transport()
    try:
        resp = await t.post(url, {"content-type": "application/json"}, b"{}", T)
        return resp.status, await resp.read()
    finally:
        if transport is None:
            await t.close()


async def ours_streamed(url: str) -> list[bytes]:
    async with Transport() as t:
        resp = await t.post(url, {}, b"{}", T)
        return [piece async for piece in resp.iter_any()]


async def reference(url: str) -> tuple[int, bytes]:
    """(status, body) as httpx reads it."""
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        r = await client.post(url, content=b"{}")
        return r.status_code, r.content


async def reference_streamed(url: str) -> bytes:
    async with (
        httpx.AsyncClient(trust_env=False, timeout=2.0) as client,
        client.stream("POST", url, content=b"{}") as r,
    ):
        return b"".join([piece async for piece in r.aiter_bytes()])


# -- 1. bodies of any size up to a limit ----------------------------------------------------


def big_json(size: int) -> bytes:
    return b'{"data": "' + b"x" * (size - 12) + b'"}'


@pytest.mark.parametrize("size", [5 * MiB, 20 * MiB])
def test_a_body_over_4_mib_read_whole_arrives_whole_like_httpx(size: int) -> None:
    body = big_json(size)

    async def main() -> None:
        async with serve(answering(response(body, "content-type: application/json"))) as srv:
            assert await ours(srv.url()) == (200, body)
            assert await reference(srv.url()) == (200, body)

    run(main())


def test_a_chunked_body_over_4_mib_read_whole_arrives_whole() -> None:
    body = big_json(9 * MiB)
    raw = CHUNKED_HEAD + b"".join(chunk(body[i : i + MiB]) for i in range(0, len(body), MiB))
    raw += b"0\r\n\r\n"

    async def main() -> None:
        async with serve(answering(raw)) as srv:
            assert await ours(srv.url()) == (200, body)
            assert await reference(srv.url()) == (200, body)

    run(main())


def test_a_body_over_4_mib_read_after_it_all_arrived_is_whole() -> None:
    body = big_json(6 * MiB)

    async def main() -> None:
        async with serve(answering(response(body))) as srv, Transport() as t:
            resp = await t.post(srv.url(), {}, b"{}", T)
            await asyncio.sleep(0.3)  # the body arrives (and reading pauses) before read()
            assert await resp.read() == body

    run(main())


@pytest.mark.parametrize("framing", ["content-length", "chunked", "gzip"])
def test_a_body_over_the_limit_is_body_too_large_not_a_timeout(framing: str) -> None:
    body = big_json(3 * MiB)
    if framing == "content-length":
        raw = response(body)
    elif framing == "chunked":
        raw = CHUNKED_HEAD + chunk(body) + b"0\r\n\r\n"
    else:
        raw = response(gzip.compress(body), "content-encoding: gzip")

    async def main() -> None:
        async with serve(answering(raw)) as srv, Transport(max_body=2 * MiB) as t:
            resp = await t.post(srv.url(), {}, b"{}", T)
            started = asyncio.get_running_loop().time()
            with pytest.raises(ProtocolError, match="larger than the limit") as exc:
                await resp.read()
            assert exc.value.code == "upstream_body_too_large"
            assert asyncio.get_running_loop().time() - started < 1.0
            assert srv.connections == 1
            resp = await t.post(srv.url(), {}, b"{}", T)  # the connection was not reused
            with pytest.raises(ProtocolError):
                await resp.read()
            assert srv.connections == 2

    run(main())


def test_a_body_over_the_limit_is_a_server_error_coded_upstream_body_too_large() -> None:
    async def main() -> None:
        raw = response(big_json(2 * MiB), "content-type: application/json")
        async with serve(answering(raw)) as srv, Transport(max_body=MiB) as t:
            resp = await upstream.post(t, srv.url(), {}, b"{}", T, _no_error)
            with pytest.raises(UpstreamError) as exc:
                await upstream.read_json(resp)
            assert (exc.value.error_class, exc.value.code) == (
                "server_error",
                "upstream_body_too_large",
            )

    run(main())


def test_the_default_body_limit_is_64_mib_and_streams_are_not_limited() -> None:
    assert transport_mod.MAX_BODY == 64 * 1024 * 1024
    body = big_json(3 * MiB)

    async def main() -> None:
        async with serve(answering(response(body))) as srv, Transport(max_body=MiB) as t:
            resp = await t.post(srv.url(), {}, b"{}", T)
            assert b"".join([p async for p in resp.iter_any()]) == body

    run(main())


def _no_error(status: int, body: Any, headers: Any) -> UpstreamError:
    raise AssertionError(f"unexpected HTTP {status}")


# -- 2. gzip and deflate --------------------------------------------------------------------

PAYLOAD = b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "' + b"ok " * 5000 + b'"}}]}'


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def encoded(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    return raw_deflate(body)  # "deflate" as some servers send it: without the zlib wrapper


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_body_is_decoded_like_httpx(encoding: str) -> None:
    name = "gzip" if encoding == "gzip" else "deflate"
    raw = response(encoded(encoding, PAYLOAD), f"content-encoding: {name}")

    async def main() -> None:
        async with serve(answering(raw)) as srv:
            assert await ours(srv.url()) == (200, PAYLOAD)
            assert await reference(srv.url()) == (200, PAYLOAD)
            assert srv.requests[0].headers["accept-encoding"] == "gzip, deflate"

    run(main())


def test_a_chunked_gzip_body_is_decoded_and_the_connection_reused() -> None:
    data = gzip.compress(PAYLOAD)
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(chunk(data[i : i + 1000]) for i in range(0, len(data), 1000))
        + b"0\r\n\r\n"
    )

    async def main() -> None:
        async with serve(answering(raw)) as srv, Transport() as t:
            assert await ours(srv.url(), t) == (200, PAYLOAD)
            assert await ours(srv.url(), t) == (200, PAYLOAD)
            assert srv.connections == 1
            assert await reference(srv.url()) == (200, PAYLOAD)

    run(main())


EVENTS = [b'data: {"n": %d, "text": "%s"}\n\n' % (i, b"y" * (i * 7)) for i in range(40)]


def sse_over_gzip() -> Handler:
    """An SSE stream compressed with gzip, flushed after each event, sent event by event."""

    async def handler(srv: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        while await srv.next_request(reader) is not None:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            z = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
            for ev in EVENTS:
                writer.write(chunk(z.compress(ev) + z.flush(zlib.Z_SYNC_FLUSH)))
                await writer.drain()
                await asyncio.sleep(0.002)
            writer.write(chunk(z.flush()) + b"0\r\n\r\n")
            await writer.drain()

    return handler


def test_sse_over_gzip_is_decoded_as_it_streams_like_httpx() -> None:
    async def main() -> None:
        async with serve(sse_over_gzip()) as srv:
            pieces = await ours_streamed(srv.url())
            assert b"".join(pieces) == b"".join(EVENTS)
            assert len(pieces) > 5  # decoded piece by piece, not once at the end
            assert await reference_streamed(srv.url()) == b"".join(EVENTS)

    run(main())


def test_sse_over_gzip_through_the_adapter_boundary_yields_the_events() -> None:
    async def main() -> None:
        async with serve(sse_over_gzip()) as srv, Transport() as t:
            resp = await upstream.post(t, srv.url(), {}, b"{}", T, _no_error)
            events = [data async for _, data in upstream.iter_sse(resp)]
            assert len(events) == len(EVENTS)
            assert events[3] == '{"n": 3, "text": "' + "y" * 21 + '"}'

    run(main())


@pytest.mark.parametrize(
    "body",
    [b"this is not gzip at all", gzip.compress(PAYLOAD)[:-30] + b"\xff" * 30],
    ids=["not-gzip", "corrupt-tail"],
)
def test_a_corrupt_gzip_body_is_upstream_malformed_where_httpx_refuses_too(body: bytes) -> None:
    raw = response(body, "content-encoding: gzip")

    async def main() -> None:
        async with serve(answering(raw)) as srv:
            with pytest.raises(ProtocolError) as exc:
                await ours(srv.url())
            assert exc.value.code == "upstream_malformed"
            with pytest.raises(httpx.DecodingError):
                await reference(srv.url())
            async with Transport() as t:
                resp = await upstream.post(t, srv.url(), {}, b"{}", T, _no_error)
                with pytest.raises(UpstreamError) as err:
                    await upstream.read_json(resp)
                assert (err.value.error_class, err.value.code) == (
                    "server_error",
                    "upstream_malformed",
                )

    run(main())


def test_a_corrupt_gzip_stream_is_upstream_malformed() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunk(b"\x1f\x8b\x08\x00garbage garbage garbage")
        + b"0\r\n\r\n"
    )

    async def main() -> None:
        async with serve(answering(raw)) as srv, Transport() as t:
            resp = await upstream.post(t, srv.url(), {}, b"{}", T, _no_error)
            with pytest.raises(UpstreamError) as err:
                [e async for e in upstream.iter_sse(resp)]
            assert err.value.code == "upstream_malformed"

    run(main())


def test_an_encoding_not_asked_for_is_passed_on_as_it_came_like_httpx() -> None:
    raw = response(b"\x00\x01raw", "content-encoding: x-custom")

    async def main() -> None:
        async with serve(answering(raw)) as srv:
            assert await ours(srv.url()) == (200, b"\x00\x01raw")
            assert await reference(srv.url()) == (200, b"\x00\x01raw")

    run(main())


# -- 3. response head limits ------------------------------------------------------------------


def headed(*headers: str) -> bytes:
    return response(b"ok", *headers)


def test_a_head_of_50_kib_is_read_like_httpx() -> None:
    raw = headed(f"x-big: {'a' * 50 * 1024}")

    async def main() -> None:
        async with serve(answering(raw)) as srv:
            assert await ours(srv.url()) == (200, b"ok")
            assert await reference(srv.url()) == (200, b"ok")

    run(main())


@pytest.mark.parametrize("shape", ["one-huge-header", "many-long-headers"])
def test_a_head_over_100_kib_is_refused_like_httpx(shape: str) -> None:
    if shape == "one-huge-header":
        raw = headed(f"x-big: {'a' * 200 * 1024}")
    else:
        raw = headed(*[f"x-h{i}: {'b' * 4000}" for i in range(50)])

    async def main() -> None:
        async with serve(answering(raw)) as srv:
            with pytest.raises(ProtocolError, match="larger than") as exc:
                await ours(srv.url())
            assert exc.value.code == "upstream_malformed"
            with pytest.raises(httpx.RemoteProtocolError):
                await reference(srv.url())

    run(main())


def test_more_than_100_headers_are_refused() -> None:
    """httpx (h11) has no count limit, only the size one; Python's http.client refuses more than
    100 headers, and so do we."""
    ok = headed(*[f"x-h{i}: v" for i in range(99)])  # + content-length: 100
    too_many = headed(*[f"x-h{i}: v" for i in range(150)])

    async def main() -> None:
        async with serve(answering(ok)) as srv:
            assert await ours(srv.url()) == (200, b"ok")
        async with serve(answering(too_many)) as srv:
            with pytest.raises(ProtocolError, match="more than 100 headers"):
                await ours(srv.url())

    run(main())


def test_a_head_that_never_ends_is_refused_at_the_limit_not_buffered() -> None:
    async def endless(srv: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await srv.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        for _ in range(1000):  # up to 8 MiB, never ending the header line
            writer.write(b"z" * 8192)
            await writer.drain()
            await asyncio.sleep(0)

    async def main() -> None:
        async with serve(endless) as srv:
            with pytest.raises(ProtocolError, match="larger than"):
                await ours(srv.url())
            with pytest.raises(httpx.RemoteProtocolError):
                await reference(srv.url())

    run(main())


# -- 4. per-host connection cap ---------------------------------------------------------------


def slow_answer(delay: float) -> Callable[[Server, asyncio.StreamReader, Any], Awaitable[None]]:
    async def handler(srv: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        while await srv.next_request(reader) is not None:
            srv.busy = getattr(srv, "busy", 0) + 1
            srv.peak = max(getattr(srv, "peak", 0), srv.busy)
            await asyncio.sleep(delay)
            srv.busy -= 1
            writer.write(response(b"done"))
            await writer.drain()

    return handler


def test_requests_beyond_the_per_host_cap_wait_for_a_free_connection_like_httpx() -> None:
    async def main() -> None:
        async with serve(slow_answer(0.05)) as srv, Transport(max_per_host=3) as t:
            got = await asyncio.gather(*[ours(srv.url(), t) for _ in range(12)])
            assert got == [(200, b"done")] * 12
            assert srv.connections == 3
            assert srv.peak == 3  # type: ignore[attr-defined]
        async with (
            serve(slow_answer(0.05)) as srv,
            httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_connections=3), timeout=5.0
            ) as client,
        ):
            rs = await asyncio.gather(*[client.post(srv.url(), content=b"{}") for _ in range(12)])
            assert [r.content for r in rs] == [b"done"] * 12
            assert srv.connections == 3

    run(main())


def test_the_per_host_cap_counts_each_host_and_port_apart() -> None:
    async def main() -> None:
        async with (
            serve(slow_answer(0.05)) as a,
            serve(slow_answer(0.05)) as b,
            Transport(max_per_host=2) as t,
        ):
            await asyncio.gather(*[ours(s.url(), t) for s in (a, b) * 4])
            assert (a.connections, b.connections) == (2, 2)

    run(main())


def test_waiting_for_a_free_connection_longer_than_the_connect_timeout_is_connect_error() -> None:
    async def main() -> None:
        quick = Timeout(total=5.0, connect=0.2, read=2.0)
        async with serve(slow_answer(1.0)) as srv, Transport(max_per_host=1) as t:
            first = asyncio.create_task(t.post(srv.url(), {}, b"{}", quick))
            await asyncio.sleep(0.05)
            with pytest.raises(
                ConnectError, match=r"1 connections to 127\.0\.0\.1:\d+ stayed busy"
            ):
                await t.post(srv.url(), {}, b"{}", quick)
            assert (await (await first).read()) == b"done"
            assert srv.connections == 1
            assert (await ours(srv.url(), t)) == (200, b"done")  # the slot is free again
            assert srv.connections == 1

    run(main())


def test_a_connection_that_closes_frees_its_slot_for_a_waiting_request() -> None:
    async def main() -> None:
        closing = response(b"bye", "connection: close")
        async with serve(answering(closing)) as srv, Transport(max_per_host=1) as t:
            got = await asyncio.gather(*[ours(srv.url(), t) for _ in range(4)])
            assert got == [(200, b"bye")] * 4
            assert srv.connections == 4

    run(main())


def test_a_failed_connect_frees_its_slot() -> None:
    async def main() -> None:
        async with Transport(max_per_host=1) as t:
            for _ in range(3):  # each attempt gets the one slot back
                with pytest.raises(ConnectError, match="cannot connect"):
                    await t.post("http://127.0.0.1:9/x", {}, b"", T)

    run(main())


def test_the_default_per_host_cap_is_httpx_s_100() -> None:
    assert Transport().max_per_host == 100 == httpx.Limits(max_connections=100).max_connections


# -- 5. idle connections closed on time -------------------------------------------------------


def test_idle_connections_are_closed_after_idle_keep_without_another_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_mod, "IDLE_KEEP_S", 0.3)

    async def main() -> None:
        open_now: set[int] = set()

        async def tracked(srv: Server, reader: asyncio.StreamReader, writer: Any) -> None:
            open_now.add(id(writer))
            try:
                await slow_answer(0.05)(srv, reader, writer)
            finally:
                open_now.discard(id(writer))

        async with serve(tracked) as srv, Transport() as t:
            await asyncio.gather(*[ours(srv.url(), t) for _ in range(20)])  # a burst
            assert srv.connections == 20
            await asyncio.sleep(0.1)
            assert len(open_now) == 20  # kept alive for reuse
            await asyncio.sleep(0.5)
            assert open_now == set()  # closed by the sweep: no request came to notice
            assert await ours(srv.url(), t) == (200, b"done")
            assert srv.connections == 21

    run(main())


def test_a_connection_reused_before_expiry_stays_and_the_rest_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_mod, "IDLE_KEEP_S", 0.4)

    async def main() -> None:
        async with serve(slow_answer(0.01)) as srv, Transport() as t:
            await asyncio.gather(*[ours(srv.url(), t) for _ in range(3)])
            for _ in range(6):  # one connection stays busy every 0.1 s
                await asyncio.sleep(0.1)
                await ours(srv.url(), t)
            assert srv.connections == 3
            assert sum(len(p) for p in t._pools.values()) == 1  # the two others expired
            assert t._open[("http", "127.0.0.1", srv.port)] == 1

    run(main())


def test_the_documented_idle_time_is_the_code_s() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "runtime.md").read_text()
    assert f"closed after {transport_mod.IDLE_KEEP_S:g} s" in doc


# -- 6. a header that cannot be sent ----------------------------------------------------------


def test_a_header_outside_latin_1_is_refused_before_sending_naming_the_header_only() -> None:
    async def main() -> None:
        async with serve(answering(response())) as srv, Transport() as t:
            with pytest.raises(InvalidHeader, match="'x-api-key'") as exc:
                await t.post(srv.url(), {"x-api-key": "sk-ключ"}, b"{}", T)
            assert "ключ" not in str(exc.value)
            await asyncio.sleep(0.05)
            assert srv.connections == 0
            with pytest.raises(Unservable) as err:
                await upstream.post(
                    t, srv.url(), {"authorization": "Bearer sk-€"}, b"{}", T, _no_error
                )
            assert "'authorization'" in err.value.message and "€" not in err.value.message
            assert await ours(srv.url(), t) == (200, b"hello")
        # httpx refuses it too, before sending
        with pytest.raises(UnicodeEncodeError):
            httpx.Request("POST", "http://127.0.0.1/", headers={"x-api-key": "sk-ключ"})

    run(main())


def test_a_gzip_body_cut_short_is_upstream_malformed_where_httpx_returns_a_partial_body() -> None:
    """A gzip stream without its end (and CRC) is not an answer: we refuse it; httpx's decoder
    does not check the end and returns what it could decode."""
    whole = gzip.compress(PAYLOAD)
    raw = response(whole[: len(whole) // 2], "content-encoding: gzip")

    async def main() -> None:
        async with serve(answering(raw)) as srv:
            with pytest.raises(ProtocolError, match="ended early") as exc:
                await ours(srv.url())
            assert exc.value.code == "upstream_malformed"
            status, partial = await reference(srv.url())
            assert status == 200 and PAYLOAD.startswith(partial) and partial != PAYLOAD

    run(main())


def test_closing_the_transport_fails_the_requests_waiting_for_a_connection() -> None:
    async def main() -> None:
        async with serve(slow_answer(0.3)) as srv:
            t = Transport(max_per_host=1)
            first = asyncio.create_task(ours(srv.url(), t))
            await asyncio.sleep(0.05)
            waiting = [asyncio.create_task(ours(srv.url(), t)) for _ in range(3)]
            await asyncio.sleep(0.05)
            await t.close()
            for w in waiting:
                with pytest.raises(ConnectError, match="transport is closed"):
                    await w
            assert await first == (200, b"done")  # the one in flight finishes
            assert srv.connections == 1

    run(main())
