"""runtime/redis_client.py: URLs, the RESP2 wire format, pipelining, timeouts, backoff and
reconnect, scripts and login — against a fake server speaking RESP2 (to see the bytes and
to stay silent) and a real Redis (for everything Redis itself decides)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runtime.redis_client import (
    RedisClient,
    RedisReplyError,
    RedisUnavailable,
    RedisURL,
    Script,
    _Incomplete,
    encode,
    parse,
)
from tests.servers import RedisServer, free_port

# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", RedisURL("127.0.0.1", 6380, 2, None, None)),
        ("redis://cache", RedisURL("cache", 6379, 0, None, None)),
        ("redis://:s%40cret@cache:6379/0", RedisURL("cache", 6379, 0, None, "s@cret")),
        ("redis://alice:pw@cache:6379", RedisURL("cache", 6379, 0, "alice", "pw")),
        ("redis://[::1]:7000/1", RedisURL("::1", 7000, 1, None, None)),
    ],
)
def test_url_is_parsed(url: str, expected: RedisURL) -> None:
    assert RedisURL.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://:hunter2@cache:6380/0", "rediss:// (TLS) is not supported"),
        ("http://:hunter2@cache:6379", "scheme is 'http'; expected redis://"),
        ("redis://:hunter2@cache:6379/zero", "database must be a number, not 'zero'"),
        ("redis://:hunter2@cache:port/0", "the Redis URL is malformed"),
        ("redis://:hunter2@/0", "the Redis URL has no host"),
    ],
)
def test_bad_url_is_refused_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        RedisURL.parse(url)
    assert message in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_where_names_host_port_and_db_only() -> None:
    assert RedisURL.parse("redis://u:pw@cache:6379/3").where == "cache:6379/3"


# -- the wire format ----------------------------------------------------------------------


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode(("SET", b"k\r\n", 12, 1.5)) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n"
    )


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"+OK\r\n", "OK"),
        (b":-42\r\n", -42),
        (b"$5\r\nhe\r\no\r\n", b"he\r\no"),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n$0\r\n\r\n", [1, [b"x"], b""]),
    ],
)
def test_replies_are_read_and_incomplete_ones_wait(wire: bytes, reply: object) -> None:
    assert parse(wire + b"+next\r\n", 0) == (reply, len(wire))
    for cut in range(len(wire)):
        with pytest.raises(_Incomplete):
            parse(wire[:cut], 0)


def test_an_error_reply_is_read_as_an_error_with_its_prefix() -> None:
    err, _ = parse(b"-NOSCRIPT No matching script.\r\n", 0)
    assert isinstance(err, RedisReplyError)
    assert err.prefix == "NOSCRIPT"


# -- a fake server speaking RESP2 ------------------------------------------------------------


class FakeRedis:
    """Reads commands, records each read and connection, answers with `respond` (None: stay
    silent), writing its replies `chunk` bytes at a time."""

    def __init__(self, respond: Callable[[list[bytes]], bytes | None], chunk: int = 0) -> None:
        self.respond = respond
        self.chunk = chunk
        self.reads: list[bytes] = []
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> FakeRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buf = b""
        while data := await reader.read(65536):
            self.reads.append(data)
            buf += data
            while True:
                try:
                    command, used = parse(buf, 0)
                except _Incomplete:
                    break
                buf = buf[used:]
                assert isinstance(command, list)
                self.commands.append([c for c in command if isinstance(c, bytes)])
                reply = self.respond(self.commands[-1])
                if reply is None:
                    continue
                step = self.chunk or len(reply)
                for i in range(0, len(reply), step):
                    writer.write(reply[i : i + step])
                    await writer.drain()
                    if self.chunk:
                        await asyncio.sleep(0)
        writer.close()


def echo(command: list[bytes]) -> bytes:
    """Answer each command with its last argument as a bulk string."""
    last = command[-1]
    return b"$%d\r\n%s\r\n" % (len(last), last)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_commands_of_one_loop_iteration_go_out_in_one_write() -> None:
    async def main() -> None:
        fake = await FakeRedis(echo).start()
        client = RedisClient(fake.url)
        await client.execute("PING", "warm")
        conn = client._conn
        assert conn is not None and conn.transport is not None
        writes: list[bytes] = []
        write = conn.transport.write

        def counting(data: bytes | bytearray | memoryview) -> None:
            writes.append(bytes(data))
            write(data)

        conn.transport.write = counting  # type: ignore[method-assign]
        got = await asyncio.gather(*(client.execute("ECHO", str(i)) for i in range(200)))
        assert got == [str(i).encode() for i in range(200)]
        assert len(writes) == 1
        assert writes[0].count(b"ECHO") == 200
        await client.close()
        await fake.stop()

    run(main)


def test_replies_split_anywhere_resolve_in_order() -> None:
    async def main() -> None:
        fake = await FakeRedis(echo, chunk=1).start()
        client = RedisClient(fake.url)
        got = await asyncio.gather(*(client.execute("ECHO", f"v{i}\r\n") for i in range(20)))
        assert got == [f"v{i}\r\n".encode() for i in range(20)]
        await client.close()
        await fake.stop()

    run(main)


def test_a_silent_server_fails_every_waiting_command_after_the_reply_timeout() -> None:
    async def main() -> None:
        hung: list[bool] = []

        def respond(command: list[bytes]) -> bytes | None:
            if command[-1] == b"hang" or hung:  # a server that stops answering
                hung.append(True)
                return None
            return echo(command)

        fake = await FakeRedis(respond).start()
        client = RedisClient(fake.url, command_timeout_s=0.3)
        await client.execute("PING", "ok")
        t0 = time.monotonic()
        got = await asyncio.gather(
            client.execute("ECHO", "hang"),
            client.execute("ECHO", "queued behind it"),
            return_exceptions=True,
        )
        assert 0.25 < time.monotonic() - t0 < 1.0
        for exc in got:
            assert isinstance(exc, RedisUnavailable)
            assert "did not answer within 0.3 s" in str(exc)
        assert not client.up
        # Within the backoff, commands fail at once; then one opens a new connection.
        hung.clear()
        t0 = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await client.execute("ECHO", "too soon")
        assert time.monotonic() - t0 < 0.2
        await asyncio.sleep(client.BACKOFF_MIN_S + 0.05)
        assert await client.execute("ECHO", "again") == b"again"
        assert fake.connections == 2
        assert client.up
        await client.close()
        await fake.stop()

    run(main)


def test_nothing_listening_fails_at_once_then_backs_off_then_connects() -> None:
    async def main() -> None:
        port = free_port()
        client = RedisClient(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(RedisUnavailable, match=f"cannot connect to Redis at 127.0.0.1:{port}"):
            await client.execute("PING")
        fake = await FakeRedis(echo).start(port)
        # Within the backoff, no connection is even tried.
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        assert fake.connections == 0
        await asyncio.sleep(client.BACKOFF_MIN_S + 0.05)
        assert await client.execute("PING", "back") == b"back"
        assert fake.connections == 1
        await client.close()
        await fake.stop()

    run(main)


def test_a_connect_that_hangs_is_bounded_and_shared_by_its_callers() -> None:
    async def main() -> None:
        # A server that accepts TCP but never answers AUTH: the login hangs.
        fake = await FakeRedis(lambda c: None).start()
        client = RedisClient(f"redis://:pw@127.0.0.1:{fake.port}/0", connect_timeout_s=0.3)
        t0 = time.monotonic()
        got = await asyncio.gather(
            *(client.execute("PING") for _ in range(20)), return_exceptions=True
        )
        assert time.monotonic() - t0 < 1.0
        assert all(isinstance(e, RedisUnavailable) for e in got)
        assert "within 0.3 s" in str(got[0])
        assert fake.connections == 1
        await client.close()
        await fake.stop()

    run(main)


# -- a real Redis -------------------------------------------------------------------------


def test_scripts_run_by_sha_and_are_loaded_when_redis_does_not_know_them(redis_url: str) -> None:
    async def main() -> None:
        client = RedisClient(redis_url)
        script = Script("return {KEYS[1], ARGV[1], 7}")
        await client.execute("SCRIPT", "FLUSH")
        assert await client.run_script(script, ["k"], ["a"]) == [b"k", b"a", 7]
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
        assert await client.run_script(script, ["k"], ["b"]) == [b"k", b"b", 7]
        await client.close()

    run(main)


def test_it_runs_on_uvloop_as_the_gateway_does(redis_url: str) -> None:
    import uvloop

    async def main() -> None:
        client = RedisClient(redis_url)
        got = await asyncio.gather(*(client.execute("INCR", "n") for _ in range(50)))
        assert got == list(range(1, 51))
        assert await client.run_script(Script("return 5"), [], []) == 5
        await client.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_an_error_reply_raises_and_the_connection_goes_on(redis_url: str) -> None:
    async def main() -> None:
        client = RedisClient(redis_url)
        await client.execute("SET", "s", "text")
        with pytest.raises(RedisReplyError) as exc:
            await client.execute("INCR", "s")
        assert exc.value.prefix == "ERR"
        assert await client.execute("GET", "s") == b"text"
        assert client.up
        await client.close()

    run(main)


def test_a_cancelled_caller_does_not_shift_the_replies(redis_url: str) -> None:
    async def main() -> None:
        client = RedisClient(redis_url)
        await client.execute("SET", "a", "1")
        first = asyncio.ensure_future(client.execute("GET", "a"))
        await asyncio.sleep(0)
        first.cancel()
        assert await client.execute("ECHO", "mine") == b"mine"
        await client.close()

    run(main)


def test_password_user_and_database_are_used(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path / "redis")
    where = f"127.0.0.1:{server.port}"

    async def main() -> None:
        admin = RedisClient(server.url)
        await admin.execute("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all")
        await admin.execute("CONFIG", "SET", "requirepass", "default-pw")
        await admin.close()

        as_default = RedisClient(f"redis://:default-pw@{where}/3")
        await as_default.execute("SET", "in3", "yes")
        as_alice = RedisClient(f"redis://alice:alice-pw@{where}/0")
        assert await as_alice.execute("GET", "in3") is None
        await as_alice.execute("SELECT", "3")
        assert await as_alice.execute("GET", "in3") == b"yes"

        wrong = RedisClient(f"redis://:not-the-pw@{where}/0")
        with pytest.raises(RedisUnavailable) as exc:
            await wrong.execute("PING")
        assert "refused the login or database (WRONGPASS)" in str(exc.value)
        assert "not-the-pw" not in str(exc.value)
        assert wrong.last_error is not None and "not-the-pw" not in wrong.last_error
        for c in (as_default, as_alice, wrong):
            await c.close()

    try:
        run(main)
    finally:
        server.stop()


def test_redis_restarted_is_reconnected(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path / "redis")

    async def main() -> None:
        client = RedisClient(server.url)
        assert await client.execute("PING") == "PONG"
        server.stop()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        assert not client.up
        server.resume()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert await client.execute("PING") == "PONG"
                break
            except RedisUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert client.up
        await client.close()

    try:
        run(main)
    finally:
        server.stop()
