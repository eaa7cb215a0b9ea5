"""A fast OpenAI chat-completions and embeddings mock for the gateway benchmark, run as its
own process.

    python bench/mock_upstream.py --port 9100 --delay-ms 20

`POST .../chat/completions` answers like OpenAI: a JSON completion with `usage`, or, when the
body has `"stream": true`, an SSE stream (role chunk, content chunks, finish chunk, usage
chunk, `data: [DONE]`) sent with chunked transfer encoding. `POST .../embeddings` answers like
OpenAI's `CreateEmbeddingResponse`: one vector per input (a string, a list of strings, a token
array or a list of token arrays), EMBED_DIMENSIONS floats long unless the body asks for
`dimensions`, as JSON floats or, with `"encoding_format": "base64"` (what the openai SDK asks
for by default), as base64 of little-endian float32; `usage.prompt_tokens` is an estimate
(a token per 4 characters, or the token arrays' lengths). The vectors are fixed per index,
so an answer is built once and cached. `--delay-ms` is waited before the
answer (before the first chunk of a stream); `--jitter-pct P` varies it uniformly by ±P %
(seeded, so runs repeat), as a real provider's latency varies. `GET /health` answers 200.
Connections are kept alive and pipelined requests are answered in order.

It is a bare asyncio protocol on uvloop with httptools parsing, so that the mock costs as
little CPU as possible: on the 2-core benchmark machine it shares the cores with the gateway
and the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import random
import signal
import struct
import time
from collections.abc import Callable
from typing import Any, cast

import httptools
import orjson

CONTENT = ("Hello", " from", " the", " mock", " upstream", ".")
PROMPT_TOKENS = 12
# Vector length of an embedding unless the request asks for `dimensions`: small enough to be
# cheap, long enough that the JSON of a batch costs what a real one does.
EMBED_DIMENSIONS = 256
MAX_EMBED_DIMENSIONS = 4096


def completion_body(model: str) -> bytes:
    """A non-streamed chat completion."""
    return orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(CONTENT), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": len(CONTENT),
                "total_tokens": PROMPT_TOKENS + len(CONTENT),
            },
        }
    )


def stream_events(model: str) -> list[bytes]:
    """The SSE events of a streamed chat completion, each one HTTP chunk (chunked encoding)."""
    base = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_mock",
    }

    def chunk(choices: list[Any], usage: Any = None) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, "usage": usage}) + b"\n\n"

    events = [
        chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
    ]
    events += [
        chunk([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        for piece in CONTENT
    ]
    events.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    events.append(
        chunk(
            [],
            {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": len(CONTENT),
                "total_tokens": PROMPT_TOKENS + len(CONTENT),
            },
        )
    )
    events.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]


def embedding_vector(index: int, dimensions: int) -> list[float]:
    """The fixed vector of the `index`-th input: float32 values (8 significant digits in JSON,
    as OpenAI sends), different per index."""
    rng = random.Random(index)
    floats = struct.pack(f"<{dimensions}f", *(rng.uniform(-0.1, 0.1) for _ in range(dimensions)))
    return [float(f"{v:.8g}") for v in struct.unpack(f"<{dimensions}f", floats)]


def embedding_inputs(value: Any) -> tuple[int, int] | None:
    """(number of inputs, estimated prompt tokens) of an embeddings `input`; None if it is
    none of OpenAI's four shapes."""
    if isinstance(value, str):
        return 1, max(1, len(value) // 4)
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) for v in value):
        return len(value), sum(max(1, len(v) // 4) for v in value)
    if all(isinstance(v, int) for v in value):
        return 1, len(value)
    if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
        return len(value), sum(len(v) for v in value)
    return None


def embeddings_body(model: str, count: int, tokens: int, dimensions: int, b64: bool) -> bytes:
    """A `CreateEmbeddingResponse` with `count` vectors."""
    data = []
    for i in range(count):
        vector = embedding_vector(i, dimensions)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if b64 else vector
        )
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


class Responses:
    """Response bytes per (model, stream), built once: the mock does no per-request encoding."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bool], list[bytes]] = {}
        self._embed_cache: dict[tuple[str, int, int, int, str], list[bytes]] = {}

    def get(self, model: bytes, stream: bool) -> list[bytes]:
        parts = self._cache.get((model, stream))
        if parts is None:
            name = model.decode("utf-8", "replace")
            if stream:
                head = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                events = stream_events(name)
                parts = [head + events[0], *events[1:]]
            else:
                body = completion_body(name)
                parts = [
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                ]
            if len(self._cache) < 64:
                self._cache[(model, stream)] = parts
        return parts

    def embeddings(self, doc: Any) -> list[bytes]:
        """The answer to an embeddings request body, cached per (model, inputs, tokens,
        dimensions, encoding): the benchmark sends the same body again and again."""
        if not isinstance(doc, dict):
            return [BAD_EMBEDDINGS]
        shape = embedding_inputs(doc.get("input"))
        model = doc.get("model")
        dims = doc.get("dimensions")
        dims = EMBED_DIMENSIONS if dims is None else dims  # null or absent: the default
        fmt = doc.get("encoding_format") or "float"
        if (
            shape is None
            or not isinstance(model, str)
            or type(dims) is not int
            or not 1 <= dims <= MAX_EMBED_DIMENSIONS
            or fmt not in ("float", "base64")
        ):
            return [BAD_EMBEDDINGS]
        key = (model, *shape, dims, fmt)
        parts = self._embed_cache.get(key)
        if parts is None:
            body = embeddings_body(model, *shape, dims, fmt == "base64")
            parts = [
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            ]
            if len(self._embed_cache) < 64:
                self._embed_cache[key] = parts
        return parts


def _plain(status: bytes, ctype: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        ctype,
        len(body),
        body,
    )


NOT_FOUND = _plain(
    b"404 Not Found",
    b"application/json",
    b'{"error":{"message":"not found","type":"invalid_request_error"}}',
)
HEALTH = _plain(b"200 OK", b"text/plain", b"ok")
BAD_EMBEDDINGS = _plain(
    b"400 Bad Request",
    b"application/json",
    b'{"error":{"message":"input must be a string, a list of strings, a token array or a list '
    b'of token arrays; dimensions 1..4096; encoding_format float or base64",'
    b'"type":"invalid_request_error","param":null,"code":null}}',
)


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection; answers are written in request order, `delay` after arrival."""

    def __init__(
        self, responses: Responses, delay: float, jitter: Callable[[], float] | None
    ) -> None:
        self.responses = responses
        self.delay = delay
        self.jitter = jitter
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.queue: collections.deque[tuple[float, list[bytes]]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parts = self._answer(self.parser.get_method(), self.url, b"".join(self.body))
        if self.delay <= 0 and not self.queue:
            self._write(parts)
            return
        delay = self.delay * self.jitter() if self.jitter else self.delay
        self.queue.append((self.loop.time() + delay, parts))
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _answer(self, method: bytes, url: bytes, body: bytes) -> list[bytes]:
        path = url.split(b"?", 1)[0]
        if method == b"GET" and path == b"/health":
            return [HEALTH]
        embeddings = path.endswith(b"/embeddings")
        if method != b"POST" or not (embeddings or path.endswith(b"/chat/completions")):
            return [NOT_FOUND]
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = {}
        if embeddings:
            return self.responses.embeddings(doc)
        model = doc.get("model") if isinstance(doc, dict) else None
        stream = bool(doc.get("stream")) if isinstance(doc, dict) else False
        return self.responses.get(model.encode() if isinstance(model, str) else b"mock", stream)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            self._write(self.queue.popleft()[1])
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _write(self, parts: list[bytes]) -> None:
        if self.transport is None:
            return
        # One write per SSE event, like a real upstream emitting chunk after chunk.
        for part in parts:
            self.transport.write(part)


async def serve(host: str, port: int, delay_ms: float, jitter_pct: float = 0.0) -> None:
    """Serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    responses = Responses()
    # A delay factor of 1 ± jitter_pct %, seeded: the same run twice waits the same.
    rng, spread = random.Random(20261207), jitter_pct / 100
    jitter = (lambda: rng.uniform(1 - spread, 1 + spread)) if spread > 0 else None
    server = await loop.create_server(
        lambda: MockProtocol(responses, delay_ms / 1000, jitter),
        host,
        port,
        backlog=2048,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream on http://{host}:{port} (delay {delay_ms:g} ms)", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="OpenAI chat-completions and embeddings mock for the gateway benchmark."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="wait before each answer (before the first stream chunk)",
    )
    parser.add_argument(
        "--jitter-pct",
        type=float,
        default=0.0,
        help="vary each delay uniformly by up to this many percent either way (default 0)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.jitter_pct <= 100:
        parser.error("--jitter-pct must be between 0 and 100")
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, just slower
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, args.delay_ms, args.jitter_pct))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
