"""bench/ for issue 13: the mock upstream's embeddings and gateway_bench.py --endpoints.

The mock is judged by the openai SDK (`client.embeddings.create`, which asks for base64 by
default and decodes it, and `CreateEmbeddingResponse`). The bench's request bodies and headers
are compared with what the official SDKs send for the same call (openai `responses.create`,
anthropic `messages.create`), captured by a local server; its TTFB content detection is fed
events built from the SDKs' own types.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import (
    InputJSONDelta,
    RawContentBlockDeltaEvent,
    RawMessageStartEvent,
    TextDelta,
)
from openai.types.create_embedding_response import CreateEmbeddingResponse
from openai.types.responses import ResponseTextDeltaEvent

from runtime.config import RuntimeConfig

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gateway_bench as gb  # noqa: E402
import mock_upstream  # noqa: E402

DELAY_MS = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "mock_upstream.py"),
            "--port",
            str(port),
            "--delay-ms",
            str(DELAY_MS),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, "the mock exited at start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="bench-upstream-key", max_retries=0)


# --------------------------------------------------------------------------- the mock


def test_mock_embeddings_sdk_default_base64_after_the_delay(mock_url: str) -> None:
    client = _client(mock_url)
    start = time.perf_counter()
    # No encoding_format: the SDK asks for base64 and decodes the float32 itself.
    got = client.embeddings.create(model="mock-embed", input=gb.EMBED_INPUT)
    elapsed = time.perf_counter() - start
    assert isinstance(got, CreateEmbeddingResponse)
    assert [d.index for d in got.data] == list(range(len(gb.EMBED_INPUT)))
    assert all(len(d.embedding) == mock_upstream.EMBED_DIMENSIONS for d in got.data)
    assert got.data[0].embedding != got.data[1].embedding
    assert got.model == "mock-embed"
    assert got.usage.prompt_tokens == got.usage.total_tokens > 0
    assert elapsed >= DELAY_MS / 1000 * 0.9


def test_mock_embeddings_float_is_the_same_vector(mock_url: str) -> None:
    client = _client(mock_url)
    as_b64 = client.embeddings.create(model="m", input="hello world")
    as_float = client.embeddings.create(model="m", input="hello world", encoding_format="float")
    assert as_float.data[0].embedding == pytest.approx(as_b64.data[0].embedding, rel=1e-6)
    raw = client.embeddings.with_raw_response.create(
        model="m", input="hello world", encoding_format="float"
    )
    doc = json.loads(raw.content)
    assert isinstance(doc["data"][0]["embedding"], list)  # floats on the wire, not base64
    assert doc["object"] == "list" and doc["data"][0]["object"] == "embedding"


def test_mock_embeddings_dimensions_and_token_arrays(mock_url: str) -> None:
    client = _client(mock_url)
    got = client.embeddings.create(model="m", input=[[1, 2, 3], [4, 5]], dimensions=8)
    assert [len(d.embedding) for d in got.data] == [8, 8]
    assert got.usage.prompt_tokens == 5
    one = client.embeddings.create(model="m", input=[7, 8, 9, 10], encoding_format="float")
    assert len(one.data) == 1 and one.usage.prompt_tokens == 4


def test_mock_embeddings_refuses_what_openai_refuses(mock_url: str) -> None:
    client = _client(mock_url)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input=[])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input="x", dimensions=0)


def test_mock_chat_completions_unchanged(mock_url: str) -> None:
    got = _client(mock_url).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert got.choices[0].message.content == "".join(mock_upstream.CONTENT)


# --------------------------------------------------------------------------- the bench's requests


class _Capture(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        _Capture.seen.append((self.path, headers, json.loads(body)))
        out = b'{"error":{"type":"invalid_request_error","message":"captured"}}'
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[str]:
    _Capture.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("stream", [False, True])
def test_responses_request_is_what_the_openai_sdk_sends(capture: str, stream: bool) -> None:
    client = openai.OpenAI(base_url=capture + "/v1", api_key="sy_bench_key", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model=gb.ROUTE,
            instructions=gb.MESSAGES[0]["content"],
            input=gb.MESSAGES[1]["content"],
            stream=stream,
        )
    path, headers, body = _Capture.seen[0]
    assert path == gb.ENDPOINT_PATHS["responses"]
    assert body == json.loads(gb.request_body(stream, "responses"))
    ours = {k.lower(): v for k, v in gb.request_headers("sy_bench_key", "responses").items()}
    assert ours.items() <= headers.items()


@pytest.mark.parametrize("stream", [False, True])
def test_messages_request_body_is_what_the_anthropic_sdk_sends(capture: str, stream: bool) -> None:
    client = anthropic.Anthropic(base_url=capture, api_key="sy_bench_key", max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model=gb.ROUTE,
            max_tokens=64,
            system=gb.MESSAGES[0]["content"],
            messages=[{"role": "user", "content": gb.MESSAGES[1]["content"]}],
            stream=stream,
        )
    path, headers, body = _Capture.seen[0]
    assert path == gb.ENDPOINT_PATHS["messages"]
    assert body == json.loads(gb.request_body(stream, "messages"))
    # The headers are those of Anthropic's documented request (https://docs.anthropic.com/
    # en/api/messages: x-api-key, anthropic-version: 2023-06-01), as Claude Code and the 0.x
    # SDKs send them; the 2.x SDK sends the key as a bearer token and a newer version.
    assert gb.request_headers("sy_bench_key", "messages") == {
        "Content-Type": "application/json",
        "x-api-key": "sy_bench_key",
        "anthropic-version": "2023-06-01",
    }
    assert "sy_bench_key" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert headers["content-type"] == "application/json" and "anthropic-version" in headers


def test_embeddings_request_is_what_the_openai_sdk_sends(capture: str) -> None:
    client = openai.OpenAI(base_url=capture + "/v1", api_key="sy_bench_key", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(
            model=gb.EMBED_ROUTE, input=gb.EMBED_INPUT, encoding_format="float"
        )
    path, _, body = _Capture.seen[0]
    assert path == gb.ENDPOINT_PATHS["embeddings"]
    assert {**json.loads(gb.request_body(False, "embeddings")), "encoding_format": "float"} == body


def test_chat_wrk_script_and_ttfb_request_unchanged(tmp_path: Path) -> None:
    body = json.dumps(
        {"model": gb.ROUTE, "messages": gb.MESSAGES, "stream": True}, separators=(",", ":")
    )
    script = gb.wrk_script(tmp_path / "s.lua", True, "KEY").read_text()
    assert script == (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Authorization"] = "Bearer KEY"\n'
    )
    assert (
        gb.ttfb_request(8000, "KEY")
        == (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-type: "
            "application/json\r\nauthorization: Bearer KEY\r\n"
            f"content-length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )


def test_messages_wrk_script_carries_the_anthropic_headers(tmp_path: Path) -> None:
    script = gb.wrk_script(tmp_path / "m.lua", False, "KEY", "messages").read_text()
    assert 'wrk.headers["x-api-key"] = "KEY"' in script
    assert 'wrk.headers["anthropic-version"] = "2023-06-01"' in script
    assert "Authorization" not in script
    body = json.loads(json.loads(script.splitlines()[1].removeprefix("wrk.body = ")))
    assert body == json.loads(gb.request_body(False, "messages"))


# --------------------------------------------------------------------------- TTFB detection


def _sse(data: str) -> bytes:
    return b"data: " + data.encode()


def test_has_content_per_api() -> None:
    delta = ResponseTextDeltaEvent(
        type="response.output_text.delta",
        content_index=0,
        delta="Hello",
        item_id="msg_1",
        logprobs=[],
        output_index=0,
        sequence_number=3,
    )
    empty = delta.model_copy(update={"delta": ""})
    created = '{"type":"response.created","sequence_number":0,"response":{}}'
    assert gb._has_content(_sse(delta.model_dump_json()), "responses")
    assert not gb._has_content(_sse(empty.model_dump_json()), "responses")
    assert not gb._has_content(_sse(created), "responses")

    text = RawContentBlockDeltaEvent(
        type="content_block_delta", index=0, delta=TextDelta(type="text_delta", text="Hi")
    )
    tool = RawContentBlockDeltaEvent(
        type="content_block_delta",
        index=1,
        delta=InputJSONDelta(type="input_json_delta", partial_json='{"a"'),
    )
    start = RawMessageStartEvent.model_validate(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 0},
            },
        }
    )
    assert gb._has_content(_sse(text.model_dump_json()), "messages")
    assert not gb._has_content(_sse(tool.model_dump_json()), "messages")
    assert not gb._has_content(_sse(start.model_dump_json()), "messages")
    assert not gb._has_content(b"event: content_block_delta", "messages")
    # Chat completions as before, and a chat chunk is no content for the other APIs.
    chunk = '{"choices":[{"index":0,"delta":{"content":"Hi"}}]}'
    assert gb._has_content(_sse(chunk))
    assert not gb._has_content(_sse(chunk), "responses")
    assert not gb._has_content(b"data: [DONE]")


# --------------------------------------------------------------------------- config and report


def test_runtime_config_with_endpoints_round_trips() -> None:
    plain = gb.runtime_config(9100)
    assert set(plain.routes) == {gb.ROUTE}
    assert set(plain.providers["upstream"].models) == {"model"}
    assert '"kind"' not in plain.to_json() and '"dimensions"' not in plain.to_json()

    cfg = gb.runtime_config(9100, endpoints=True)
    back = RuntimeConfig.from_json(cfg.to_json())
    assert back == cfg
    route = back.routes[gb.EMBED_ROUTE]
    assert route.kind == "embeddings"
    assert back.routes[gb.ROUTE].kind == "chat"
    (ref,) = route.candidates
    embed = back.providers[ref.provider].models[ref.model]
    assert embed.capabilities == frozenset({"embeddings"})
    assert embed.dimensions == gb.EMBED_DIMENSIONS
    assert embed.upstream == gb.EMBED_UPSTREAM_MODEL
    assert embed.price is not None and embed.price.input > 0 and embed.price.output == 0


def _wrk(rps: float, p50: float, errors: int = 0) -> gb.WrkResult:
    return gb.WrkResult(rps, p50, p50 * 1.5, p50 * 2, int(rps * 2), errors)


def _report(endpoints: bool) -> gb.Report:
    machine = {
        "cpus": 2,
        "cpu": "test",
        "python": "3.11",
        "wrk": "wrk 4.2.0",
        "loadavg_1m_at_start": 0,
    }
    report = gb.Report("2026-12-08 00:00", machine, 2.0, endpoints=endpoints)
    for stream in (False, True):
        for conns in (1, 16):
            for target, rps, p50 in (("direct", 5000.0, 1.0), ("gateway", 2000.0, 2.0)):
                report.runs.append(gb.Run(0, stream, conns, target, _wrk(rps, p50), 0.9, 0.1))
    report.ttfb = [gb.Ttfb(0, "direct", 80, 1.0, 1.2), gb.Ttfb(0, "gateway", 80, 1.5, 1.8)]
    if endpoints:
        # Chat completions re-run next to the other endpoints (non-stream only here: the
        # streamed cases fall back to the main table's gateway runs).
        for conns in (1, 16):
            report.endpoint_runs.append(
                gb.EndpointRun(0, "chat", False, conns, "gateway", _wrk(1800.0, 2.25), 0.9, 0.1)
            )
        for endpoint, stream in gb.ENDPOINT_CASES:
            for conns in (1, 16):
                report.endpoint_runs.append(
                    gb.EndpointRun(
                        0, endpoint, stream, conns, "gateway", _wrk(1600.0, 2.5), 0.95, 0.1
                    )
                )
                if endpoint == "embeddings":
                    report.endpoint_runs.append(
                        gb.EndpointRun(
                            0, endpoint, stream, conns, "direct", _wrk(4000.0, 0.75), None, 0.2
                        )
                    )
        report.endpoint_ttfb = [
            gb.Ttfb(0, "chat", 80, 1.5, 1.8),
            gb.Ttfb(0, "responses", 80, 1.75, 2.0),
            gb.Ttfb(0, "messages", 80, 1.625, 2.0),
        ]
        report.endpoint_rows = gb.endpoint_rows(report)
    return report


def test_endpoint_rows_compare_with_their_baselines() -> None:
    rows = _report(True).endpoint_rows
    assert [(r.endpoint, r.stream, r.connections) for r in rows] == [
        (e, s, c) for e, s in gb.ENDPOINT_CASES for c in (1, 16)
    ]
    for row in rows:
        if row.endpoint == "embeddings":
            assert (row.baseline, row.baseline_rps, row.added_p50_ms) == (
                "mock direct",
                4000.0,
                1.75,
            )
        elif row.stream:
            assert (row.baseline, row.baseline_rps, row.added_p50_ms) == (
                "chat via gateway",
                2000.0,
                0.5,
            )
            assert row.ratio == 0.8
        else:  # the chat run next to it, not the main table's
            assert (row.baseline, row.baseline_rps, row.added_p50_ms) == (
                "chat via gateway",
                1800.0,
                0.25,
            )


def test_render_endpoints_table_only_when_asked() -> None:
    plain = _report(False)
    text = gb.render(plain)
    assert "Endpoints" not in text and "/v1/responses" not in text
    assert set(gb.report_json(plain)) == set(json.loads(json.dumps(gb.report_json(plain))))
    assert not {"endpoints", "endpoint_runs", "endpoint_rows", "endpoint_ttfb"} & set(
        gb.report_json(plain)
    )

    with_endpoints = _report(True)
    text = gb.render(with_endpoints)
    assert text.startswith(gb.render(plain) + "\n")  # the chat report unchanged, then the table
    assert (
        "| 0 ms | /v1/responses | stream | 16 | 1,600 | 2.50 / 5.00 | chat via gateway | 2,000 "
        "| 80.0% | 2.00 | +0.50 | 0.95 | 0 |" in text
    )
    assert (
        "| 0 ms | /v1/embeddings | non-stream | 1 | 1,600 | 2.50 / 5.00 | mock direct | 4,000 "
        "| 40.0% | 0.75 | +1.75 | 0.95 | 0 |" in text
    )
    assert "| 0 ms | /v1/responses | 1.75 / 2.00 | +0.25 | 80 |" in text
    assert "| 0 ms | /v1/messages | 1.62 / 2.00 | +0.12 | 80 |" in text
    doc = json.loads(json.dumps(gb.report_json(with_endpoints)))
    assert doc["endpoints"] is True
    assert len(doc["endpoint_runs"]) == 14 and len(doc["endpoint_rows"]) == 10
    assert {t["target"] for t in doc["endpoint_ttfb"]} == {"chat", "responses", "messages"}


# --------------------------------------------------------------------------- the TTFB client


async def _sse_server(events: list[bytes], seen: list[bytes]) -> asyncio.Server:
    """Answers every request on a keep-alive connection with `events`, chunked."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                seen.append(head + await reader.readexactly(length))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for event in events:
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _messages_stream() -> list[bytes]:
    text = RawContentBlockDeltaEvent(
        type="content_block_delta", index=0, delta=TextDelta(type="text_delta", text="Hi")
    )
    return [
        b'event: message_start\ndata: {"type":"message_start"}\n\n',
        b"event: content_block_delta\ndata: " + text.model_dump_json().encode() + b"\n\n",
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]


def test_ttfb_series_speaks_each_api() -> None:
    async def run() -> tuple[list[float], list[bytes]]:
        seen: list[bytes] = []
        server = await _sse_server(_messages_stream(), seen)
        port = server.sockets[0].getsockname()[1]
        async with server:
            times = await gb._ttfb_series(port, "KEY", 3, endpoint="messages")
        return times, seen

    times, seen = asyncio.run(run())
    assert len(times) == 3 and all(t > 0 for t in times)
    assert len(seen) == 3
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/messages HTTP/1.1\r\n")
    assert b"\r\nx-api-key: KEY" in head and b"\r\nanthropic-version: 2023-06-01" in head
    assert json.loads(body) == json.loads(gb.request_body(True, "messages"))


def test_ttfb_series_refuses_a_stream_without_text() -> None:
    async def run() -> None:
        # A chat-completions stream where a Responses stream was asked for: no text delta.
        chunk = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        server = await _sse_server([chunk, b"data: [DONE]\n\n"], [])
        port = server.sockets[0].getsockname()[1]
        async with server:
            await gb._ttfb_series(port, "KEY", 1, endpoint="responses")

    with pytest.raises(RuntimeError, match="no content line"):
        asyncio.run(run())
