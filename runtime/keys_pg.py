"""Gateway keys in PostgreSQL: the key store that several replicas and hosts share.

`PgKeyStore` offers what runtime/keys.py `KeyStore` offers (create, get, list, revoke, rows,
data_version), over the tables of component `keys` (migrated with runtime/postgres.py
`migrate`, safe when several gateways start at once). One database may hold several
environments' keys: every row and query names its environment.

Every change bumps the environment's row in `switchyard_keys_version` in the same transaction,
so `data_version()` is one indexed read: the gateway's `Authenticator` polls it a few times a
second and reloads its in-memory snapshot only when it moved. The request path never touches
PostgreSQL. The URL carries a password: it is never logged, printed or put into an error.
"""

from __future__ import annotations

import builtins
import time
from typing import TYPE_CHECKING, Any

from runtime.keys import ENV_RE, KeyInfo, KeyStoreError, draw_key, key_hash, key_prefix
from runtime.postgres import PostgresError, Reconnecting, describe, migrate

if TYPE_CHECKING:
    import psycopg

COMPONENT = "keys"
MIGRATIONS = (
    """
    CREATE TABLE switchyard_keys (
        id TEXT PRIMARY KEY,
        environment TEXT NOT NULL,
        org TEXT NOT NULL,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION
    );
    CREATE INDEX switchyard_keys_by_environment ON switchyard_keys (environment, created_at, id);
    CREATE TABLE switchyard_keys_version (
        environment TEXT PRIMARY KEY,
        version BIGINT NOT NULL
    );
    """,
)
_COLUMNS = "id, environment, org, name, created_at, expires_at, revoked_at, hash"
_BUMP = (
    "INSERT INTO switchyard_keys_version (environment, version) VALUES (%s, 1)"
    " ON CONFLICT (environment) DO UPDATE SET version = switchyard_keys_version.version + 1"
)


def _info(row: tuple[Any, ...]) -> KeyInfo:
    return KeyInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


class PgKeyStore:
    """An environment's keys in PostgreSQL (`state.keys.store: postgres`).

    Raises KeyStoreError (never naming the URL) when PostgreSQL cannot be used; after a lost
    connection the next call connects again.
    """

    def __init__(self, url: str, environment: str) -> None:
        if not ENV_RE.match(environment):
            raise KeyStoreError(f"invalid environment name {environment!r}")
        self.environment = environment
        self._db = Reconnecting(url, "keys")
        conn = self._connection()
        try:
            migrate(conn, COMPONENT, MIGRATIONS)
        except PostgresError as exc:
            self.close()
            raise KeyStoreError(f"the key store (PostgreSQL): {exc}") from None

    def __repr__(self) -> str:  # never the URL
        return f"PgKeyStore(environment={self.environment!r})"

    def _connection(self) -> psycopg.Connection:
        try:
            return self._db.get()
        except PostgresError as exc:
            raise KeyStoreError(f"the key store (PostgreSQL): {exc}") from None

    def _failed(self, exc: BaseException) -> KeyStoreError:
        self._db.drop_if_broken()
        return KeyStoreError(f"the key store (PostgreSQL): {describe(exc)}")

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> PgKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, org: str, name: str, expires_at: float | None = None) -> tuple[KeyInfo, str]:
        """Issue a key; returns its info and the plaintext key, which exists nowhere else."""
        import psycopg

        now = time.time()
        conn = self._connection()
        while True:
            key_id, secret = draw_key()
            try:
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO switchyard_keys"
                        " (id, environment, org, name, hash, created_at, expires_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (
                            key_id,
                            self.environment,
                            org,
                            name,
                            key_hash(key_id, secret),
                            now,
                            expires_at,
                        ),
                    )
                    conn.execute(_BUMP, (self.environment,))
            except psycopg.errors.UniqueViolation:  # key id collision: draw again
                continue
            except psycopg.Error as exc:
                raise self._failed(exc) from None
            info = KeyInfo(key_id, self.environment, org, name, now, expires_at, None)
            return info, f"{key_prefix(self.environment)}{key_id}_{secret}"

    def get(self, key_id: str) -> KeyInfo | None:
        """The key with this id, or None."""
        import psycopg

        try:
            row = (
                self._connection()
                .execute(
                    f"SELECT {_COLUMNS} FROM switchyard_keys WHERE id = %s AND environment = %s",
                    (key_id, self.environment),
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return None if row is None else _info(row)

    def list(self) -> builtins.list[KeyInfo]:
        """Every key of the environment, oldest first."""
        return [info for info, _ in self.rows()]

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key (idempotent: an already revoked key keeps its first revocation time)."""
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction():
                cur = conn.execute(
                    "UPDATE switchyard_keys SET revoked_at = %s"
                    " WHERE id = %s AND environment = %s AND revoked_at IS NULL",
                    (time.time(), key_id, self.environment),
                )
                if cur.rowcount:
                    conn.execute(_BUMP, (self.environment,))
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        info = self.get(key_id)
        if info is None:
            raise KeyStoreError(f"no key with id {key_id!r} in environment {self.environment!r}")
        return info

    def rows(self) -> builtins.list[tuple[KeyInfo, str]]:
        """(info, hash) of every key, oldest first: what the authenticator loads."""
        import psycopg

        try:
            cur = self._connection().execute(
                f"SELECT {_COLUMNS} FROM switchyard_keys WHERE environment = %s"
                " ORDER BY created_at, id",
                (self.environment,),
            )
            return [(_info(row), str(row[7])) for row in cur.fetchall()]
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def data_version(self) -> int:
        """The environment's change counter, bumped in the transaction of every change."""
        import psycopg

        try:
            row = (
                self._connection()
                .execute(
                    "SELECT version FROM switchyard_keys_version WHERE environment = %s",
                    (self.environment,),
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return 0 if row is None else int(row[0])
