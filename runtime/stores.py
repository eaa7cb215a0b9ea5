"""Opening the environment's key store and BYOK store, whichever the config chose.

runtime.json `state.keys.store` is `sqlite` (the embedded default: `keys.db` and `byok.db` in
the data dir) or `postgres` (one database shared by replicas and hosts, at the URL in the
environment variable that `state.keys.url_secret` names). The gateway (runtime/app.py) and the
`keys` / `byok` commands (runtime/cli.py) open them here, so both always agree. Without a
config (a command run with `--env` alone) the SQLite files of the data dir are used, as before
PostgreSQL was an option. The URL carries a password and is never logged or printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.byok_store import BYOK_DB, ByokError, ByokStore
from runtime.config import RuntimeConfig
from runtime.keys import KeyStore, KeyStoreError
from runtime.paths import KEYS_DB

if TYPE_CHECKING:
    from runtime.byok_pg import PgByokStore
    from runtime.keys_pg import PgKeyStore


def uses_postgres(config: RuntimeConfig | None) -> bool:
    """True when the config keeps keys and BYOK credentials in PostgreSQL."""
    return config is not None and config.state.keys_store == "postgres"


def postgres_url(config: RuntimeConfig, environ: Mapping[str, str]) -> str:
    """The key store's PostgreSQL URL from the environment; ValueError naming the variable
    (never its value) when it is unset."""
    name = config.state.postgres_url_secret or "(unnamed)"
    url = environ.get(name, "") if config.state.postgres_url_secret else ""
    if not url:
        raise ValueError(
            f"state.keys.store is postgres but the environment variable {name} "
            f"(state.keys.url_secret) is not set: export the PostgreSQL URL of the "
            f"{config.environment} key store under that name"
        )
    return url


def open_key_store(
    config: RuntimeConfig | None, environment: str, data_dir: Path, environ: Mapping[str, str]
) -> KeyStore | PgKeyStore:
    """The key store of `environment`: PostgreSQL when the config says so, else
    `<data_dir>/keys.db`; KeyStoreError naming the problem and the fix."""
    if config is None or not uses_postgres(config):
        return KeyStore(data_dir / KEYS_DB, environment)
    from runtime.keys_pg import PgKeyStore

    try:
        url = postgres_url(config, environ)
    except ValueError as exc:
        raise KeyStoreError(str(exc)) from None
    return PgKeyStore(url, environment)


def open_byok_store(
    config: RuntimeConfig | None, environment: str, data_dir: Path, environ: Mapping[str, str]
) -> ByokStore | PgByokStore:
    """The BYOK store of `environment`: PostgreSQL when the config says so, else
    `<data_dir>/byok.db`; ByokError naming the problem and the fix."""
    if config is None or not uses_postgres(config):
        return ByokStore(data_dir / BYOK_DB, environment)
    from runtime.byok_pg import PgByokStore

    try:
        url = postgres_url(config, environ)
    except ValueError as exc:
        raise ByokError(str(exc)) from None
    return PgByokStore(url, environment)


def describe_store(config: RuntimeConfig | None, data_dir: Path, db: str) -> str:
    """Where a command's store is, for messages: the SQLite file, or PostgreSQL by the name
    of its URL secret (never the URL)."""
    if config is not None and uses_postgres(config):
        return f"PostgreSQL (${config.state.postgres_url_secret})"
    return str(data_dir / db)


def check_stores(config: RuntimeConfig, environ: Mapping[str, str]) -> str | None:
    """What keeps `serve` from using the configured key and BYOK stores (the URL secret
    unset, PostgreSQL unreachable, a schema newer than this gateway), or None. Opening them
    applies their migrations once, before any worker starts."""
    if not uses_postgres(config):
        return None
    try:
        open_key_store(config, config.environment, Path("."), environ).close()
        if any(o.byok_providers for o in config.orgs.values()):
            open_byok_store(config, config.environment, Path("."), environ).close()
    except (KeyStoreError, ByokError) as exc:
        return f"{exc} (state.keys)"
    return None
