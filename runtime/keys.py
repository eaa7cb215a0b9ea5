"""Gateway keys: issued per environment and org, shown once, stored only as hashes.

A key reads `sy_<env>_<keyid>_<secret>`. The environment name has no underscore, so the four
parts split unambiguously; the 12-character key id is public (records, logs and `keys list`
name it) and the 40-character secret is never stored: the store keeps
sha256(f"{keyid}:{secret}"). Rotation is two keys for the same org and name, both active until
the old one is revoked.

`KeyStore` is the issuer's view (the `keys` CLI) in SQLite; runtime/keys_pg.py `PgKeyStore` is
the same over PostgreSQL, shared by replicas and hosts. `Authenticator` is the gateway's
hot-path verifier, which checks tokens against an in-memory snapshot that a background thread
refreshes from either store (anything with `KeySource`'s rows() and data_version()).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import string
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runtime import sqlite
from runtime.errors import GatewayError

ENV_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
KEYID_LEN = 12
SECRET_LEN = 40
_KEYID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_KEYID_RE = re.compile(rf"^[a-z0-9]{{{KEYID_LEN}}}$")
_SECRET_RE = re.compile(rf"^[A-Za-z0-9]{{{SECRET_LEN}}}$")
_EARLY_REFRESH_GAP_S = 0.25

_log = logging.getLogger("switchyard.keys")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
"""
_COLUMNS = "id, environment, org, name, created_at, expires_at, revoked_at, hash"


class KeyStoreError(Exception):
    """The key store refused an operation (unknown key, store of another environment...)."""


class AuthError(Exception):
    """A request's key was refused; `code` is the machine word the client sees. `key` is the
    refused key when the token was that key's, with its right secret, but the key is revoked
    or expired (its record names it); None for every other refusal (an unknown id, a wrong
    secret: nothing proves whose the token is)."""

    def __init__(self, code: str, message: str, key: KeyInfo | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.key = key

    def gateway_error(self) -> GatewayError:
        """The 401 the client gets."""
        return GatewayError(401, self.code, self.message)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Everything about a key except its secret."""

    id: str
    environment: str
    org: str
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def status(self, now: float | None = None) -> str:
        """`revoked`, `expired` or `active` at `now` (default: the current time)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (time.time() if now is None else now):
            return "expired"
        return "active"


def key_hash(key_id: str, secret: str) -> str:
    """What the store keeps instead of the secret."""
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def key_prefix(environment: str) -> str:
    """The prefix every key of `environment` starts with (runtime.json `keys.prefix`)."""
    return f"sy_{environment}_"


def parse_key(token: str) -> tuple[str, str, str] | None:
    """(environment, key id, secret) of a well-formed Switchyard key, else None."""
    parts = token.split("_")
    if len(parts) != 4 or parts[0] != "sy":
        return None
    _, env, key_id, secret = parts
    if not (ENV_RE.match(env) and _KEYID_RE.match(key_id) and _SECRET_RE.match(secret)):
        return None
    return env, key_id, secret


def token_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `x-api-key`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def draw_key() -> tuple[str, str]:
    """A fresh random (key id, secret)."""
    key_id = "".join(secrets.choice(_KEYID_ALPHABET) for _ in range(KEYID_LEN))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LEN))
    return key_id, secret


def _info(row: tuple[str, str, str, str, float, float | None, float | None, str]) -> KeyInfo:
    return KeyInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


class KeyStore:
    """The environment's keys in SQLite (`<data_dir>/keys.db`)."""

    def __init__(self, path: Path, environment: str) -> None:
        if not ENV_RE.match(environment):
            raise KeyStoreError(f"invalid environment name {environment!r}")
        self.path = path
        self.environment = environment
        self._conn = sqlite.connect(path, private=True)
        self._conn.executescript(_SCHEMA)
        self._conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('environment', ?)", (environment,)
        )
        (owner,) = self._conn.execute("SELECT value FROM meta WHERE key = 'environment'").fetchone()
        if owner != environment:
            self._conn.close()
            raise KeyStoreError(
                f"the key store {path} belongs to environment {owner!r}, not {environment!r}"
            )

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, org: str, name: str, expires_at: float | None = None) -> tuple[KeyInfo, str]:
        """Issue a key; returns its info and the plaintext key, which exists nowhere else."""
        now = time.time()
        while True:
            key_id, secret = draw_key()
            try:
                self._conn.execute(
                    "INSERT INTO keys (id, environment, org, name, hash, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            except sqlite3.IntegrityError:  # key id collision: draw again
                continue
            info = KeyInfo(key_id, self.environment, org, name, now, expires_at, None)
            return info, f"{key_prefix(self.environment)}{key_id}_{secret}"

    def get(self, key_id: str) -> KeyInfo | None:
        """The key with this id, or None."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else _info(row)

    def list(self) -> builtins.list[KeyInfo]:
        """Every key of the environment, oldest first."""
        return [info for info, _ in self.rows()]

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key (idempotent: an already revoked key keeps its first revocation time)."""
        self._conn.execute(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time.time(), key_id),
        )
        info = self.get(key_id)
        if info is None:
            raise KeyStoreError(f"no key with id {key_id!r} in environment {self.environment!r}")
        return info

    def rows(self) -> builtins.list[tuple[KeyInfo, str]]:
        """(info, hash) of every key, oldest first: what the authenticator loads."""
        cur = self._conn.execute(f"SELECT {_COLUMNS} FROM keys ORDER BY created_at, id")
        return [(_info(row), row[7]) for row in cur]

    def data_version(self) -> int:
        """Changes whenever another connection commits to the database."""
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        return int(version)


class KeySource(Protocol):
    """What the authenticator reads: `KeyStore` (SQLite) or keys_pg.`PgKeyStore`."""

    def rows(self) -> builtins.list[tuple[KeyInfo, str]]:
        """(info, hash) of every key of the environment."""
        ...

    def data_version(self) -> int:
        """A number that changes whenever the keys change (a cheap check)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class Authenticator:
    """Verifies gateway keys against an in-memory snapshot of the key store.

    `verify` does no I/O. `refresh` reloads the snapshot when the store changed; the app
    calls `start_background_refresh` so new and revoked keys take effect within a second.
    When the store cannot be read, the last snapshot keeps serving: the failure is logged once,
    `warnings()` names it (for /readyz) until a refresh succeeds again.
    """

    def __init__(
        self, store: KeySource | Path, environment: str, prefix: str | None = None
    ) -> None:
        self.environment = environment
        self.prefix = prefix or key_prefix(environment)
        if self.prefix != key_prefix(environment):
            raise KeyStoreError(
                f"key prefix {self.prefix!r} does not match environment {environment!r}"
            )
        self._store: KeySource = KeyStore(store, environment) if isinstance(store, Path) else store
        self._lock = threading.Lock()
        self._snapshot: dict[str, tuple[bytes, KeyInfo]] = {}
        self._version: int | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_early = 0.0
        self._failing: str | None = None
        self._failing_since = 0.0
        self.refresh()

    def refresh(self) -> bool:
        """Reload the snapshot if the key store changed; True when it was reloaded."""
        with self._lock:
            version = self._store.data_version()
            if version == self._version:
                return False
            snapshot = {info.id: (digest.encode(), info) for info, digest in self._store.rows()}
            self._snapshot = snapshot  # one reference swap: readers see old or new, never half
            self._version = version
            return True

    def warnings(self) -> builtins.list[str]:
        """Why the snapshot may be stale (the store unreadable), for /readyz; else []."""
        failing = self._failing
        if failing is None:
            return []
        since = time.strftime("%H:%M:%S", time.gmtime(self._failing_since))
        return [
            f"key store unreachable since {since} UTC ({failing}); serving the keys read "
            "before, new keys and revocations wait until it is back"
        ]

    def _poll(self) -> None:
        """One background refresh: keep the last snapshot on failure, log the change once."""
        try:
            self.refresh()
        except Exception as exc:  # keep the last good snapshot
            reason = str(exc) or type(exc).__name__
            if self._failing is None:
                self._failing_since = time.time()
                _log.warning("cannot refresh the keys, serving the last snapshot: %s", reason)
            self._failing = reason
            return
        if self._failing is not None:
            _log.warning("the key store is readable again; keys refreshed")
            self._failing = None

    def verify(self, token: str | None) -> KeyInfo:
        """The key's info, or AuthError(missing_api_key | invalid_api_key |
        key_wrong_environment | key_revoked | key_expired)."""
        if not token:
            raise AuthError("missing_api_key", "no API key: send 'Authorization: Bearer <key>'")
        parsed = parse_key(token)
        if parsed is None:
            raise AuthError("invalid_api_key", "invalid API key: not a Switchyard gateway key")
        env, key_id, secret = parsed
        if env != self.environment:
            raise AuthError(
                "key_wrong_environment",
                f"this key belongs to environment {env!r}; "
                f"this gateway serves {self.environment!r}",
            )
        entry = self._snapshot.get(key_id)
        if entry is None:
            self._request_early_refresh()
            raise AuthError("invalid_api_key", "invalid API key")
        digest, info = entry
        if not hmac.compare_digest(key_hash(key_id, secret).encode(), digest):
            raise AuthError("invalid_api_key", "invalid API key")
        if info.revoked_at is not None:
            raise AuthError("key_revoked", f"API key {key_id} has been revoked", info)
        if info.expires_at is not None and info.expires_at <= time.time():
            raise AuthError("key_expired", f"API key {key_id} has expired", info)
        return info

    def _request_early_refresh(self) -> None:
        # A just-created key should not wait a full interval; rate-limited so a flood of bad
        # keys cannot turn into a flood of reloads.
        now = time.monotonic()
        if self._thread is not None and now - self._last_early >= _EARLY_REFRESH_GAP_S:
            self._last_early = now
            self._wake.set()

    def start_background_refresh(self, interval: float = 1.0) -> None:
        """Refresh the snapshot every `interval` seconds from a daemon thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._refresh_loop, args=(interval,), name="switchyard-keys", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self, interval: float) -> None:
        while not self._stopping.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self._poll()

    def stop(self) -> None:
        """Stop the background refresh and close the store."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        # A refresh stuck on an unresponsive store must not hold the shutdown: its daemon
        # thread ends with the process.
        if self._lock.acquire(timeout=1.0):
            try:
                self._store.close()
            finally:
                self._lock.release()
