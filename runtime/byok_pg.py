"""BYOK credentials in PostgreSQL: the BYOK store that several replicas and hosts share.

`PgByokStore` offers what runtime/byok_store.py `ByokStore` offers (set, delete, list,
decrypt_all, decrypt_with, rotate, key, data_version), over the tables of component `byok`
(migrated with runtime/postgres.py `migrate`). Sealing is byok_store's own (`seal`, `unseal`,
`reseal`: HKDF-SHA256 data keys from the org's secret and the environment's random salt,
AES-256-GCM bound to environment, org, provider and field), so a credential is encrypted at
rest exactly as in SQLite. Each environment has one row in `switchyard_byok_meta`: its salt and
a change counter bumped in the transaction of every change, which the gateway's cache polls.

Writes of one environment are serialized on that row (`SELECT ... FOR UPDATE`), so the
one-key-per-org check of `set` and a `rotate` cannot interleave. Values, secrets and the URL
are never logged, printed or put into an error.
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runtime.byok_store import (
    ByokError,
    ByokRow,
    DataKey,
    check_names,
    check_one_key,
    derive_key,
    open_rows,
    reseal,
    rotation_keys,
    seal,
)
from runtime.keys import ENV_RE
from runtime.postgres import PostgresError, Reconnecting, describe, migrate

if TYPE_CHECKING:
    import psycopg

COMPONENT = "byok"
MIGRATIONS = (
    """
    CREATE TABLE switchyard_byok_meta (
        environment TEXT PRIMARY KEY,
        salt TEXT NOT NULL,
        version BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE switchyard_byok (
        environment TEXT NOT NULL,
        org TEXT NOT NULL,
        provider TEXT NOT NULL,
        field TEXT NOT NULL,
        nonce BYTEA NOT NULL,
        ciphertext BYTEA NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (environment, org, provider, field)
    );
    """,
)
_BUMP = "UPDATE switchyard_byok_meta SET version = version + 1 WHERE environment = %s"
_LOCK = "SELECT version FROM switchyard_byok_meta WHERE environment = %s FOR UPDATE"


class PgByokStore:
    """An environment's BYOK credentials in PostgreSQL (`state.keys.store: postgres`).

    Raises ByokError (never naming the URL or a value) when PostgreSQL cannot be used; after a
    lost connection the next call connects again.
    """

    def __init__(self, url: str, environment: str) -> None:
        import psycopg

        if not ENV_RE.match(environment):
            raise ByokError(f"invalid environment name {environment!r}")
        self.environment = environment
        self._db = Reconnecting(url, "byok")
        conn = self._connection()
        try:
            migrate(conn, COMPONENT, MIGRATIONS)
            conn.execute(
                "INSERT INTO switchyard_byok_meta (environment, salt) VALUES (%s, %s)"
                " ON CONFLICT (environment) DO NOTHING",
                (environment, secrets.token_hex(16)),
            )
            row = conn.execute(
                "SELECT salt FROM switchyard_byok_meta WHERE environment = %s", (environment,)
            ).fetchone()
        except PostgresError as exc:
            self.close()
            raise ByokError(f"the BYOK store (PostgreSQL): {exc}") from None
        except psycopg.Error as exc:
            self.close()
            raise ByokError(f"the BYOK store (PostgreSQL): {describe(exc)}") from None
        assert row is not None
        self._salt = bytes.fromhex(str(row[0]))

    def __repr__(self) -> str:  # never the URL
        return f"PgByokStore(environment={self.environment!r})"

    def _connection(self) -> psycopg.Connection:
        try:
            return self._db.get()
        except PostgresError as exc:
            raise ByokError(f"the BYOK store (PostgreSQL): {exc}") from None

    def _failed(self, exc: BaseException) -> ByokError:
        self._db.drop_if_broken()
        return ByokError(f"the BYOK store (PostgreSQL): {describe(exc)}")

    def _query(self, sql: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        import psycopg

        try:
            return self._connection().execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> PgByokStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def key(self, secret: str) -> DataKey:
        """The data key `secret` derives in this store (this environment's salt)."""
        return derive_key(secret, self._salt)

    def set(self, org: str, provider: str, field_name: str, value: str, secret: str) -> DataKey:
        """Store (or replace) a credential sealed with the key of `secret`; returns that key.

        Refused when other credentials of the org are sealed with another key (rotate or
        delete them first)."""
        import psycopg

        check_names(org, provider, field_name)
        if not value:
            raise ByokError("the credential value is empty")
        key = self.key(secret)
        sealed = seal(key, self.environment, org, provider, field_name, value)
        now = time.time()
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute(_LOCK, (self.environment,))
                fingerprints = {
                    str(fp)
                    for (fp,) in conn.execute(
                        "SELECT DISTINCT fingerprint FROM switchyard_byok"
                        " WHERE environment = %s AND org = %s",
                        (self.environment, org),
                    ).fetchall()
                }
                check_one_key(org, key, fingerprints)
                conn.execute(
                    "INSERT INTO switchyard_byok (environment, org, provider, field, nonce,"
                    " ciphertext, fingerprint, created_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (environment, org, provider, field) DO UPDATE SET"
                    " nonce = excluded.nonce, ciphertext = excluded.ciphertext,"
                    " fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                    (
                        self.environment,
                        org,
                        provider,
                        field_name,
                        sealed[:12],
                        sealed[12:],
                        key.fingerprint,
                        now,
                        now,
                    ),
                )
                conn.execute(_BUMP, (self.environment,))
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return key

    def delete(self, org: str, provider: str) -> int:
        """Delete every field of the org's credentials for `provider`; the number deleted."""
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction():
                cur = conn.execute(
                    "DELETE FROM switchyard_byok"
                    " WHERE environment = %s AND org = %s AND provider = %s",
                    (self.environment, org, provider),
                )
                count = cur.rowcount
                if count:
                    conn.execute(_BUMP, (self.environment,))
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return count

    def list(self) -> builtins.list[ByokRow]:
        """Every stored credential, without values, by org, provider and field."""
        rows = self._query(
            "SELECT org, provider, field, fingerprint, created_at, updated_at FROM switchyard_byok"
            " WHERE environment = %s ORDER BY org, provider, field",
            (self.environment,),
        )
        return [ByokRow(*row) for row in rows]

    def decrypt_all(
        self, secrets_by_org: Mapping[str, str], problems: builtins.list[str] | None = None
    ) -> dict[tuple[str, str], dict[str, str]]:
        """Credentials of the orgs in `secrets_by_org` by (org, provider), then field."""
        keys = {org: self.key(secret) for org, secret in secrets_by_org.items()}
        return self.decrypt_with(keys, problems)

    def decrypt_with(
        self, keys: Mapping[str, DataKey], problems: builtins.list[str] | None = None
    ) -> dict[tuple[str, str], dict[str, str]]:
        """`decrypt_all` with already derived keys (what the gateway's cache keeps)."""
        rows = self._query(
            "SELECT org, provider, field, nonce, ciphertext, fingerprint FROM switchyard_byok"
            " WHERE environment = %s ORDER BY org, provider, field",
            (self.environment,),
        )
        return open_rows(self.environment, keys, rows, problems)

    def rotate(self, org: str, old_secret: str, new_secret: str) -> int:
        """Re-seal the org's credentials from the old secret's key to the new one's, all or
        nothing; the number re-sealed."""
        import psycopg

        old, new = rotation_keys(self._salt, old_secret, new_secret)
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute(_LOCK, (self.environment,))
                rows = conn.execute(
                    "SELECT provider, field, nonce, ciphertext, fingerprint FROM switchyard_byok"
                    " WHERE environment = %s AND org = %s ORDER BY provider, field",
                    (self.environment, org),
                ).fetchall()
                resealed = reseal(self.environment, org, old, new, rows)  # ByokError: rollback
                now = time.time()
                for provider, field_name, sealed in resealed:
                    conn.execute(
                        "UPDATE switchyard_byok SET nonce = %s, ciphertext = %s,"
                        " fingerprint = %s, updated_at = %s"
                        " WHERE environment = %s AND org = %s AND provider = %s AND field = %s",
                        (
                            sealed[:12],
                            sealed[12:],
                            new.fingerprint,
                            now,
                            self.environment,
                            org,
                            provider,
                            field_name,
                        ),
                    )
                if resealed:
                    conn.execute(_BUMP, (self.environment,))
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return len(resealed)

    def data_version(self) -> int:
        """The environment's change counter, bumped in the transaction of every change."""
        rows = self._query(
            "SELECT version FROM switchyard_byok_meta WHERE environment = %s",
            (self.environment,),
        )
        return int(rows[0][0]) if rows else 0
