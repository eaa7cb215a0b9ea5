"""Request records in PostgreSQL (`logging.sink: postgres`): the writer, its schema, readers.

`PgRecordWriter` has `RecordWriter`'s interface (runtime/records.py): `submit` appends to a
bounded deque and never blocks or does I/O; one daemon thread writes batches of up to
`logging.batch_size` records with COPY, at least every `logging.flush_interval_ms`. While
PostgreSQL cannot be reached, records stay in memory, at most `logging.buffer_max_records`
of them: beyond that the oldest are dropped and counted (`dropped`, exported as
`switchyard_records_dropped_total`); the thread reconnects with backoff and writes the rest
when the server is back. A record PostgreSQL refuses (a NUL character in a string) is
written with the character replaced, never blocking the ones behind it.

The schema is the `records` component of runtime/postgres.py `migrate` (versioned, safe when
several gateways start at once), followed by a generic step that adds a nullable column for
every `RequestRecord` field the table lacks, so a field added to the record later reaches
PostgreSQL without a hand-written migration. `ts` is unix seconds (double precision), as in
the SQLite log; `attempts` and `skipped` are jsonb.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import threading
import time
from collections import deque
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import orjson

from runtime.config import DEFAULT_RECORD_BUFFER
from runtime.postgres import PostgresError, connect, describe, migrate
from runtime.records import FIELDS, RequestRecord, Spend

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("switchyard.records")

RETENTION_EVERY_S = 3600.0
RETENTION_BATCH = 5000  # rows per DELETE, so retention never holds long locks
_BACKOFF_MAX_S = 2.0
_CONNECT_TIMEOUT_S = 3.0
COMPONENT = "records"

# Versioned migrations of the `records` component. Never edit one that shipped: append.
# Columns of fields added to RequestRecord later are added by `_add_missing_columns`.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        request_id text NOT NULL,
        ts double precision NOT NULL,
        environment text NOT NULL,
        key_id text,
        org text,
        requested_model text,
        route text,
        provider text,
        upstream_model text,
        status integer NOT NULL,
        error_code text,
        latency_ms double precision NOT NULL,
        ttfb_ms double precision,
        input_tokens bigint,
        output_tokens bigint,
        usage_estimated boolean NOT NULL,
        cost_usd double precision,
        stream boolean NOT NULL,
        attempts jsonb NOT NULL,
        fell_back boolean NOT NULL,
        broke_after_commit boolean NOT NULL,
        skipped jsonb NOT NULL,
        price_table_hash text NOT NULL,
        config_hash text NOT NULL,
        cached_input_tokens bigint,
        cache_write_tokens bigint,
        cache_write_1h_tokens bigint,
        reasoning_tokens bigint,
        abandoned_cost_usd double precision
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_environment_ts ON requests (environment, ts);
    CREATE INDEX requests_key_id ON requests (key_id, ts);
    CREATE INDEX requests_org ON requests (org, ts);
    """,
)


def column_type(annotation: object) -> str:
    """The PostgreSQL type of a RequestRecord field from its annotation (always nullable: a
    column added to an existing table has no value in the rows already there)."""
    text = str(annotation).replace(" ", "")
    base = text.removesuffix("|None").removeprefix("None|")
    if base.startswith(("list[", "dict[")) or base in ("list", "dict"):
        return "jsonb"
    return {"bool": "boolean", "int": "bigint", "float": "double precision"}.get(base, "text")


_TYPES = {f.name: column_type(f.type) for f in fields(RequestRecord)}
_JSON_AT = tuple(i for i, name in enumerate(FIELDS) if _TYPES[name] == "jsonb")
_ALL = operator.attrgetter(*FIELDS)
_COPY = f"COPY requests ({', '.join(FIELDS)}) FROM STDIN"


def _add_missing_columns(conn: psycopg.Connection) -> list[str]:
    """Add a column for every RequestRecord field the table lacks; the names added."""
    have = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'requests'"
        )
    }
    added = [name for name in FIELDS if name not in have]
    for name in added:
        # IF NOT EXISTS: another gateway starting at the same moment may add it first.
        conn.execute(
            f"ALTER TABLE requests ADD COLUMN IF NOT EXISTS {name} {_TYPES[name]}".encode()
        )
    return added


def ensure_schema(conn: psycopg.Connection) -> None:
    """Apply the `records` migrations and add the columns of newer record fields; raises
    PostgresError (a schema newer than this gateway, no permission, a foreign `requests`)."""
    import psycopg

    migrate(conn, COMPONENT, MIGRATIONS)
    try:
        _add_missing_columns(conn)
    except psycopg.Error as exc:
        raise PostgresError(f"cannot add record columns: {describe(exc)}") from None


def to_row(record: RequestRecord) -> list[Any]:
    """The record as the values of one COPY row, in FIELDS order (JSON fields as text)."""
    row = list(_ALL(record))
    for i in _JSON_AT:
        row[i] = orjson.dumps(row[i], option=orjson.OPT_SORT_KEYS).decode()
    return row


def _without_nul(row: list[Any]) -> list[Any]:
    """`row` with NUL characters (which PostgreSQL text and jsonb refuse) replaced."""
    return [
        v.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd") if isinstance(v, str) else v
        for v in row
    ]


class _Barrier:
    """Queued by `flush`: set once every record queued before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class PgRecordWriter:
    """Batches records into PostgreSQL's `requests` table from one daemon thread."""

    def __init__(
        self,
        url: str,
        environment: str,
        batch_size: int,
        flush_interval_ms: int,
        retention_days: int,
        *,
        buffer_max_records: int = DEFAULT_RECORD_BUFFER,
        connect_timeout_s: float = _CONNECT_TIMEOUT_S,
    ) -> None:
        self._url = url  # carries the password: never logged, never in a message
        self.environment = environment
        self.batch_size = max(1, batch_size)
        self.flush_interval_ms = flush_interval_ms
        self.retention_days = retention_days
        self.buffer_max_records = max(1, buffer_max_records)
        self.connect_timeout_s = connect_timeout_s
        self.failures = 0  # failed connection or write attempts (each retried)
        self.written = 0
        self._dropped_full = 0  # counted by submit (the event loop's thread)
        self._dropped_writer = 0  # counted by the writer thread
        self._pending: deque[RequestRecord | _Barrier] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()  # interrupts the backoff sleep when closing
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._closing = False
        self._close_deadline = 0.0
        self._last_retention = 0.0
        self._down_since: float | None = None
        self._last_error = ""

    @property
    def dropped(self) -> int:
        """Records given up on: the buffer was full, or closing ran out of time."""
        return self._dropped_full + self._dropped_writer

    @property
    def pending(self) -> int:
        """Records waiting to be written (approximate: a pending `flush` counts as one)."""
        return len(self._pending)

    def start(self) -> None:
        """Connect, migrate, apply retention, start the writer thread.

        An unreachable database does not stop the gateway (records wait in memory and the
        thread keeps trying); a reachable one whose schema cannot be used (newer than this
        gateway, no permission) raises PostgresError."""
        try:
            conn = connect(self._url, timeout_s=self.connect_timeout_s, application=_APP)
        except PostgresError as exc:
            self._note_down(str(exc))
            log.warning("request records: %s; holding records in memory until it is", exc)
        else:
            try:
                ensure_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._retention_safely()
        self._thread = threading.Thread(target=self._run, name="switchyard-records-pg", daemon=True)
        self._thread.start()

    def submit(self, record: RequestRecord) -> None:
        """Queue a record; never blocks, never does I/O. Over the buffer bound the oldest
        record held is dropped and counted."""
        if self._closing:
            self._dropped_full += 1
            return
        pending = self._pending
        if len(pending) >= self.buffer_max_records:
            try:
                oldest = pending.popleft()
            except IndexError:  # the writer took them meanwhile
                pass
            else:
                if isinstance(oldest, _Barrier):
                    oldest.done.set()
                else:
                    self._dropped_full += 1
        pending.append(record)
        if len(pending) >= self.batch_size:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is written; False on timeout."""
        barrier = _Barrier()
        self._pending.append(barrier)
        self._wake.set()
        return barrier.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything pending (trying for at most `timeout` seconds while PostgreSQL is
        unreachable), then stop the thread; what could not be written is counted dropped."""
        if self._thread is None:
            return
        self._close_deadline = time.time() + timeout
        self._closing = True
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout + self.connect_timeout_s + 1.0)
        self._thread = None

    def problems(self) -> list[str]:
        """Readiness warnings: PostgreSQL unreachable and how many records wait."""
        if self._down_since is None:
            return []
        return [
            f"request records: PostgreSQL unavailable for {time.time() - self._down_since:.0f} s"
            f" ({self._last_error}); {self.pending} records held in memory"
            f" (at most {self.buffer_max_records}), {self.dropped} dropped"
        ]

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        interval = self.flush_interval_ms / 1000
        delay = 0.05
        try:
            while True:
                self._wake.wait(interval)
                self._wake.clear()
                closing = self._closing  # read before draining: a late submit is dropped
                if (self._conn is None and not self._open()) or not self._drain():
                    if self._closing and time.time() >= self._close_deadline:
                        break
                    # Back off (close() cuts the sleep short, not new records).
                    self._stopping.wait(delay)
                    delay = min(delay * 2, _BACKOFF_MAX_S)
                    continue
                delay = 0.05
                if closing:
                    break
                if time.time() - self._last_retention >= RETENTION_EVERY_S:
                    self._retention_safely()
        finally:
            self._give_up_pending()
            self._disconnect()

    def _open(self) -> bool:
        try:
            conn = connect(self._url, timeout_s=self.connect_timeout_s, application=_APP)
        except PostgresError as exc:
            self.failures += 1
            self._note_down(str(exc))
            return False
        try:
            ensure_schema(conn)
        except PostgresError as exc:
            conn.close()
            self.failures += 1
            self._note_down(str(exc))
            log.error("request records: %s", exc)
            return False
        if self._down_since is not None:
            log.warning(
                "request records: PostgreSQL is back after %.0f s; writing %d held records",
                time.time() - self._down_since,
                self.pending,
            )
        self._conn = conn
        self._down_since = None
        return True

    def _note_down(self, message: str) -> None:
        if self._down_since is None:
            self._down_since = time.time()
            log.warning("request records: %s; holding records in memory", message)
        self._last_error = message

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._conn.close()
            self._conn = None

    def _drain(self) -> bool:
        """Write every pending record in batches; False when the connection failed (the
        batch is back at the front of the queue)."""
        import psycopg

        while self._pending:
            batch: list[RequestRecord] = []
            barriers: list[_Barrier] = []
            while self._pending and len(batch) < self.batch_size:
                try:
                    item = self._pending.popleft()
                except IndexError:  # submit dropped the oldest meanwhile
                    break
                if isinstance(item, _Barrier):
                    barriers.append(item)
                    break  # records queued after the barrier are not its business
                batch.append(item)
            if batch:
                try:
                    self._copy([to_row(r) for r in batch])
                except (psycopg.DataError, psycopg.IntegrityError):
                    self.failures += 1
                    if not self._one_by_one(batch):
                        self._requeue([], barriers)
                        return False
                except psycopg.Error as exc:
                    self._failed(exc, len(batch))
                    self._requeue(batch, barriers)
                    return False
            for barrier in barriers:
                barrier.done.set()
        return True

    def _copy(self, rows: list[list[Any]]) -> None:
        assert self._conn is not None
        with self._conn.cursor() as cur, cur.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        self.written += len(rows)

    def _one_by_one(self, batch: list[RequestRecord]) -> bool:
        """Write a batch PostgreSQL refused row by row, each refused row once more without
        NUL characters; a row refused even then is dropped and logged. False when the
        connection failed (the rest is requeued)."""
        import psycopg

        for i, record in enumerate(batch):
            row = to_row(record)
            try:
                try:
                    self._copy([row])
                except (psycopg.DataError, psycopg.IntegrityError):
                    self._copy([_without_nul(row)])
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                self._dropped_writer += 1
                log.error("request record %s refused by PostgreSQL: %s", record.request_id, exc)
            except psycopg.Error as exc:
                self._failed(exc, len(batch) - i)
                self._requeue(batch[i:], [])
                return False
        return True

    def _failed(self, exc: BaseException, n: int) -> None:
        self.failures += 1
        self._note_down(f"writing {n} records failed: {describe(exc)}")
        self._disconnect()

    def _requeue(self, batch: list[RequestRecord], barriers: list[_Barrier]) -> None:
        """Put a batch that could not be written back at the front, then hold the bound."""
        self._pending.extendleft(reversed([*batch, *barriers]))
        excess = len(self._pending) - self.buffer_max_records
        for _ in range(max(0, excess)):
            try:
                item = self._pending.popleft()
            except IndexError:
                break
            if isinstance(item, _Barrier):
                item.done.set()
            else:
                self._dropped_writer += 1

    def _give_up_pending(self) -> None:
        n = 0
        while self._pending:
            try:
                item = self._pending.popleft()
            except IndexError:
                break
            if isinstance(item, _Barrier):
                item.done.set()
            else:
                n += 1
        if n:
            self._dropped_writer += n
            log.error("request records: gave up on %d records at shutdown", n)

    def _retention_safely(self) -> None:
        self._last_retention = time.time()
        if self._conn is None:
            return
        import psycopg

        try:
            delete_older(self._conn, self.environment, self.retention_days)
        except psycopg.Error as exc:  # another round in an hour; records matter more
            log.warning("request records retention failed: %s", describe(exc))


_APP = "switchyard-records"


def delete_older(conn: psycopg.Connection, environment: str, retention_days: int) -> int:
    """Delete `environment`'s records older than `retention_days`, in batches of
    RETENTION_BATCH rows (short transactions, no long lock); how many were deleted."""
    cutoff = time.time() - retention_days * 86400
    deleted = 0
    while True:
        cur = conn.execute(
            "DELETE FROM requests WHERE id IN (SELECT id FROM requests"
            " WHERE environment = %s AND ts < %s LIMIT %s)",
            (environment, cutoff, RETENTION_BATCH),
        )
        deleted += cur.rowcount
        if cur.rowcount < RETENTION_BATCH:
            return deleted


def _table_columns(conn: psycopg.Connection) -> set[str]:
    return {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'requests'"
        )
    }


def read_spend(
    url: str,
    day_start: float,
    month_start: float,
    environment: str | None = None,
    exclude_prefix: str = "",
) -> Spend:
    """Sum cost_usd per key and per org since `day_start` and `month_start` (for budgets),
    of `environment` when given, without the records whose request id starts with
    `exclude_prefix` (this process's own, which its limiter counts in memory). No table yet
    is no spend yet; raises PostgresError."""
    import psycopg

    spend = Spend({}, {}, {}, {})
    since = min(day_start, month_start)
    conn = connect(url, timeout_s=_CONNECT_TIMEOUT_S, application=_APP)
    try:
        if not _table_columns(conn):
            return spend
        env_clause = " AND environment = %s" if environment is not None else ""
        if exclude_prefix:
            env_clause += " AND left(request_id, %s) <> %s"
        for column, day, month in (
            ("key_id", spend.key_day, spend.key_month),
            ("org", spend.org_day, spend.org_month),
        ):
            params: list[Any] = [day_start, month_start, since]
            if environment is not None:
                params.append(environment)
            if exclude_prefix:
                params += [len(exclude_prefix), exclude_prefix]
            cur = conn.execute(
                f"SELECT {column},"
                " SUM(CASE WHEN ts >= %s THEN cost_usd END),"
                " SUM(CASE WHEN ts >= %s THEN cost_usd END)"
                f" FROM requests WHERE ts >= %s{env_clause} AND {column} IS NOT NULL"
                f" AND cost_usd IS NOT NULL GROUP BY {column}".encode(),
                params,
            )
            for name, day_sum, month_sum in cur:
                if day_sum is not None:
                    day[name] = float(day_sum)
                if month_sum is not None:
                    month[name] = float(month_sum)
    except psycopg.Error as exc:
        raise PostgresError(f"cannot read spend from PostgreSQL: {describe(exc)}") from None
    finally:
        conn.close()
    return spend


def read_records(
    url: str, environment: str, since: float | None = None, last: int | None = None
) -> list[RequestRecord]:
    """`environment`'s records from `since` (unix seconds), the `last` N of them, oldest
    first. Columns a table of an older release lacks read as None; no table yet gives [].
    Raises PostgresError."""
    import psycopg

    conn = connect(url, timeout_s=_CONNECT_TIMEOUT_S, application=_APP)
    try:
        have = _table_columns(conn)
        if not have:
            return []
        columns = ", ".join(name if name in have else f"NULL AS {name}" for name in FIELDS)
        query = f"SELECT {columns} FROM requests WHERE environment = %s"
        params: list[Any] = [environment]
        if since is not None:
            query += " AND ts >= %s"
            params.append(since)
        query += " ORDER BY ts DESC, id DESC"
        if last is not None:
            query += " LIMIT %s"
            params.append(last)
        rows = conn.execute(query.encode(), params).fetchall()
    except psycopg.Error as exc:
        raise PostgresError(f"cannot read request records: {describe(exc)}") from None
    finally:
        conn.close()
    out = []
    for row in reversed(rows):
        values = dict(zip(FIELDS, row, strict=True))
        for name in FIELDS:
            if _TYPES[name] == "jsonb" and values[name] is None:
                values[name] = []
            elif _TYPES[name] == "boolean" and values[name] is None:
                values[name] = False
        out.append(RequestRecord(**values))
    return out
