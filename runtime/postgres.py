"""Opening PostgreSQL (request records, keys, BYOK) one way, and versioned schema migrations.

Each component (`records`, `keys`, `byok`) owns an ordered list of migrations; migration N of a
component is applied once, in its own transaction, and recorded in `switchyard_migrations`.
Several gateways may start at the same moment against an empty database: `migrate` takes a
transaction-scoped advisory lock first, so one applies what is missing and the others then see
it done. A database newer than this gateway (a migration it does not know) is refused with a
message that says so, rather than being written in an old shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

# pg_advisory_xact_lock key: any 64-bit number no other application on the database uses.
_MIGRATION_LOCK = 0x5377_5961_7264_0001  # "SwYard" 1

_LEDGER = """
CREATE TABLE IF NOT EXISTS switchyard_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)
"""


_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


class PostgresError(Exception):
    """PostgreSQL could not be used (unreachable, refused, a schema newer than this code)."""


def connect(
    url: str, *, timeout_s: float = 5.0, application: str = "switchyard"
) -> psycopg.Connection:
    """An autocommit connection to `url`, or PostgresError naming the problem (never the URL:
    it carries the password). Its socket notices a silent peer (TCP keepalives and a 10 s
    user timeout): a network partition must not hold a writer or a refresh thread for TCP's
    quarter of an hour."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        conninfo = make_conninfo(url, **_KEEPALIVE)
    except psycopg.Error:  # its message quotes the URL: not repeated
        raise PostgresError("the PostgreSQL URL is not a valid connection string") from None
    try:
        return psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=max(1, int(timeout_s)),
            application_name=application,
        )
    except psycopg.Error as exc:
        raise PostgresError(f"cannot connect to PostgreSQL: {describe(exc)}") from None


def describe(exc: BaseException) -> str:
    """A one-line reason for a psycopg error, without the connection URL or password."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libpq's messages name host and port, never the password; keep them short.
    return text[:300]


def migrate(conn: psycopg.Connection, component: str, migrations: Sequence[str]) -> int:
    """Apply the migrations of `component` that the database lacks; returns how many ran.

    `migrations[i]` is version i + 1 (SQL, possibly several statements). Safe to run from many
    processes at once."""
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(_LEDGER)
            row = conn.execute(
                "SELECT coalesce(max(version), 0) FROM switchyard_migrations WHERE component = %s",
                (component,),
            ).fetchone()
            have = int(row[0]) if row else 0
            if have > len(migrations):
                raise PostgresError(
                    f"the database's {component} schema is version {have}, newer than this "
                    f"gateway knows ({len(migrations)}); run the same Switchyard release as the "
                    "gateways that upgraded it"
                )
            for version in range(have + 1, len(migrations) + 1):
                conn.execute(migrations[version - 1].encode())
                conn.execute(
                    "INSERT INTO switchyard_migrations (component, version) VALUES (%s, %s)",
                    (component, version),
                )
            return len(migrations) - have
    except psycopg.Error as exc:
        raise PostgresError(f"cannot migrate the {component} schema: {describe(exc)}") from None


# Connections of the key and BYOK stores (long-lived, used by refresh threads and commands).
STATEMENT_TIMEOUT_MS = 5000


def open_connection(url: str, what: str) -> psycopg.Connection:
    """An autocommit connection whose statements give up after 5 s and whose socket notices a
    silent peer (TCP keepalives, a 10 s user timeout): a hung server or a network partition
    must not hold a refresh thread or a command forever. PostgresError naming `what`."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        conninfo = make_conninfo(url, **_KEEPALIVE)
    except psycopg.Error:  # its message quotes the URL: not repeated
        raise PostgresError(
            f"the {what} store's PostgreSQL URL is not a valid connection string"
        ) from None
    conn = connect(conninfo, application=f"switchyard-{what}")
    try:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    except psycopg.Error as exc:
        conn.close()
        raise PostgresError(f"cannot use PostgreSQL: {describe(exc)}") from None
    return conn


class Reconnecting:
    """One store's connection, opened on first use and again after it broke (the server
    restarted, the network dropped it): a store built on it keeps working when PostgreSQL
    comes back. Not thread-safe: one user at a time (a store's own lock)."""

    def __init__(self, url: str, what: str) -> None:
        self._url = url
        self._what = what
        self._conn: psycopg.Connection | None = None

    def __repr__(self) -> str:  # never the URL
        return f"Reconnecting({self._what!r})"

    def get(self) -> psycopg.Connection:
        """The open connection, reconnecting first if needed; PostgresError if it cannot."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = open_connection(self._url, self._what)
        return self._conn

    def drop_if_broken(self) -> None:
        """After a failed statement: forget a connection that is no longer usable."""
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self.close()

    def close(self) -> None:
        """Close the connection (a later `get` opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
