"""Request records: batched off the request path, none lost, several writers on one file."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.records import RecordWriter, RequestRecord, read_records, read_spend


def make_record(n: int = 0, **overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{n}",
        "ts": time.time(),
        "environment": "production",
        "key_id": "abcdefghijkl",
        "org": "acme",
        "requested_model": "chat",
        "route": "chat",
        "provider": "openai",
        "upstream_model": "gpt-4o-mini",
        "status": 200,
        "error_code": None,
        "latency_ms": 123.5,
        "ttfb_ms": 45.0,
        "input_tokens": 10,
        "output_tokens": 20,
        "usage_estimated": False,
        "cost_usd": 0.0001,
        "stream": False,
        "attempts": [
            {"provider": "openai", "model": "gpt-4o-mini", "outcome": "ok", "latency_ms": 120.0}
        ],
        "fell_back": False,
        "broke_after_commit": False,
        "skipped": [],
        "price_table_hash": "p" * 64,
        "config_hash": "c" * 64,
    }
    values.update(overrides)
    return RequestRecord(**values)


def count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM requests").fetchone()
    return int(n)


def writer(db: Path, **kw: Any) -> RecordWriter:
    options: dict[str, Any] = {"batch_size": 50, "flush_interval_ms": 20, "retention_days": 30}
    options.update(kw)
    w = RecordWriter(db, **options)
    w.start()
    return w


def test_every_submitted_record_is_written_by_close(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = writer(db, batch_size=7, flush_interval_ms=10_000)  # only batches and close write
    for n in range(1000):
        w.submit(make_record(n))
    w.close()
    assert count(db) == 1000
    assert (w.written, w.dropped, w.failures) == (1000, 0, 0)


def test_a_lone_record_is_written_within_the_flush_interval(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = writer(db, batch_size=100, flush_interval_ms=50)
    try:
        w.submit(make_record())
        deadline = time.monotonic() + 3
        while count(db) == 0:
            assert time.monotonic() < deadline, "not written within the flush interval"
            time.sleep(0.02)
    finally:
        w.close()


def test_a_full_batch_is_written_without_waiting_for_the_interval(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = writer(db, batch_size=10, flush_interval_ms=60_000)
    try:
        for n in range(10):
            w.submit(make_record(n))
        deadline = time.monotonic() + 3
        while count(db) < 10:
            assert time.monotonic() < deadline, "a full batch waited for the interval"
            time.sleep(0.02)
    finally:
        w.close()


def test_submit_from_many_threads(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = writer(db, batch_size=32)

    def produce(t: int) -> None:
        for n in range(250):
            w.submit(make_record(t * 1000 + n))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    ids = {r.request_id for r in read_records(db)}
    assert len(ids) == 2000 and count(db) == 2000


def _write_from_process(db: str, tag: str, n: int) -> None:
    w = RecordWriter(Path(db), batch_size=25, flush_interval_ms=5, retention_days=30)
    w.start()
    for i in range(n):
        w.submit(make_record(request_id=f"{tag}-{i}"))
    w.close()
    assert w.dropped == 0


def test_two_processes_write_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_write_from_process, args=(str(db), tag, 2000)) for tag in ("a", "b")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = {r.request_id for r in read_records(db)}
    assert len(ids) == 4000 and count(db) == 4000


def test_records_round_trip_with_json_columns_and_flags(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    original = make_record(
        status=200,
        error_code="stream_broken",
        stream=True,
        fell_back=True,
        broke_after_commit=True,
        usage_estimated=True,
        attempts=[
            {
                "provider": "openai",
                "model": "gpt-4o",
                "outcome": "rate_limited",
                "status": 429,
                "code": "rate_limit_exceeded",
                "latency_ms": 12.0,
            },
            {"provider": "anthropic", "model": "claude", "outcome": "ok", "latency_ms": 300.0},
        ],
        skipped=[{"provider": "gemini", "model": "gemini-2.0-flash", "reason": "no tools support"}],
    )
    w = writer(db)
    w.submit(original)
    w.close()
    assert read_records(db) == [original]


def test_an_unknown_cost_stays_null_never_zero(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = writer(db)
    w.submit(make_record(1, cost_usd=None, input_tokens=None, output_tokens=None, ttfb_ms=None))
    w.submit(make_record(2, cost_usd=0.0))
    w.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT request_id, cost_usd IS NULL FROM requests ORDER BY request_id"
        ).fetchall()
    assert rows == [("req-1", 1), ("req-2", 0)]
    assert read_records(db)[0].cost_usd is None


def test_retention_deletes_old_records_at_start(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    now = time.time()
    w = writer(db)
    w.submit(make_record(1, ts=now - 10 * 86400))
    w.submit(make_record(2, ts=now - 2 * 86400))
    w.close()
    w = writer(db, retention_days=7)
    w.close()
    assert [r.request_id for r in read_records(db)] == ["req-2"]


def test_a_locked_database_is_retried_not_lost(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = writer(db, busy_timeout_ms=50)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        for n in range(10):
            w.submit(make_record(n))
        deadline = time.monotonic() + 3
        while w.failures == 0:
            assert time.monotonic() < deadline, "the writer never hit the lock"
            time.sleep(0.02)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert w.flush(10)
    w.close()
    assert count(db) == 10
    assert w.dropped == 0 and w.failures > 0


def test_close_gives_up_after_its_timeout_and_counts_what_it_dropped(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    w = writer(db, busy_timeout_ms=20, flush_interval_ms=60_000)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        for n in range(5):
            w.submit(make_record(n))
        started = time.monotonic()
        w.close(timeout=0.3)
        assert time.monotonic() - started < 3
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert w.dropped == 5 and w.failures > 0
    w.submit(make_record(99))  # after close: counted, not silently lost
    assert w.dropped == 6


def test_read_spend_sums_known_costs_per_key_and_org(tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    now = time.time()
    day_start, month_start = now - 3600, now - 20 * 86400
    w = writer(db)
    w.submit(make_record(1, key_id="k1", org="acme", cost_usd=1.0, ts=now - 60))
    w.submit(make_record(2, key_id="k2", org="acme", cost_usd=2.0, ts=now - 60))
    w.submit(make_record(3, key_id="k1", org="acme", cost_usd=4.0, ts=now - 5 * 86400))
    w.submit(make_record(4, key_id="k1", org="acme", cost_usd=None, ts=now - 60))
    w.submit(make_record(5, key_id="k3", org="globex", cost_usd=8.0, ts=now - 25 * 86400))
    w.close()
    spend = read_spend(db, day_start, month_start)
    assert spend.key_day == {"k1": 1.0, "k2": 2.0}
    assert spend.key_month == {"k1": 5.0, "k2": 2.0}
    assert spend.org_day == {"acme": 3.0}
    assert spend.org_month == {"acme": 7.0}


def test_read_spend_of_a_missing_database_is_nothing(tmp_path: Path) -> None:
    spend = read_spend(tmp_path / "requests.db", 0.0, 0.0)
    assert (spend.key_day, spend.key_month, spend.org_day, spend.org_month) == ({}, {}, {}, {})


@pytest.mark.parametrize("last", [1, 3])
def test_read_records_last_n_oldest_first(tmp_path: Path, last: int) -> None:
    db = tmp_path / "requests.db"
    w = writer(db)
    for n in range(5):
        w.submit(make_record(n, ts=1000.0 + n))
    w.close()
    assert [r.request_id for r in read_records(db, last=last)] == [
        f"req-{n}" for n in range(5 - last, 5)
    ]
    assert [r.request_id for r in read_records(db, since=1003.0)] == ["req-3", "req-4"]
