"""Request records in PostgreSQL (runtime/records_pg.py) against a real server: round trip,
migrations (concurrent, newer schema, fields added later), retention, spend, the bounded
buffer while the server is down, and close() flushing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runtime import records_pg
from runtime.postgres import PostgresError, connect
from runtime.records import FIELDS
from runtime.records_pg import PgRecordWriter, ensure_schema, read_records, read_spend
from tests.servers import PostgresServer
from tests.unit.test_records import make_record


def writer(url: str, **kw: Any) -> PgRecordWriter:
    options: dict[str, Any] = {
        "environment": "production",
        "batch_size": 50,
        "flush_interval_ms": 20,
        "retention_days": 30,
    }
    options.update(kw)
    w = PgRecordWriter(url, **options)
    w.start()
    return w


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM requests").fetchone()
    assert row is not None
    return int(row[0])


def test_records_round_trip_every_field(postgres_url: str) -> None:
    w = writer(postgres_url)
    sent = [
        make_record(0, attempts=[], skipped=[{"provider": "x", "reason": "no key"}]),
        make_record(1, key_id=None, org=None, cost_usd=None, stream=True, fell_back=True),
        make_record(2, reasoning_tokens=7, cached_input_tokens=3, abandoned_cost_usd=0.25),
    ]
    for r in sent:
        w.submit(r)
    assert w.flush(10)
    w.close()
    got = read_records(postgres_url, "production")
    assert [r.request_id for r in got] == ["req-0", "req-1", "req-2"]
    assert got == sent
    assert w.written == 3 and w.dropped == 0 and w.failures == 0
    assert read_records(postgres_url, "production", last=1) == sent[-1:]
    assert read_records(postgres_url, "staging") == []


def test_read_records_without_a_table_is_empty(postgres_url: str) -> None:
    assert read_records(postgres_url, "production") == []
    assert read_spend(postgres_url, 0.0, 0.0).key_day == {}


def test_many_records_in_batches(postgres_url: str) -> None:
    w = writer(postgres_url, batch_size=100)
    for i in range(5000):
        w.submit(make_record(i))
    assert w.flush(30)
    assert count(postgres_url) == 5000
    w.close()


def test_since_filters_by_time(postgres_url: str) -> None:
    w = writer(postgres_url)
    now = time.time()
    w.submit(make_record(0, ts=now - 7200))
    w.submit(make_record(1, ts=now - 10))
    w.close()
    got = read_records(postgres_url, "production", since=now - 3600)
    assert [r.request_id for r in got] == ["req-1"]


def test_eight_gateways_migrating_an_empty_database_at_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        conn = connect(postgres_url)
        try:
            barrier.wait()
            ensure_schema(conn)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'requests'"
        ).fetchone()
        ledger = conn.execute(
            "SELECT version FROM switchyard_migrations WHERE component = 'records'"
        ).fetchall()
    assert tables == (1,)
    assert ledger == [(v,) for v in range(1, len(records_pg.MIGRATIONS) + 1)]


def test_a_newer_schema_is_refused_with_a_clear_message(postgres_url: str) -> None:
    w = writer(postgres_url)
    w.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO switchyard_migrations (component, version) VALUES ('records', 99)"
        )
    with pytest.raises(PostgresError, match="records schema is version 99, newer than"):
        writer(postgres_url)


def test_a_field_added_to_the_record_gets_its_column(postgres_url: str) -> None:
    w = writer(postgres_url)
    w.close()
    # An older release's table: it lacked reasoning_tokens (as it will lack `endpoint`).
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE requests DROP COLUMN reasoning_tokens")
    assert read_records(postgres_url, "production") == []
    w = writer(postgres_url)
    w.submit(make_record(0, reasoning_tokens=11))
    w.close()
    assert read_records(postgres_url, "production")[0].reasoning_tokens == 11
    with psycopg.connect(postgres_url) as conn:
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests'"
            )
        }
    assert set(FIELDS) <= cols


def test_column_types_follow_the_annotations() -> None:
    assert records_pg.column_type("str | None") == "text"
    assert records_pg.column_type("str") == "text"
    assert records_pg.column_type("int | None") == "bigint"
    assert records_pg.column_type("float") == "double precision"
    assert records_pg.column_type("bool") == "boolean"
    assert records_pg.column_type("list[dict[str, Any]]") == "jsonb"


def test_retention_deletes_old_records_of_its_environment_only(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records_pg, "RETENTION_BATCH", 7)  # several DELETE rounds
    now = time.time()
    w = writer(postgres_url)
    for i in range(20):
        w.submit(make_record(i, ts=now - 40 * 86400))
    for i in range(20, 25):
        w.submit(make_record(i, ts=now - 86400))
    w.submit(make_record(99, ts=now - 40 * 86400, environment="staging"))
    w.close()
    w = writer(postgres_url, retention_days=30)  # retention runs at start
    w.close()
    assert [r.request_id for r in read_records(postgres_url, "production")] == [
        f"req-{i}" for i in range(20, 25)
    ]
    assert len(read_records(postgres_url, "staging")) == 1


def test_spend_per_key_and_org_by_period(postgres_url: str) -> None:
    now = time.time()
    day, month = now - 3600, now - 10 * 86400
    w = writer(postgres_url)
    w.submit(make_record(0, ts=now - 60, key_id="k1", org="acme", cost_usd=0.25))
    w.submit(make_record(1, ts=now - 5 * 86400, key_id="k1", org="acme", cost_usd=1.0))
    w.submit(make_record(2, ts=now - 60, key_id="k2", org="beta", cost_usd=None))
    w.submit(make_record(3, ts=now - 60, key_id="k1", org="acme", cost_usd=5.0, environment="s"))
    w.close()
    spend = read_spend(postgres_url, day, month, "production")
    assert spend.key_day == {"k1": 0.25}
    assert spend.key_month == {"k1": 1.25}
    assert spend.org_day == {"acme": 0.25}
    assert spend.org_month == {"acme": 1.25}
    assert read_spend(postgres_url, day, month).key_day == {"k1": 5.25}


def test_a_record_postgres_refuses_is_written_without_the_nul(postgres_url: str) -> None:
    w = writer(postgres_url)
    w.submit(make_record(0))
    w.submit(make_record(1, requested_model="bad\x00name", skipped=[{"reason": "a\x00b"}]))
    w.submit(make_record(2))
    w.close()
    got = read_records(postgres_url, "production")
    assert [r.request_id for r in got] == ["req-0", "req-1", "req-2"]
    assert got[1].requested_model == "bad\ufffdname"
    assert got[1].skipped == [{"reason": "a\ufffdb"}]
    assert w.dropped == 0


@pytest.fixture
def private_pg() -> Any:
    server = PostgresServer.start()
    yield server
    server.remove()


def test_a_tiny_buffer_counts_every_drop_while_postgres_is_down(
    private_pg: PostgresServer,
) -> None:
    url = private_pg.url
    ensure_schema(connect(url))
    private_pg.stop()
    w = writer(url, buffer_max_records=10, batch_size=4)  # starts with the database down
    started = time.perf_counter()
    for i in range(100):
        w.submit(make_record(i))
    assert time.perf_counter() - started < 0.1  # submit never waits for the database
    time.sleep(0.5)  # the writer keeps trying meanwhile
    assert w.failures > 0
    assert w.pending == 10
    assert w.dropped == 90
    assert w.problems() and "10 records held in memory" in w.problems()[0]
    private_pg.resume()
    assert w.flush(20)
    w.close()
    got = read_records(url, "production")
    assert [r.request_id for r in got] == [f"req-{i}" for i in range(90, 100)]  # the newest
    assert w.dropped == 90
    assert w.problems() == []


def test_records_held_through_an_outage_are_all_written(private_pg: PostgresServer) -> None:
    url = private_pg.url
    w = writer(url, batch_size=20)
    for i in range(50):
        w.submit(make_record(i))
    assert w.flush(10)
    private_pg.stop()
    for i in range(50, 300):
        w.submit(make_record(i))
        time.sleep(0.002)
    time.sleep(0.5)
    assert w.failures > 0
    private_pg.resume()
    assert w.flush(30)
    w.close()
    assert w.dropped == 0
    got = read_records(url, "production")
    assert sorted(int(r.request_id.split("-")[1]) for r in got) == list(range(300))


def test_close_writes_everything_pending(postgres_url: str) -> None:
    w = writer(postgres_url, batch_size=1000, flush_interval_ms=60_000)
    for i in range(777):
        w.submit(make_record(i))
    w.close(10)
    assert count(postgres_url) == 777
    w.submit(make_record(1000))  # after close: counted, never silently lost
    assert w.dropped == 1


def test_close_while_postgres_is_down_is_bounded_and_counts_the_rest(
    private_pg: PostgresServer,
) -> None:
    w = writer(private_pg.url)
    private_pg.stop()
    for i in range(30):
        w.submit(make_record(i))
    started = time.monotonic()
    w.close(1.0)
    assert time.monotonic() - started < 6
    assert w.dropped == 30


def test_an_unreachable_database_at_start_does_not_raise(tmp_path: Path) -> None:
    from tests.servers import free_port

    w = writer(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    w.submit(make_record(0))
    assert w.pending == 1
    assert "PostgreSQL unavailable" in w.problems()[0]
    assert "postgresql://" not in w.problems()[0]
    w.close(0.2)
    assert w.dropped == 1


def pg_config(tmp_path: Path, environment: str = "production") -> Path:
    from dataclasses import replace

    from runtime.config import LoggingConfig
    from tests.gateway_env import runtime_config

    base = runtime_config("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    config = replace(
        base,
        environment=environment,
        logging=LoggingConfig("postgres", "SY_TEST_RECORDS_URL", 30, 64, 20),
    ).with_hash()
    path = tmp_path / "runtime.json"
    path.write_text(config.to_json())
    return path


def requests_args(config: Path | None, env: str = "production", **kw: Any) -> Any:
    import argparse

    values: dict[str, Any] = {
        "env": env,
        "data_dir": None,
        "config": str(config) if config else None,
        "since": None,
        "last": None,
        "by": None,
        "json": True,
    }
    values.update(kw)
    return argparse.Namespace(**values)


def test_requests_command_reads_postgres_when_the_config_says_so(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from runtime import cli

    w = writer(postgres_url)
    for i in range(3):
        w.submit(make_record(i))
    w.close()
    config = pg_config(tmp_path)
    monkeypatch.setenv("SY_TEST_RECORDS_URL", postgres_url)
    assert cli.cmd_requests(requests_args(config, last=2)) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["request_id"] for r in out] == ["req-1", "req-2"]
    assert cli.cmd_requests(requests_args(config, env="staging")) == 1
    assert "environment 'production', not 'staging'" in capsys.readouterr().err


def test_requests_command_names_the_unset_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime import cli

    monkeypatch.delenv("SY_TEST_RECORDS_URL", raising=False)
    assert cli.cmd_requests(requests_args(pg_config(tmp_path))) == 1
    assert "set the environment variable SY_TEST_RECORDS_URL" in capsys.readouterr().err


def test_serve_names_the_unset_url_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime import cli

    monkeypatch.delenv("SY_TEST_RECORDS_URL", raising=False)
    code = cli.main(["serve", "--config", str(pg_config(tmp_path)), "--data-dir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "set the environment variable SY_TEST_RECORDS_URL" in err
    assert "not supported" not in err
