"""The gaps in the request record (issue 12): `GET /v1/models` is recorded and a bad key there
gets `WWW-Authenticate`; records of revoked and expired keys name the key (never an id that
is not in the store); a client gone before the commit keeps the cancelled attempt in the
trail. Against `python -m runtime serve` with the mock provider."""

from __future__ import annotations

import dataclasses
import http.client
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_env import Gateway, run_cli, runtime_config

UNUSED = "http://127.0.0.1:9"  # the providers are never called: route `offline` is the mock


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    gateway = Gateway(
        runtime_config(UNUSED + "/v1", UNUSED, UNUSED, first_byte_timeout_s=5.0), tmp_path
    )
    yield gateway
    if gateway.proc is not None:
        gateway.stop()


def get(url: str, token: str | None) -> tuple[int, dict[str, str], Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def chat(gw: Gateway, token: str, **extra: Any) -> tuple[int, str, Any]:
    """POST a small chat request; (status, x-request-id, body)."""
    body = {"model": "offline", "messages": [{"role": "user", "content": "hi"}], **extra}
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, resp.getheader("x-request-id") or "", json.loads(resp.read())
    finally:
        conn.close()


def test_models_requests_are_recorded_and_a_bad_key_gets_www_authenticate(gw: Gateway) -> None:
    key = gw.key()  # before start: loaded at start, nothing polled
    gw.start()
    bad = key[:-4] + "zzzz"
    status, headers, body = get(gw.url + "/v1/models", bad)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="switchyard"'
    assert body["error"]["code"] == "invalid_api_key"
    bad_id = headers["x-request-id"]
    status, headers, _ = get(gw.url + "/v1/models", None)
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="switchyard"')
    missing_id = headers["x-request-id"]
    status, headers, body = get(gw.url + "/v1/models", key)
    assert status == 200 and {m["id"] for m in body["data"]} >= {"offline"}
    good_id = headers["x-request-id"]

    bad_rec, missing_rec, good_rec = (gw.record(i) for i in (bad_id, missing_id, good_id))
    for rec in (bad_rec, missing_rec, good_rec):
        assert rec["endpoint"] == "/v1/models"
        assert rec["latency_ms"] >= 0 and rec["environment"] == "test"
    assert (bad_rec["status"], bad_rec["error_code"], bad_rec["key_id"]) == (
        401,
        "invalid_api_key",
        None,
    )
    assert (missing_rec["status"], missing_rec["error_code"]) == (401, "missing_api_key")
    assert (good_rec["status"], good_rec["error_code"]) == (200, None)
    assert (good_rec["key_id"], good_rec["org"]) == (key.split("_")[2], "acme")
    # Chat requests are recorded as before, under their own endpoint.
    status, rid, _ = chat(gw, key)
    assert status == 200 and gw.record(rid)["endpoint"] == "/v1/chat/completions"


def test_records_of_revoked_and_expired_keys_name_the_key(gw: Gateway) -> None:
    revoked, expired, unknown_id = gw.key(name="revoked"), gw.key(name="expired"), gw.key()
    revoked_id, expired_id = revoked.split("_")[2], expired.split("_")[2]
    run_cli("keys", "revoke", "--env", "test", "--data-dir", str(gw.data_dir), revoked_id)
    conn = sqlite3.connect(gw.data_dir / "keys.db")
    with conn:
        conn.execute("UPDATE keys SET expires_at = ? WHERE id = ?", (time.time() - 1, expired_id))
        # A well-formed token whose id is not in the store: its id is never recorded.
        conn.execute("DELETE FROM keys WHERE id = ?", (unknown_id.split("_")[2],))
    conn.close()
    gw.start()

    cases = [
        (revoked, "key_revoked", revoked_id),
        (expired, "key_expired", expired_id),
        (unknown_id, "invalid_api_key", None),
        (revoked[:-4] + "zzzz", "invalid_api_key", None),  # a known id, the wrong secret
    ]
    for token, code, recorded_id in cases:
        status, rid, body = chat(gw, token)
        assert (status, body["error"]["code"]) == (401, code)
        rec = gw.record(rid)
        assert (rec["status"], rec["error_code"], rec["key_id"]) == (401, code, recorded_id)
        assert rec["org"] == ("acme" if recorded_id else None)
        status, headers, _ = get(gw.url + "/v1/models", token)
        rec = gw.record(headers["x-request-id"])
        assert (rec["status"], rec["error_code"], rec["key_id"]) == (401, code, recorded_id)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_gone_before_the_commit_keeps_the_cancelled_attempt(
    gw: Gateway, stream: bool
) -> None:
    key = gw.key()
    gw.start()
    body = json.dumps(
        {
            "model": "offline",
            "messages": [{"role": "user", "content": "mock:slow 1500"}],
            "stream": stream,
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    time.sleep(0.4)
    conn.close()  # before any byte of the answer
    deadline = time.monotonic() + 10
    recs: list[dict[str, Any]] = []
    while not recs and time.monotonic() < deadline:
        recs = gw.records()
        time.sleep(0.05)
    [rec] = recs
    assert (rec["status"], rec["error_code"]) == (499, "client_closed_request")
    [attempt] = rec["attempts"]
    assert (attempt["provider"], attempt["model"]) == ("mock", "echo")
    assert attempt["outcome"] == "client_closed_request"
    assert 300 <= attempt["latency_ms"] <= rec["latency_ms"] < 1500
    assert rec["provider"] is None and rec["fell_back"] == 0


def test_a_database_without_the_endpoint_column_reads_and_migrates_as_chat(
    tmp_path: Path,
) -> None:
    from runtime.records import FIELDS, RecordWriter, read_records
    from tests.unit.test_records import make_record

    db = tmp_path / "requests.db"
    old = [f for f in FIELDS if f != "endpoint"]
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE requests ({', '.join(old)})")
    row = make_record(1)
    values = {f: getattr(row, f) for f in old} | {"attempts": "[]", "skipped": "[]"}
    conn.execute(
        f"INSERT INTO requests ({', '.join(old)}) VALUES ({', '.join('?' for _ in old)})",
        [values[f] for f in old],
    )
    conn.commit()
    conn.close()
    [before] = read_records(db)  # read-only, unmigrated
    assert before.endpoint == "/v1/chat/completions"
    writer = RecordWriter(db, batch_size=1, flush_interval_ms=10, retention_days=100_000)
    writer.start()
    writer.submit(make_record(2, endpoint="/v1/models", status=401))
    assert writer.flush()
    writer.close()
    after, models = read_records(db)
    assert (after.request_id, after.endpoint) == ("req-1", "/v1/chat/completions")
    assert (models.endpoint, models.status) == ("/v1/models", 401)


def test_an_attempt_cut_by_the_request_timeout_stays_in_the_trail(tmp_path: Path) -> None:
    cfg = runtime_config(UNUSED + "/v1", UNUSED, UNUSED, first_byte_timeout_s=5.0)
    gw = Gateway(dataclasses.replace(cfg, request_timeout_s=0.5), tmp_path)
    key = gw.key()
    gw.start()
    try:
        status, rid, body = chat(gw, key, messages=[{"role": "user", "content": "mock:slow 3000"}])
        assert (status, body["error"]["code"]) == (504, "request_timeout")
        rec = gw.record(rid)
        [attempt] = rec["attempts"]
        assert (attempt["provider"], attempt["outcome"]) == ("mock", "request_timeout")
        assert 400 <= attempt["latency_ms"] <= rec["latency_ms"] < 3000
    finally:
        gw.stop()
