"""BYOK: an org's own provider credentials, encrypted at rest, used only for its requests.

Each org that may bring its own keys names an encryption secret in runtime.json
(`orgs.<id>.byok.encryption_key`); its value, from the environment, is never stored. The data
key is HKDF-SHA256(secret, salt=<the store's random salt>, info="switchyard-byok-v1"); every
credential is sealed with AES-256-GCM under a fresh 96-bit nonce, with associated data binding
environment, org, provider and field, so a ciphertext copied to another row, org or
environment does not open. A row carries the fingerprint of the key that sealed it, so a
wrong or stale secret is named as such instead of looking like tampering.

`ByokStore` is the operator's view (the `byok` CLI: set, list, delete, rotate); `ByokCache`
is the gateway's: decrypted credentials in memory, refreshed from a background thread when the
store changes. Values are never logged, printed or put into an error message.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import getpass
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime import report, sqlite
from runtime.admin import add_env_args, fail
from runtime.config import ConfigError, OrgConfig, RuntimeConfig, load_config
from runtime.keys import ENV_RE
from runtime.paths import data_dir

BYOK_DB = "byok.db"
MIN_SECRET_LEN = 32
GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_INFO = b"switchyard-byok-v1"
_FINGERPRINT_DOMAIN = b"switchyard-byok-fingerprint-v1\x00"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # org, provider: no '|' in AAD
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_log = logging.getLogger("switchyard.byok")

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


def _check_names(org: str, provider: str, field_name: str) -> None:
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

    def _aad(self, org: str, provider: str, field_name: str) -> bytes:
        return f"{self.environment}|{org}|{provider}|{field_name}".encode()

    def _seal(self, key: DataKey, org: str, provider: str, field_name: str, value: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(key.key).encrypt(
            nonce, value.encode(), self._aad(org, provider, field_name)
        )

    def _open(
        self, key: DataKey, org: str, provider: str, field_name: str, nonce: bytes, ct: bytes
    ) -> str:
        """The plaintext; InvalidTag when the key or the row's place is wrong."""
        return AESGCM(key.key).decrypt(nonce, ct, self._aad(org, provider, field_name)).decode()

    def set(self, org: str, provider: str, field_name: str, value: str, secret: str) -> DataKey:
        """Store (or replace) a credential sealed with the key of `secret`; returns that key.

        Refused when other credentials of the org are sealed with another key: rotate (or
        delete) them first, so an org's rows always open with one secret.
        """
        _check_names(org, provider, field_name)
        if not value:
            raise ByokError("the credential value is empty")
        key = self.key(secret)
        others = {
            fp
            for (fp,) in self._conn.execute(
                "SELECT DISTINCT fingerprint FROM credentials WHERE org = ?", (org,)
            )
        } - {key.fingerprint}
        if others:
            raise ByokError(
                f"credentials of org {org!r} are sealed with key {', '.join(sorted(others))}, "
                f"not the current key {key.fingerprint}: run `byok rotate` with the old secret "
                "first (or `byok delete` them)"
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
        out: dict[tuple[str, str], dict[str, str]] = {}
        cur = self._conn.execute(
            "SELECT org, provider, field, nonce, ciphertext, fingerprint FROM credentials"
            " ORDER BY org, provider, field"
        )
        for org, provider, field_name, nonce, ct, fp in cur.fetchall():
            key = keys.get(org)
            if key is None:
                continue
            try:
                value = self._open(key, org, provider, field_name, nonce, ct)
            except (InvalidTag, UnicodeDecodeError):
                if problems is not None:
                    problems.append(_unreadable(org, provider, field_name, fp, key))
                continue
            out.setdefault((org, provider), {})[field_name] = value
        return out

    def rotate(self, org: str, old_secret: str, new_secret: str) -> int:
        """Re-seal the org's credentials from the old secret's key to the new one's, all or
        nothing; the number re-sealed (rows already under the new key are left as they are)."""
        new = self.key(new_secret)
        if not old_secret:
            raise ByokError("the old encryption secret is empty")
        old = _derive(old_secret, self._salt)  # no length check: it only opens what it sealed
        if old.fingerprint == new.fingerprint:
            raise ByokError("the old and the new encryption secret are the same")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            rows = self._conn.execute(
                "SELECT provider, field, nonce, ciphertext, fingerprint FROM credentials"
                " WHERE org = ? ORDER BY provider, field",
                (org,),
            ).fetchall()
            now = time.time()
            count = 0
            for provider, field_name, nonce, ct, fp in rows:
                if fp == new.fingerprint:
                    continue
                try:
                    value = self._open(old, org, provider, field_name, nonce, ct)
                except (InvalidTag, UnicodeDecodeError):
                    raise ByokError(
                        "nothing rotated: " + _unreadable(org, provider, field_name, fp, old)
                    ) from None
                sealed = self._seal(new, org, provider, field_name, value)
                self._conn.execute(
                    "UPDATE credentials SET nonce = ?, ciphertext = ?, fingerprint = ?,"
                    " updated_at = ? WHERE org = ? AND provider = ? AND field = ?",
                    (sealed[:12], sealed[12:], new.fingerprint, now, org, provider, field_name),
                )
                count += 1
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return count

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


class ByokCache:
    """The gateway's view: each BYOK org's own credentials, decrypted, in memory.

    `credentials` does no I/O. Only providers listed in the org's `byok` are served; an org
    whose encryption secret is absent from the environment gets none, and `problems()` says
    so by the secret's NAME. After a rotation a gateway still holding the old secret keeps the
    values it last read (rotation does not change them) and reports the mismatch.
    """

    def __init__(
        self,
        path: Path,
        environment: str,
        orgs: Mapping[str, OrgConfig],
        environ: Mapping[str, str],
    ) -> None:
        self._allowed = {oid: o.byok_providers for oid, o in orgs.items() if o.byok_providers}
        self._static_problems: list[str] = []
        secrets_by_org: dict[str, str] = {}
        for oid in sorted(self._allowed):
            name = orgs[oid].byok_encryption_key
            try:
                secrets_by_org[oid] = check_secret(
                    environ.get(name) if name else None,
                    f"org {oid}: BYOK encryption secret {name or '(unnamed)'}",
                )
            except ByokError as exc:
                self._static_problems.append(f"{exc}; the org's own credentials are not used")
        self._store = ByokStore(path, environment) if secrets_by_org else None
        self._keys = (
            {oid: self._store.key(s) for oid, s in secrets_by_org.items()} if self._store else {}
        )
        self._lock = threading.Lock()
        self._snapshot: dict[tuple[str, str], dict[str, str]] = {}
        self._problems: list[str] = []
        self._version: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    def credentials(self, org: str, provider: str) -> dict[str, str] | None:
        """The org's own credential fields for `provider` (e.g. {"api_key": ...}), or None."""
        found = self._snapshot.get((org, provider))
        return None if found is None else dict(found)

    def problems(self) -> list[str]:
        """What keeps BYOK credentials from being used, by org and secret NAME (no values)."""
        return [*self._static_problems, *self._problems]

    def refresh(self) -> bool:
        """Reload the snapshot if the store changed; True when it was reloaded."""
        if self._store is None:
            return False
        with self._lock:
            version = self._store.data_version()
            if version == self._version:
                return False
            problems: list[str] = []
            loaded = self._store.decrypt_with(self._keys, problems)
            snapshot: dict[tuple[str, str], dict[str, str]] = {}
            for (org, provider), fields in loaded.items():
                if provider in self._allowed.get(org, ()):
                    snapshot[(org, provider)] = fields
            self._keep_rotated(snapshot)
            for p in problems:
                if p not in self._problems:
                    _log.warning("%s", p)
            self._snapshot = snapshot  # one reference swap: readers see old or new, never half
            self._problems = problems
            self._version = version
            return True

    def _keep_rotated(self, snapshot: dict[tuple[str, str], dict[str, str]]) -> None:
        # A row re-sealed under another key (a rotation this gateway has no secret for yet)
        # still holds the same value: keep serving what was last read rather than nothing.
        assert self._store is not None
        for row in self._store.list():
            where = (row.org, row.provider)
            key = self._keys.get(row.org)
            if key is None or row.fingerprint == key.fingerprint:
                continue
            old = self._snapshot.get(where, {}).get(row.field)
            if old is not None and row.provider in self._allowed.get(row.org, ()):
                snapshot.setdefault(where, {}).setdefault(row.field, old)

    def start_background_refresh(self, interval: float = 1.0) -> None:
        """Refresh the snapshot every `interval` seconds from a daemon thread."""
        if self._thread is not None or self._store is None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._refresh_loop, args=(interval,), name="switchyard-byok", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            with contextlib.suppress(sqlite3.Error):  # keep the last good snapshot
                self.refresh()

    def stop(self) -> None:
        """Stop the background refresh and close the store."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


# --- CLI -----------------------------------------------------------------------------------

_HELP = """\
An org's own provider credentials (BYOK), encrypted at rest with a key derived from the org's
encryption secret (runtime.json `orgs.<org>.byok.encryption_key` names it; its value is read
from the environment variable of that name). Values are read from stdin and never shown.

Rotation: export the new secret under the configured name and the old one under another
variable, run `byok rotate --old-secret-env THAT_VARIABLE`, then restart the gateway with the
new secret (until then it keeps serving the values it last read).
"""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `byok` on `python -m runtime`'s subparsers."""
    byok = subparsers.add_parser(
        "byok",
        help="store, list, delete and rotate orgs' own provider credentials",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_actions(byok)


def add_actions(parser: argparse.ArgumentParser) -> None:
    """The `set`, `list`, `delete` and `rotate` actions on `parser`."""
    actions = parser.add_subparsers(dest="byok_command", required=True, metavar="ACTION")

    put = actions.add_parser(
        "set",
        help="store a credential, read from stdin (piped, or typed without echo)",
        description="Store an org's own credential for a provider. The value is read from "
        'stdin, never from the command line: `printf %%s "$KEY" | ... byok set ...`, or '
        "type it at the prompt.",
    )
    _common(put, config=True)
    put.add_argument("--org", required=True, help="the org the credential belongs to")
    put.add_argument("--provider", required=True, help="a provider in the org's byok list")
    put.add_argument("--field", default="api_key", help="the credential field (default api_key)")
    # Catches a credential typed on the command line so argparse does not echo it back.
    put.add_argument("stray", nargs="*", help=argparse.SUPPRESS)
    put.set_defaults(func=cmd_set)

    listing = actions.add_parser("list", help="list stored credentials (never their values)")
    _common(listing, config=False)
    listing.add_argument("--json", action="store_true", help="JSON for machines")
    listing.set_defaults(func=cmd_list)

    delete = actions.add_parser("delete", help="delete an org's credentials for a provider")
    _common(delete, config=False)
    delete.add_argument("--org", required=True)
    delete.add_argument("--provider", required=True)
    delete.set_defaults(func=cmd_delete)

    rotate = actions.add_parser(
        "rotate",
        help="re-encrypt an org's credentials from its old secret to the current one",
        description="Re-encrypt every credential of the org from the key of the old secret "
        "(in --old-secret-env) to the key of the current one (the variable the config names). "
        "All or nothing.",
    )
    _common(rotate, config=True)
    rotate.add_argument("--org", required=True)
    rotate.add_argument(
        "--old-secret-env", required=True, metavar="VAR", help="variable holding the old secret"
    )
    rotate.set_defaults(func=cmd_rotate)


def _common(parser: argparse.ArgumentParser, *, config: bool) -> None:
    add_env_args(parser)
    if config:
        parser.add_argument(
            "--config",
            required=True,
            metavar="PATH",
            help="the compiled runtime.json (which orgs may BYOK which providers)",
        )


def _db(args: argparse.Namespace) -> Path:
    return data_dir(args.env, explicit=args.data_dir) / BYOK_DB


def _byok_org(args: argparse.Namespace) -> tuple[RuntimeConfig, OrgConfig, str]:
    """The config, the org and its current encryption secret; ByokError when refused."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise ByokError(str(exc)) from None
    if config.environment != args.env:
        raise ByokError(
            f"{args.config} is the config of environment {config.environment!r}, not "
            f"{args.env!r}; pass build/{args.env}/runtime.json"
        )
    org = config.orgs.get(args.org)
    if org is None:
        raise ByokError(
            f"org {args.org!r} is not in {args.config} (orgs: {', '.join(sorted(config.orgs))})"
        )
    if not org.byok_providers or not org.byok_encryption_key:
        raise ByokError(
            f"org {args.org!r} has no byok in {args.config}: add `byok` to the org in "
            "gateway.yaml and rebuild"
        )
    name = org.byok_encryption_key
    secret = check_secret(
        os.environ.get(name), f"the encryption secret {name} (orgs.{org.id}.byok.encryption_key)"
    )
    return config, org, secret


def cmd_set(args: argparse.Namespace) -> int:
    """`byok set`: checks the config and the secret, then reads the value from stdin."""
    if args.stray:
        return fail(
            "unexpected argument(s), not shown: the credential is read from stdin, never from "
            "the command line (it may now be in your shell history: consider replacing it)"
        )
    try:
        config, org, secret = _byok_org(args)
        provider: str = args.provider
        if provider not in org.byok_providers:
            raise ByokError(
                f"org {org.id!r} may not bring its own {provider!r} credentials in "
                f"{args.config} (its byok providers: {', '.join(sorted(org.byok_providers))})"
            )
        fields = config.providers[provider].credentials if provider in config.providers else {}
        if fields and args.field not in fields:
            raise ByokError(
                f"provider {provider!r} takes the credential field(s) "
                f"{', '.join(sorted(fields))}, not {args.field!r}"
            )
        _check_names(org.id, provider, args.field)
        value = _read_value(f"{args.field} for {org.id}/{provider} (not echoed): ")
        with ByokStore(_db(args), args.env) as store:
            key = store.set(org.id, provider, args.field, value, secret)
    except ByokError as exc:
        return fail(str(exc))
    print(f"stored {args.field} for {org.id}/{provider} (sealed with key {key.fingerprint})")
    return 0


def _read_value(prompt: str) -> str:
    value = (getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.read()).strip()
    if not value:
        raise ByokError(
            'no credential on stdin: pipe it in (printf %s "$KEY" | python -m runtime byok '
            "set ...) or type it at the prompt"
        )
    if "\n" in value or "\r" in value:
        raise ByokError("stdin holds several lines; pipe in the credential alone")
    return value


def cmd_list(args: argparse.Namespace) -> int:
    """`byok list`: org, provider, field, key fingerprint, updated; never values."""
    db = _db(args)
    rows: list[ByokRow] = []
    if db.exists():
        try:
            with ByokStore(db, args.env) as store:
                rows = store.list()
        except ByokError as exc:
            return fail(str(exc))
    if args.json:
        print(json.dumps([_row_json(r) for r in rows], indent=2))
        return 0
    if not rows:
        print(f"no BYOK credentials in environment {args.env!r} ({db})", file=sys.stderr)
        return 0
    table = [
        (r.org, r.provider, r.field, r.fingerprint, report.format_time(r.updated_at)) for r in rows
    ]
    print(report.table(("org", "provider", "field", "key", "updated"), table))
    return 0


def _row_json(row: ByokRow) -> dict[str, object]:
    return {
        "org": row.org,
        "provider": row.provider,
        "field": row.field,
        "fingerprint": row.fingerprint,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def cmd_delete(args: argparse.Namespace) -> int:
    """`byok delete`: every field of the org's credentials for the provider."""
    db = _db(args)
    if not db.exists():
        return fail(f"no BYOK store in {db.parent}; is --data-dir right?")
    try:
        with ByokStore(db, args.env) as store:
            count = store.delete(args.org, args.provider)
    except ByokError as exc:
        return fail(str(exc))
    if count == 0:
        return fail(
            f"nothing stored for {args.org}/{args.provider} in environment {args.env!r} "
            "(see `byok list`)"
        )
    print(f"deleted {count} credential field(s) of {args.org}/{args.provider}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    """`byok rotate`: re-seal the org's credentials with the current secret, all or nothing."""
    try:
        _, org, secret = _byok_org(args)
        var: str = args.old_secret_env
        old = os.environ.get(var)
        if not old:
            raise ByokError(f"--old-secret-env {var}: the variable {var} is not set")
        db = _db(args)
        if not db.exists():
            raise ByokError(f"no BYOK store in {db.parent}; is --data-dir right?")
        with ByokStore(db, args.env) as store:
            count = store.rotate(org.id, old, secret)
            fingerprint = store.key(secret).fingerprint
    except ByokError as exc:
        return fail(str(exc))
    print(f"re-encrypted {count} credential field(s) of org {org.id} with key {fingerprint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m runtime.byok ACTION ...`, the same as `python -m runtime byok ACTION ...`."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime byok",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_actions(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
