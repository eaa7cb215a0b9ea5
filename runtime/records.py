"""Request records: one per request, written off the request path in batches.

`RecordWriter.submit` only appends to a deque (thread-safe, no formatting); one daemon thread
turns records into rows and writes them in transactions of up to `batch_size`. Several
processes (uvicorn workers, replicas on a shared volume) may write the same SQLite file: WAL,
busy_timeout and retrying a failed batch make that work. Nothing is dropped silently: a batch
that cannot be written is retried with backoff (`failures` counts the failed attempts) and
records given up on are counted in `dropped`.
"""

from __future__ import annotations

import json
import logging
import operator
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from runtime import sqlite

log = logging.getLogger("switchyard.records")

RETENTION_EVERY_S = 3600.0
MAX_PENDING = 200_000  # beyond this (the database unwritable for long) the oldest are dropped
_BACKOFF_MAX_S = 2.0
CHAT_ENDPOINT = "/v1/chat/completions"
MODELS_ENDPOINT = "/v1/models"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"


@dataclass(slots=True)
class RequestRecord:
    """What the gateway remembers about one request (never the key, never the content)."""

    request_id: str
    ts: float
    environment: str
    key_id: str | None
    org: str | None
    requested_model: str | None
    route: str | None
    provider: str | None
    upstream_model: str | None
    status: int
    error_code: str | None
    latency_ms: float
    ttfb_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    usage_estimated: bool
    cost_usd: float | None
    stream: bool
    attempts: list[dict[str, Any]]
    fell_back: bool
    broke_after_commit: bool
    skipped: list[dict[str, Any]]
    price_table_hash: str
    config_hash: str
    # Usage details, parts of input_tokens / output_tokens (runtime/adapters/base.py `Usage`);
    # None where the provider reported no usage. Added after the first release: the writer
    # adds the columns to an older database (`migrate`).
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None  # Anthropic 5-minute cache writes
    cache_write_1h_tokens: int | None = None  # Anthropic 1-hour cache writes
    reasoning_tokens: int | None = None
    # The estimated cost of attempts abandoned after the provider started generating
    # (included in cost_usd; each attempt's own is in `attempts`); None when there were none.
    abandoned_cost_usd: float | None = None
    # The API path the request came to ("/v1/chat/completions", "/v1/models"). Rows written
    # before the column existed read back as chat completions (the only path recorded then).
    endpoint: str = CHAT_ENDPOINT

    @classmethod
    def begin(
        cls,
        request_id: str,
        environment: str,
        price_table_hash: str,
        config_hash: str,
        endpoint: str = CHAT_ENDPOINT,
    ) -> RequestRecord:
        """The record of a request that has just arrived: nothing known yet but its id and
        time (status 0 until an answer is decided)."""
        return cls(
            request_id=request_id,
            ts=time.time(),
            environment=environment,
            key_id=None,
            org=None,
            requested_model=None,
            route=None,
            provider=None,
            upstream_model=None,
            status=0,
            error_code=None,
            latency_ms=0.0,
            ttfb_ms=None,
            input_tokens=None,
            output_tokens=None,
            usage_estimated=False,
            cost_usd=None,
            stream=False,
            attempts=[],
            fell_back=False,
            broke_after_commit=False,
            skipped=[],
            price_table_hash=price_table_hash,
            config_hash=config_hash,
            endpoint=endpoint,
        )


@dataclass(slots=True)
class Attempt:
    """One upstream attempt of a request, for its record's trail and the response headers."""

    provider: str
    model: str
    outcome: str  # "ok" or an error class
    latency_ms: float
    status: int | None = None
    code: str | None = None
    notes: tuple[str, ...] = ()  # what the adapter mapped or dropped for this provider
    # Estimated cost of an attempt abandoned after the provider started generating (it bills
    # it): the plan's prompt estimate and the output seen; None when nothing is billed.
    cost_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The attempt as it is stored in the record's `attempts` column."""
        d: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.status is not None:
            d["status"] = self.status
        if self.code is not None and self.code != self.outcome:
            d["code"] = self.code
        if self.notes:
            d["notes"] = list(self.notes)
        if self.cost_usd is not None:
            d["cost_usd"] = self.cost_usd
            d["cost_estimated"] = True
        return d


FIELDS = tuple(f.name for f in fields(RequestRecord))
_JSON_FIELDS = frozenset({"attempts", "skipped"})
_BOOL_FIELDS = frozenset({"usage_estimated", "stream", "fell_back", "broke_after_commit"})
_SQL_TYPES = {
    "ts": "REAL NOT NULL",
    "status": "INTEGER NOT NULL",
    "latency_ms": "REAL NOT NULL",
    "ttfb_ms": "REAL",
    "input_tokens": "INTEGER",
    "output_tokens": "INTEGER",
    "cost_usd": "REAL",
    "request_id": "TEXT NOT NULL",
    "cached_input_tokens": "INTEGER",
    "cache_write_tokens": "INTEGER",
    "cache_write_1h_tokens": "INTEGER",
    "reasoning_tokens": "INTEGER",
    "abandoned_cost_usd": "REAL",
    "endpoint": f"TEXT NOT NULL DEFAULT '{CHAT_ENDPOINT}'",
}
# What a column an older database lacks reads back as (default NULL).
_MISSING = {"endpoint": f"'{CHAT_ENDPOINT}'"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (\n    "
    + ",\n    ".join(
        f"{name} {_SQL_TYPES.get(name, 'INTEGER NOT NULL' if name in _BOOL_FIELDS else 'TEXT')}"
        for name in FIELDS
    )
    + "\n);\n"
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);\n"
    "CREATE INDEX IF NOT EXISTS requests_key_id ON requests (key_id, ts);\n"
    "CREATE INDEX IF NOT EXISTS requests_org ON requests (org, ts);\n"
)


def _column_type(name: str) -> str:
    return _SQL_TYPES.get(name, "INTEGER NOT NULL" if name in _BOOL_FIELDS else "TEXT")


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a database written by an older release lacks (nullable: its rows read
    back with None there). Safe to run from several processes at once."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    for name in FIELDS:
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE requests ADD COLUMN {name} {_column_type(name)}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process added it first
                    raise


def _ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    migrate(conn)


_INSERT = f"INSERT INTO requests ({', '.join(FIELDS)}) VALUES ({', '.join('?' for _ in FIELDS)})"


_ALL = operator.attrgetter(*FIELDS)
_JSON_AT = tuple(i for i, name in enumerate(FIELDS) if name in _JSON_FIELDS)
_BOOL_AT = tuple(i for i, name in enumerate(FIELDS) if name in _BOOL_FIELDS)


def to_row(record: RequestRecord) -> tuple[Any, ...]:
    """The record as the values of one `requests` row (runs in the writer thread, holding
    the GIL: kept to one C-level attribute fetch and a few fix-ups)."""
    row = list(_ALL(record))
    for i in _JSON_AT:
        row[i] = orjson.dumps(row[i], option=orjson.OPT_SORT_KEYS).decode()
    for i in _BOOL_AT:
        row[i] = 1 if row[i] else 0
    return tuple(row)


def from_row(row: sqlite3.Row | tuple[Any, ...]) -> RequestRecord:
    """The record stored in a `requests` row (selected as `SELECT <FIELDS>`)."""
    values: dict[str, Any] = {}
    for name, value in zip(FIELDS, row, strict=True):
        if name in _JSON_FIELDS:
            value = json.loads(value) if value else []
        elif name in _BOOL_FIELDS:
            value = bool(value)
        values[name] = value
    return RequestRecord(**values)


def connect(path: Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection to the request log (WAL, synchronous=NORMAL, busy timeout)."""
    conn = sqlite.connect(path, busy_timeout_ms)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class _Barrier:
    """Queued by `flush`: set once every record queued before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class RecordWriter:
    """Batches records into the SQLite request log from one daemon thread."""

    def __init__(
        self,
        path: Path,
        batch_size: int,
        flush_interval_ms: int,
        retention_days: int,
        *,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = path
        self.batch_size = max(1, batch_size)
        self.flush_interval_ms = flush_interval_ms
        self.retention_days = retention_days
        self.busy_timeout_ms = busy_timeout_ms
        self.failures = 0  # failed write attempts (each retried)
        self.dropped = 0  # records given up on, never silently
        self.written = 0
        self._pending: deque[RequestRecord | _Barrier] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._close_deadline = 0.0
        self._last_retention = 0.0

    def start(self) -> None:
        """Create the database and schema, apply retention, start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._retry_until(_ensure_schema, deadline=time.time() + 30)
        try:
            self._apply_retention(conn)
        finally:
            conn.close()
        self._thread = threading.Thread(target=self._run, name="switchyard-records", daemon=True)
        self._thread.start()

    def submit(self, record: RequestRecord) -> None:
        """Queue a record; never blocks, safe from any thread and from the event loop."""
        if self._closing:
            self.dropped += 1
            return
        self._pending.append(record)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is written; False on timeout."""
        barrier = _Barrier()
        self._pending.append(barrier)
        self._wake.set()
        return barrier.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything pending, then stop the thread (graceful shutdown loses nothing)."""
        if self._thread is None:
            return
        self._close_deadline = time.time() + timeout
        self._closing = True
        self._wake.set()
        self._thread.join(timeout + 1.0)
        self._thread = None

    @property
    def pending(self) -> int:
        """Records waiting to be written (approximate: a pending `flush` counts as one)."""
        return len(self._pending)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        interval = self.flush_interval_ms / 1000
        try:
            while True:
                self._wake.wait(interval)
                self._wake.clear()
                closing = self._closing  # read before draining: a late submit is counted dropped
                if conn is None:
                    conn = self._connect_with_retry()
                    if conn is None:
                        break
                if not self._drain(conn):
                    break
                if closing:
                    break
                if time.time() - self._last_retention >= RETENTION_EVERY_S:
                    self._retention_safely(conn)
        finally:
            self._give_up_pending()
            if conn is not None:
                conn.close()

    def _drain(self, conn: sqlite3.Connection) -> bool:
        """Write every pending record in batches; False when closing and out of time."""
        while self._pending:
            self._trim()
            batch: list[RequestRecord] = []
            barriers: list[_Barrier] = []
            while self._pending and len(batch) < self.batch_size:
                item = self._pending.popleft()
                if isinstance(item, _Barrier):
                    barriers.append(item)
                    break  # records queued after the barrier are not its business
                batch.append(item)
            if batch and not self._write(conn, batch):
                self.dropped += len(batch)
                log.error("gave up writing %d request records to %s", len(batch), self.path)
                for barrier in barriers:
                    barrier.done.set()
                return False
            for barrier in barriers:
                barrier.done.set()
        return True

    def _write(self, conn: sqlite3.Connection, batch: list[RequestRecord]) -> bool:
        """Write one batch in one transaction, retrying with backoff; False only when closing
        and the close deadline passed."""
        rows = [to_row(record) for record in batch]
        delay = 0.05
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_INSERT, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                self.written += len(batch)
                return True
            except sqlite3.Error as exc:
                self.failures += 1
                log.warning("writing %d request records failed (%s); retrying", len(batch), exc)
            if self._closing and time.time() + delay > self._close_deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
            self._trim()

    def _trim(self) -> None:
        excess = len(self._pending) - MAX_PENDING
        for _ in range(max(0, excess)):
            item = self._pending.popleft()
            if isinstance(item, _Barrier):
                item.done.set()
            else:
                self.dropped += 1
        if excess > 0:
            log.error("request log backlog over %d records: dropped the oldest", MAX_PENDING)

    def _give_up_pending(self) -> None:
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, _Barrier):
                item.done.set()
            else:
                self.dropped += 1

    def _connect_with_retry(self) -> sqlite3.Connection | None:
        delay = 0.05
        while True:
            try:
                return connect(self.path, self.busy_timeout_ms)
            except sqlite3.Error as exc:
                self.failures += 1
                log.warning("opening the request log failed (%s); retrying", exc)
            if self._closing and time.time() + delay > self._close_deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    def _retry_until(
        self, action: Callable[[sqlite3.Connection], object], deadline: float
    ) -> sqlite3.Connection:
        delay = 0.05
        while True:
            try:
                conn = connect(self.path, self.busy_timeout_ms)
                try:
                    action(conn)
                except BaseException:
                    conn.close()
                    raise
                return conn
            except sqlite3.OperationalError:
                if time.time() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    def _apply_retention(self, conn: sqlite3.Connection) -> None:
        self._last_retention = time.time()
        cutoff = self._last_retention - self.retention_days * 86400
        conn.execute("DELETE FROM requests WHERE ts < ?", (cutoff,))

    def _retention_safely(self, conn: sqlite3.Connection) -> None:
        try:
            self._apply_retention(conn)
        except sqlite3.Error as exc:  # another round in an hour; records matter more
            log.warning("request log retention failed: %s", exc)


@dataclass(frozen=True, slots=True)
class Spend:
    """Known cost (USD) since the start of the day and of the month, per key id and per org."""

    key_day: dict[str, float]
    key_month: dict[str, float]
    org_day: dict[str, float]
    org_month: dict[str, float]


def read_spend(path: Path, day_start: float, month_start: float, exclude_prefix: str = "") -> Spend:
    """Sum cost_usd per key and per org since `day_start` and `month_start` (for budgets),
    leaving out records whose request id starts with `exclude_prefix` (a gateway process's
    own, which its limiter counts in memory).

    A missing database is no spend yet.
    """
    spend = Spend({}, {}, {}, {})
    if not path.exists():
        return spend
    since = min(day_start, month_start)
    mine = " AND substr(request_id, 1, ?) <> ?" if exclude_prefix else ""
    params = (len(exclude_prefix), exclude_prefix) if exclude_prefix else ()
    conn = connect(path)
    try:
        for column, day, month in (
            ("key_id", spend.key_day, spend.key_month),
            ("org", spend.org_day, spend.org_month),
        ):
            cur = conn.execute(
                f"SELECT {column},"
                " SUM(CASE WHEN ts >= ? THEN cost_usd END),"
                " SUM(CASE WHEN ts >= ? THEN cost_usd END)"
                f" FROM requests WHERE ts >= ? AND {column} IS NOT NULL"
                f" AND cost_usd IS NOT NULL{mine} GROUP BY {column}",
                (day_start, month_start, since, *params),
            )
            for name, day_sum, month_sum in cur:
                if day_sum is not None:
                    day[name] = day_sum
                if month_sum is not None:
                    month[name] = month_sum
    finally:
        conn.close()
    return spend


def read_records(
    path: Path, since: float | None = None, last: int | None = None
) -> list[RequestRecord]:
    """Records from `since` (unix seconds), the `last` N of them, oldest first.

    A database of an older release (not migrated yet: this reads it read-only) gives None for
    the columns it lacks."""
    params: list[Any] = []
    query = ""
    if since is not None:
        query += " WHERE ts >= ?"
        params.append(since)
    query += " ORDER BY ts DESC, rowid DESC"
    if last is not None:
        query += " LIMIT ?"
        params.append(last)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        columns = ", ".join(
            name if name in have else f"{_MISSING.get(name, 'NULL')} AS {name}" for name in FIELDS
        )
        query = f"SELECT {columns} FROM requests" + query
        rows = conn.execute(query, params).fetchall()
    finally:
        conn.close()
    return [from_row(row) for row in reversed(rows)]
