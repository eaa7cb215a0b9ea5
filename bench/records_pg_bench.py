"""Records per second PostgreSQL sustains through PgRecordWriter (runtime/records_pg.py).

    python bench/records_pg_bench.py                      # private PostgreSQL, 200k records
    python bench/records_pg_bench.py --records 50000 --batch-sizes 64,256,1024 --json
    SWITCHYARD_BENCH_POSTGRES_URL=postgresql://... python bench/records_pg_bench.py

For each batch size it creates a fresh database, starts a writer (flush interval 200 ms, the
compiler's default), submits the records as fast as one thread can (what the request path
pays: `submit` is an append) and times until every record is in the table (`flush`). The
SQLite writer (runtime/records.py) on a temporary file gets the same records for
comparison. Without SWITCHYARD_BENCH_POSTGRES_URL it starts a private server (Debian's
PostgreSQL, fsync off as in the tests: a production server with fsync on is slower per
commit, not per row, so large batches matter more there).

This is a benchmark, not a test: it asserts only that every record was written.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from runtime.records import RecordWriter, RequestRecord
from runtime.records_pg import PgRecordWriter
from tests.servers import PostgresServer, fresh_database


@dataclass
class Result:
    sink: str
    batch_size: int
    records: int
    submit_s: float  # submitting all of them (the request path's share)
    total_s: float  # submit start until every record is written
    records_per_s: float


def make_records(n: int) -> list[RequestRecord]:
    now = time.time()
    return [
        RequestRecord(
            request_id=f"req-{i:08d}-{secrets.token_hex(6)}",
            ts=now + i * 1e-4,
            environment="bench",
            key_id="abcdefghijkl",
            org="acme",
            requested_model="chat",
            route="chat",
            provider="openai",
            upstream_model="gpt-4o-mini",
            status=200,
            error_code=None,
            latency_ms=123.4,
            ttfb_ms=45.6,
            input_tokens=812,
            output_tokens=203,
            usage_estimated=False,
            cost_usd=0.000243,
            stream=i % 2 == 0,
            attempts=[
                {"provider": "openai", "model": "gpt-4o-mini", "outcome": "ok", "latency_ms": 120.1}
            ],
            fell_back=False,
            broke_after_commit=False,
            skipped=[],
            price_table_hash="sha256:" + "p" * 64,
            config_hash="sha256:" + "c" * 64,
        )
        for i in range(n)
    ]


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM requests").fetchone()
    return int(row[0]) if row else 0


def run_pg(server_url: str, records: list[RequestRecord], batch_size: int) -> Result:
    url = fresh_database(server_url)
    writer = PgRecordWriter(url, "bench", batch_size, 200, 30, buffer_max_records=len(records) + 1)
    writer.start()
    started = time.perf_counter()
    for r in records:
        writer.submit(r)
    submitted = time.perf_counter()
    assert writer.flush(600), "not written within 600 s"
    done = time.perf_counter()
    writer.close()
    assert count(url) == len(records) and writer.dropped == 0
    total = done - started
    return Result(
        "postgres", batch_size, len(records), submitted - started, total, len(records) / total
    )


def run_sqlite(records: list[RequestRecord], batch_size: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordWriter(Path(tmp) / "requests.db", batch_size, 200, 30)
        writer.start()
        started = time.perf_counter()
        for r in records:
            writer.submit(r)
        submitted = time.perf_counter()
        assert writer.flush(600), "not written within 600 s"
        done = time.perf_counter()
        writer.close()
        assert writer.written == len(records)
    total = done - started
    return Result(
        "sqlite", batch_size, len(records), submitted - started, total, len(records) / total
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch-sizes", default="256,1024", help="comma-separated")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    records = make_records(args.records)
    server: PostgresServer | None = None
    url = os.environ.get("SWITCHYARD_BENCH_POSTGRES_URL")
    if not url:
        server = PostgresServer.start()
        url = server.url
    try:
        results = [run_pg(url, records, size) for size in sizes]
        if not args.no_sqlite:
            results += [run_sqlite(records, size) for size in sizes]
    finally:
        if server is not None:
            server.remove()
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    print(f"{args.records} records, one writer thread each")
    print(f"{'sink':<9} {'batch':>6} {'submit s':>9} {'total s':>8} {'records/s':>10}")
    for r in results:
        print(
            f"{r.sink:<9} {r.batch_size:>6} {r.submit_s:>9.3f} {r.total_s:>8.2f}"
            f" {r.records_per_s:>10,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
