"""A real gateway process with `logging.sink: postgres` against a real PostgreSQL: N requests
in, N rows out (SIGTERM right after the last response included); PostgreSQL stopped for 10 s
while traffic runs (every request served, every record written when it returns); a tiny
buffer whose drops are counted exactly in switchyard_records_dropped_total."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from runtime.config import LoggingConfig, SecretSpec
from tests.gateway_env import Gateway, runtime_config
from tests.servers import PostgresServer

URL_SECRET = "SWITCHYARD_RECORDS_URL"


def pg_gateway(
    tmp_path: Path, url: str, *, buffer_max_records: int = 100_000, workers: int = 1
) -> Gateway:
    base = runtime_config("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    config = replace(
        base,
        logging=LoggingConfig(
            sink="postgres",
            url_secret=URL_SECRET,
            retention_days=30,
            batch_size=64,
            flush_interval_ms=20,
            buffer_max_records=buffer_max_records,
        ),
        secrets={
            **base.secrets,
            URL_SECRET: SecretSpec(URL_SECRET, "logging.url_secret", optional=False),
        },
    )
    return Gateway(config, tmp_path, env={URL_SECRET: url}, workers=workers)


def chat(gw: Gateway, key: str, n: int) -> str:
    """One chat request on the offline route; its request id (asserts a 200)."""
    body = json.dumps(
        {"model": "offline", "messages": [{"role": "user", "content": f"hello {n}"}]}
    ).encode()
    req = urllib.request.Request(
        gw.url + "/v1/chat/completions",
        data=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        rid = resp.headers["x-request-id"]
        resp.read()
    assert rid
    return str(rid)


def chat_ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT request_id FROM requests WHERE route = 'offline' ORDER BY id"
        ).fetchall()
    return [r[0] for r in rows]


def wait_rows(url: str, n: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ids = chat_ids(url)
        except psycopg.errors.UndefinedTable:
            ids = []
        if len(ids) >= n or time.monotonic() > deadline:
            return ids
        time.sleep(0.05)


def metric(gw: Gateway, name: str) -> float:
    with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


@pytest.fixture
def private_pg() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    yield server
    server.remove()


def test_n_requests_in_n_rows_out_with_sigterm_after_the_last(
    tmp_path: Path, postgres_url: str
) -> None:
    gw = pg_gateway(tmp_path, postgres_url, workers=2).start()
    try:
        key = gw.key()
        time.sleep(1.5)  # both workers reload their key cache every second
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda n: chat(gw, key, n), range(300)))
        code = gw.stop()  # SIGTERM right after the last response
    finally:
        gw.stop()
    assert code == 0, gw.log.read_text()
    got = chat_ids(postgres_url)
    assert len(got) == 300
    assert sorted(got) == sorted(ids)


def test_postgres_down_for_10_s_while_traffic_runs(
    tmp_path: Path, private_pg: PostgresServer
) -> None:
    gw = pg_gateway(tmp_path, private_pg.url).start()
    ids: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            try:
                ids.append(chat(gw, key, n))
            except (AssertionError, OSError, urllib.error.HTTPError) as exc:
                errors.append(exc)
            n += 1
            time.sleep(0.01)

    try:
        key = gw.key()
        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        private_pg.stop()
        down_at = len(ids)
        time.sleep(10.0)
        served_while_down = len(ids) - down_at
        assert metric(gw, "switchyard_record_write_failures_total") > 0
        ready = json.loads(urllib.request.urlopen(gw.url + "/readyz", timeout=5).read())
        assert any("PostgreSQL unavailable" in w for w in ready["warnings"]), ready
        private_pg.resume()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        assert errors == []
        assert served_while_down > 50  # requests kept being served during the outage
        got = wait_rows(private_pg.url, len(ids))
        assert sorted(got) == sorted(ids)
        assert metric(gw, "switchyard_records_dropped_total") == 0
    finally:
        stop.set()
        gw.stop()


def test_a_tiny_buffer_counts_the_drops_exactly(tmp_path: Path, private_pg: PostgresServer) -> None:
    gw = pg_gateway(tmp_path, private_pg.url, buffer_max_records=5).start()
    try:
        key = gw.key()
        time.sleep(0.5)  # any record of the key check above is written before the outage
        private_pg.stop()
        ids = [chat(gw, key, n) for n in range(20)]  # every one served
        assert metric(gw, "switchyard_records_dropped_total") == 15
        private_pg.resume()
        got = wait_rows(private_pg.url, 5)
        assert got == ids[-5:]  # the buffer keeps the newest; the oldest are counted
        time.sleep(0.3)
        assert chat_ids(private_pg.url) == ids[-5:]
        assert metric(gw, "switchyard_records_dropped_total") == 15
    finally:
        gw.stop()


def test_a_database_with_a_newer_records_schema_is_refused_at_start(
    tmp_path: Path, postgres_url: str
) -> None:
    from runtime.postgres import connect
    from runtime.records_pg import ensure_schema

    with connect(postgres_url) as conn:
        ensure_schema(conn)
        conn.execute("INSERT INTO switchyard_migrations (component, version) VALUES ('records', 9)")
    gw = pg_gateway(tmp_path, postgres_url)
    with pytest.raises(AssertionError, match="gateway exited with 1") as failed:
        gw.start()
    assert "error: request records: " in str(failed.value)
    assert "records schema is version 9, newer than this gateway knows" in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_an_unreachable_database_at_start_still_serves(tmp_path: Path) -> None:
    from tests.servers import free_port

    gw = pg_gateway(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/postgres").start()
    try:
        key = gw.key()
        chat(gw, key, 0)
        assert "warning: request records: cannot connect" in gw.log.read_text()
        assert "postgresql://" not in gw.log.read_text()
    finally:
        gw.stop(timeout=30)
