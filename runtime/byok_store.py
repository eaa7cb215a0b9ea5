"""The BYOK store: an org's own provider credentials, encrypted at rest in SQLite.

Each org that may bring its own keys names an encryption secret in runtime.json
(`orgs.<id>.byok.encryption_key`); its value, from the environment, is never stored. The data
key is HKDF-SHA256(secret, salt=<the store's random salt>, info="switchyard-byok-v1"); every
credential is sealed with AES-256-GCM under a fresh 96-bit nonce, with associated data binding
environment, org, provider and field, so a ciphertext copied to another row, org or
environment does not open. A row carries the fingerprint of the key that sealed it, so a
wrong or stale secret is named as such instead of looking like tampering.

`ByokStore` is what the `byok` commands of runtime/cli.py (set, list, delete, rotate) and the
gateway's cache (runtime/byok_cache.py) read and write. Values are never logged, printed or
put into an error message.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime import sqlite
from runtime.keys import ENV_RE

BYOK_DB = "byok.db"
MIN_SECRET_LEN = 32
GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_INFO = b"switchyard-byok-v1"
_FINGERPRINT_DOMAIN = b"switchyard-byok-fingerprint-v1\x00"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # org, provider: no '|' in AAD
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (
    org TEXT NOT NULL,
    provider TEXT NOT NULL,
    field TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (org, provider, field)
);
"""


class ByokError(Exception):
    """A BYOK operation was refused; the message never contains a secret or a credential."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """An AES-256 key derived from an org's encryption secret, and its public fingerprint."""

    key: bytes = field(repr=False)
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ByokRow:
    """A stored credential without its value."""

    org: str
    provider: str
    field: str
    fingerprint: str
    created_at: float
    updated_at: float


def check_secret(secret: str | None, name: str = "the encryption secret") -> str:
    """`secret` if usable as an encryption secret, else ByokError naming `name` and the fix."""
    if not secret:
        raise ByokError(f"{name} is not set in the environment (to create one, {GENERATE_HINT})")
    if len(secret) < MIN_SECRET_LEN:
        raise ByokError(
            f"{name} is shorter than {MIN_SECRET_LEN} characters, too weak to encrypt "
            f"credentials; {GENERATE_HINT}"
        )
    return secret


def derive_key(secret: str, salt: bytes) -> DataKey:
    """The data key of `secret` in a store with `salt` (refuses secrets that are too short)."""
    return _derive(check_secret(secret), salt)


def _derive(secret: str, salt: bytes) -> DataKey:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(secret.encode())
    return DataKey(key, hashlib.sha256(_FINGERPRINT_DOMAIN + key).hexdigest()[:12])


def check_names(org: str, provider: str, field_name: str) -> None:
    """ByokError unless org, provider and field are names a credential may be stored under."""
    if not _NAME_RE.match(org):
        raise ByokError(f"{org!r} is not an org id")
    if not _NAME_RE.match(provider):
        raise ByokError(f"{provider!r} is not a provider id")
    if not _FIELD_RE.match(field_name):
        raise ByokError(f"{field_name!r} is not a credential field name (e.g. api_key)")


class ByokStore:
    """An environment's BYOK credentials in SQLite (`<data_dir>/byok.db`), sealed per org."""

    def __init__(self, path: Path, environment: str) -> None:
        if not ENV_RE.match(environment):
            raise ByokError(f"invalid environment name {environment!r}")
        self.path = path
        self.environment = environment
        try:
            self._conn = sqlite.connect(path, private=True)
        except sqlite3.Error as exc:
            raise ByokError(f"cannot open the BYOK store {path}: {exc}") from None
        try:
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('environment', ?)", (environment,)
            )
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('salt', ?)",
                (secrets.token_hex(16),),
            )
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            self._conn.close()
            raise ByokError(f"cannot open the BYOK store {path}: {exc}") from None
        if meta["environment"] != environment:
            self._conn.close()
            raise ByokError(
                f"the BYOK store {path} belongs to environment {meta['environment']!r}, "
                f"not {environment!r}; is --data-dir right?"
            )
        self._salt = bytes.fromhex(meta["salt"])

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> ByokStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def key(self, secret: str) -> DataKey:
        """The data key `secret` derives in this store."""
        return derive_key(secret, self._salt)

    def _seal(self, key: DataKey, org: str, provider: str, field_name: str, value: str) -> bytes:
        return seal(key, self.environment, org, provider, field_name, value)

    def _open(
        self, key: DataKey, org: str, provider: str, field_name: str, nonce: bytes, ct: bytes
    ) -> str:
        """The plaintext; InvalidTag when the key or the row's place is wrong."""
        return unseal(key, self.environment, org, provider, field_name, nonce, ct)

    def set(self, org: str, provider: str, field_name: str, value: str, secret: str) -> DataKey:
        """Store (or replace) a credential sealed with the key of `secret`; returns that key.

        Refused when other credentials of the org are sealed with another key: rotate (or
        delete) them first, so an org's rows always open with one secret.
        """
        check_names(org, provider, field_name)
        if not value:
            raise ByokError("the credential value is empty")
        key = self.key(secret)
        check_one_key(
            org,
            key,
            {
                fp
                for (fp,) in self._conn.execute(
                    "SELECT DISTINCT fingerprint FROM credentials WHERE org = ?", (org,)
                )
            },
        )
        sealed = self._seal(key, org, provider, field_name, value)
        now = time.time()
        self._conn.execute(
            "INSERT INTO credentials (org, provider, field, nonce, ciphertext, fingerprint,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (org, provider, field) DO UPDATE SET nonce = excluded.nonce,"
            " ciphertext = excluded.ciphertext, fingerprint = excluded.fingerprint,"
            " updated_at = excluded.updated_at",
            (org, provider, field_name, sealed[:12], sealed[12:], key.fingerprint, now, now),
        )
        return key

    def delete(self, org: str, provider: str) -> int:
        """Delete every field of the org's credentials for `provider`; the number deleted."""
        cur = self._conn.execute(
            "DELETE FROM credentials WHERE org = ? AND provider = ?", (org, provider)
        )
        return cur.rowcount

    def list(self) -> builtins.list[ByokRow]:
        """Every stored credential, without values, by org, provider and field."""
        cur = self._conn.execute(
            "SELECT org, provider, field, fingerprint, created_at, updated_at FROM credentials"
            " ORDER BY org, provider, field"
        )
        return [ByokRow(*row) for row in cur]

    def decrypt_all(
        self, secrets_by_org: Mapping[str, str], problems: builtins.list[str] | None = None
    ) -> dict[tuple[str, str], dict[str, str]]:
        """Credentials of the orgs in `secrets_by_org` by (org, provider), then field.

        A row that does not open is skipped and described in `problems` (if given).
        """
        keys = {org: self.key(secret) for org, secret in secrets_by_org.items()}
        return self.decrypt_with(keys, problems)

    def decrypt_with(
        self, keys: Mapping[str, DataKey], problems: builtins.list[str] | None = None
    ) -> dict[tuple[str, str], dict[str, str]]:
        """`decrypt_all` with already derived keys (what the gateway's cache keeps)."""
        cur = self._conn.execute(
            "SELECT org, provider, field, nonce, ciphertext, fingerprint FROM credentials"
            " ORDER BY org, provider, field"
        )
        return open_rows(self.environment, keys, cur.fetchall(), problems)

    def rotate(self, org: str, old_secret: str, new_secret: str) -> int:
        """Re-seal the org's credentials from the old secret's key to the new one's, all or
        nothing; the number re-sealed (rows already under the new key are left as they are)."""
        old, new = rotation_keys(self._salt, old_secret, new_secret)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            rows = self._conn.execute(
                "SELECT provider, field, nonce, ciphertext, fingerprint FROM credentials"
                " WHERE org = ? ORDER BY provider, field",
                (org,),
            ).fetchall()
            now = time.time()
            resealed = reseal(self.environment, org, old, new, rows)
            for provider, field_name, sealed in resealed:
                self._conn.execute(
                    "UPDATE credentials SET nonce = ?, ciphertext = ?, fingerprint = ?,"
                    " updated_at = ? WHERE org = ? AND provider = ? AND field = ?",
                    (sealed[:12], sealed[12:], new.fingerprint, now, org, provider, field_name),
                )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return len(resealed)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the database."""
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        return int(version)


def _unreadable(org: str, provider: str, field_name: str, fp: str, key: DataKey) -> str:
    where = f"BYOK credential {org}/{provider} {field_name}"
    if fp != key.fingerprint:
        return (
            f"{where} is sealed with key {fp}, not {key.fingerprint}: the org's encryption "
            "secret is not the one that sealed it (rotated? set it to the current secret)"
        )
    return f"{where} does not decrypt (tampered with or copied from another row)"


# --- sealing, shared by every store (SQLite here, PostgreSQL in runtime/byok_pg.py) ---------


def _aad(environment: str, org: str, provider: str, field_name: str) -> bytes:
    return f"{environment}|{org}|{provider}|{field_name}".encode()


def seal(
    key: DataKey, environment: str, org: str, provider: str, field_name: str, value: str
) -> bytes:
    """`value` sealed with AES-256-GCM under a fresh nonce, bound to its place: nonce (12
    bytes) followed by ciphertext and tag."""
    nonce = os.urandom(12)
    aad = _aad(environment, org, provider, field_name)
    return nonce + AESGCM(key.key).encrypt(nonce, value.encode(), aad)


def unseal(
    key: DataKey,
    environment: str,
    org: str,
    provider: str,
    field_name: str,
    nonce: bytes,
    ct: bytes,
) -> str:
    """The plaintext of a sealed credential; InvalidTag when the key or the place is wrong."""
    aad = _aad(environment, org, provider, field_name)
    return AESGCM(key.key).decrypt(bytes(nonce), bytes(ct), aad).decode()


def check_one_key(org: str, key: DataKey, fingerprints: set[str]) -> None:
    """ByokError when the org's stored credentials (their `fingerprints`) are sealed with
    another key than `key`: an org's rows always open with one secret."""
    others = fingerprints - {key.fingerprint}
    if others:
        raise ByokError(
            f"credentials of org {org!r} are sealed with key {', '.join(sorted(others))}, "
            f"not the current key {key.fingerprint}: run `byok rotate` with the old secret "
            "first (or `byok delete` them)"
        )


def open_rows(
    environment: str,
    keys: Mapping[str, DataKey],
    rows: Iterable[tuple[str, str, str, bytes, bytes, str]],
    problems: builtins.list[str] | None = None,
) -> dict[tuple[str, str], dict[str, str]]:
    """Decrypt (org, provider, field, nonce, ciphertext, fingerprint) rows of the orgs in
    `keys`, by (org, provider), then field; a row that does not open is skipped and described
    in `problems` (if given)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for org, provider, field_name, nonce, ct, fp in rows:
        key = keys.get(org)
        if key is None:
            continue
        try:
            value = unseal(key, environment, org, provider, field_name, nonce, ct)
        except (InvalidTag, UnicodeDecodeError):
            if problems is not None:
                problems.append(_unreadable(org, provider, field_name, fp, key))
            continue
        out.setdefault((org, provider), {})[field_name] = value
    return out


def rotation_keys(salt: bytes, old_secret: str, new_secret: str) -> tuple[DataKey, DataKey]:
    """(old, new) data keys of a rotation in a store with `salt`; ByokError when refused."""
    new = derive_key(new_secret, salt)
    if not old_secret:
        raise ByokError("the old encryption secret is empty")
    old = _derive(old_secret, salt)  # no length check: it only opens what it sealed
    if old.fingerprint == new.fingerprint:
        raise ByokError("the old and the new encryption secret are the same")
    return old, new


def reseal(
    environment: str,
    org: str,
    old: DataKey,
    new: DataKey,
    rows: Iterable[tuple[str, str, bytes, bytes, str]],
) -> builtins.list[tuple[str, str, bytes]]:
    """(provider, field, sealed) for each of the org's (provider, field, nonce, ciphertext,
    fingerprint) rows not yet under `new`, re-sealed from `old`; ByokError (nothing rotated)
    when one does not open with `old`."""
    out: builtins.list[tuple[str, str, bytes]] = []
    for provider, field_name, nonce, ct, fp in rows:
        if fp == new.fingerprint:
            continue
        try:
            value = unseal(old, environment, org, provider, field_name, nonce, ct)
        except (InvalidTag, UnicodeDecodeError):
            raise ByokError(
                "nothing rotated: " + _unreadable(org, provider, field_name, fp, old)
            ) from None
        out.append((provider, field_name, seal(new, environment, org, provider, field_name, value)))
    return out
