"""A gateway stopped with SIGTERM loses nothing (docs/runtime.md, "Shutdown"): `python -m
runtime serve` as a real subprocess, with one worker and with two, over the mock provider.

- a stream still running when the shutdown timeout ends gets an error event (code
  `gateway_shutting_down`, no [DONE]) and a record that says it was interrupted;
- with the default timeline a stream ends by its own request timeout before the process
  exits, and its record is written;
- a client still sending its body gets a 503 at once (not after the graceful timeout) and a
  record with that status;
- short requests in flight all finish cleanly.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_env import Gateway, runtime_config

UNUSED = "http://127.0.0.1:9"  # the mock provider answers; the fakes are never called
WORKERS = [pytest.param(1, id="1-worker"), pytest.param(2, id="2-workers")]


def _gateway(
    tmp_path: Path, workers: int, *args: str, timeout_s: float = 30.0
) -> tuple[Gateway, str]:
    """A started gateway and a key every worker knows."""
    config = replace(runtime_config(UNUSED + "/v1", UNUSED, UNUSED), request_timeout_s=timeout_s)
    gw = Gateway(config, tmp_path, workers=workers, serve_args=args).start()
    key = gw.key()
    if workers > 1:
        time.sleep(1.2)  # each worker reloads its key cache every second
    return gw, key


def _body(text: str, stream: bool) -> bytes:
    return json.dumps(
        {"model": "offline", "messages": [{"role": "user", "content": text}], "stream": stream}
    ).encode()


def _headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


def _open_stream(gw: Gateway, key: str, text: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", _body(text, True), _headers(key))
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    return resp


def _events(resp: http.client.HTTPResponse) -> list[bytes]:
    """The `data:` payloads of an SSE response until it ends."""
    out = []
    for line in resp:
        if line.startswith(b"data: "):
            out.append(line[len(b"data: ") :].strip())
    return out


def _first_event(resp: http.client.HTTPResponse) -> bytes:
    for line in resp:
        if line.startswith(b"data: "):
            return line[len(b"data: ") :].strip()
    raise AssertionError("the stream ended before its first event")


def _stopped(gw: Gateway, within: float) -> int:
    assert gw.proc is not None
    rc = gw.proc.wait(within)
    log = gw.log.read_text()
    assert "Traceback" not in log, log
    return rc


PACED = "mock:pace 200 " + " ".join(f"w{i}" for i in range(60))  # a 12 s stream


@pytest.mark.parametrize("workers", WORKERS)
def test_a_stream_still_running_at_the_shutdown_timeout_gets_an_error_event_and_its_record_says_interrupted(  # noqa: E501
    workers: int, tmp_path: Path
) -> None:
    gw, key = _gateway(tmp_path, workers, "--shutdown-timeout", "1")
    assert gw.proc is not None
    resp = _open_stream(gw, key, PACED)
    rid = resp.headers["x-request-id"]
    first = _first_event(resp)
    assert json.loads(first)["object"] == "chat.completion.chunk"

    gw.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    events = _events(resp)
    cut_after = time.monotonic() - sent

    assert 0.5 < cut_after < 5, cut_after  # at the shutdown timeout (1 s), not at its end
    assert b"[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == "gateway_shutting_down"
    assert error["type"] == "api_error"
    assert all("choices" in json.loads(e) for e in events[:-1]) and len(events) > 2
    assert _stopped(gw, 20) == 0

    rec = gw.record(rid)
    assert rec["status"] == 200
    assert rec["broke_after_commit"] == 1
    assert rec["error_code"] == "gateway_shutting_down"
    assert rec["stream"] == 1 and rec["output_tokens"] > 0 and rec["usage_estimated"] == 1


@pytest.mark.parametrize("workers", WORKERS)
def test_by_default_a_stream_ends_by_its_own_request_timeout_and_is_recorded_before_exit(
    workers: int, tmp_path: Path
) -> None:
    gw, key = _gateway(tmp_path, workers, timeout_s=3.0)
    assert gw.proc is not None
    resp = _open_stream(gw, key, PACED)
    rid = resp.headers["x-request-id"]
    _first_event(resp)

    gw.proc.send_signal(signal.SIGTERM)
    events = _events(resp)
    assert json.loads(events[-1])["error"]["code"] == "request_timeout"
    assert b"[DONE]" not in events
    assert _stopped(gw, 20) == 0

    rec = gw.record(rid)
    assert (rec["status"], rec["broke_after_commit"], rec["error_code"]) == (
        200,
        1,
        "request_timeout",
    )


def _trickle(gw: Gateway, key: str) -> tuple[socket.socket, bytes]:
    """A request whose body is announced (Content-Length) and sent a few bytes at a time."""
    body = _body("hello " * 50, False)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{gw.port}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    sock.sendall(head + body[:10])
    return sock, body[10:]


def _read_response(
    sock: socket.socket, rest: bytes, until: float
) -> tuple[int, bytes, dict[str, str]]:
    """Keep trickling `rest` (a byte every 100 ms) while waiting for the response."""
    sock.setblocking(False)
    data = b""
    while time.monotonic() < until:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            break
        if chunk:
            data += chunk
            continue
        if data:
            break  # a response arrived whole (the gateway closes the connection after it)
        if rest:
            sock.send(rest[:1])
            rest = rest[1:]
        time.sleep(0.1)
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), body, headers


@pytest.mark.parametrize("workers", WORKERS)
def test_a_client_still_sending_its_body_gets_a_503_at_once_and_a_record_with_that_status(
    workers: int, tmp_path: Path
) -> None:
    gw, key = _gateway(tmp_path, workers)
    assert gw.proc is not None
    sock, rest = _trickle(gw, key)
    time.sleep(0.5)  # the gateway is waiting for the rest of the body

    gw.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    status, body, headers = _read_response(sock, rest, sent + 10)
    answered_after = time.monotonic() - sent

    assert status == 503, body
    assert answered_after < 3, answered_after  # not after uvicorn's graceful timeout
    assert json.loads(body)["error"]["code"] == "gateway_shutting_down"
    assert headers["retry-after"] == "1"
    assert _stopped(gw, 10) == 0
    assert time.monotonic() - sent < 8  # the trickling client did not hold the shutdown

    rec = gw.record(headers["x-request-id"])
    assert (rec["status"], rec["error_code"]) == (503, "gateway_shutting_down")
    assert rec["key_id"] is not None
    assert [r["status"] for r in gw.records()] == [503]  # never a record with status 0


def _call(gw: Gateway, key: str, text: str, stream: bool) -> tuple[str, int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", _body(text, stream), _headers(key))
    resp = conn.getresponse()
    return resp.headers["x-request-id"], resp.status, resp.read()


@pytest.mark.parametrize("workers", WORKERS)
def test_short_requests_in_flight_at_sigterm_all_finish_cleanly(
    workers: int, tmp_path: Path
) -> None:
    gw, key = _gateway(tmp_path, workers)
    assert gw.proc is not None
    with ThreadPoolExecutor(12) as pool:
        calls = [
            pool.submit(
                _call, gw, key, f"mock:pace 100 {'a b c d e f' if i % 2 else 'x'}", i % 2 == 1
            )
            for i in range(12)
        ]
        time.sleep(0.3)  # all of them are in flight
        gw.proc.send_signal(signal.SIGTERM)
        answers = [c.result() for c in calls]
    assert _stopped(gw, 20) == 0

    for i, (_, status, body) in enumerate(answers):
        assert status == 200, body
        if i % 2:
            assert body.rstrip().endswith(b"data: [DONE]"), body
            assert b'"error"' not in body
    records: dict[str, dict[str, Any]] = {r["request_id"]: r for r in gw.records()}
    assert sorted(records) == sorted(rid for rid, _, _ in answers)
    for r in records.values():
        assert (r["status"], r["error_code"], r["broke_after_commit"]) == (200, None, 0)
