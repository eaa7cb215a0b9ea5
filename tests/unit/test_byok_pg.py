"""BYOK credentials in PostgreSQL (runtime/byok_pg.py) on a real server: sealed exactly as in
SQLite, one key per org, rotation all or nothing, environments apart, the gateway's cache
picking changes up, and the `byok` commands against the configured store — never showing a
value, a secret or the URL."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from cryptography.exceptions import InvalidTag

from runtime import cli as runtime_cli
from runtime.byok_cache import ByokCache
from runtime.byok_pg import PgByokStore
from runtime.byok_store import ByokError, derive_key, unseal
from runtime.config import RuntimeConfig, StateConfig
from runtime.stores import open_byok_store
from tests.servers import PostgresServer, fresh_database
from tests.unit.test_byok import (
    CREDENTIAL,
    ENV,
    NEW_SECRET,
    ORGS,
    OTHER_CREDENTIAL,
    SECRET,
    SECRET_VAR,
    byok_config,
)

URL_VAR = "TEST_BYOK_PG_URL"
PASSWORD = "pw-never-shown-9d2b"


@pytest.fixture
def store(postgres_url: str) -> Iterator[PgByokStore]:
    with PgByokStore(postgres_url, ENV) as s:
        yield s


def dump(url: str) -> str:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT * FROM switchyard_byok").fetchall()
        meta = conn.execute("SELECT * FROM switchyard_byok_meta").fetchall()
    return repr(rows) + repr(meta)


def test_set_list_decrypt_delete(store: PgByokStore, postgres_url: str) -> None:
    key = store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.set("globex", "anthropic", "api_key", OTHER_CREDENTIAL, SECRET)
    assert [(r.org, r.provider, r.field, r.fingerprint) for r in store.list()] == [
        ("globex", "anthropic", "api_key", key.fingerprint),
        ("globex", "openai", "api_key", key.fingerprint),
    ]
    assert store.decrypt_all({"globex": SECRET}) == {
        ("globex", "anthropic"): {"api_key": OTHER_CREDENTIAL},
        ("globex", "openai"): {"api_key": CREDENTIAL},
    }
    assert CREDENTIAL not in dump(postgres_url) and SECRET not in dump(postgres_url)
    assert store.delete("globex", "openai") == 1
    assert store.delete("globex", "openai") == 0
    assert list(store.decrypt_all({"globex": SECRET})) == [("globex", "anthropic")]


def test_sealed_exactly_as_in_sqlite(store: PgByokStore, postgres_url: str) -> None:
    # AES-256-GCM under HKDF(secret, the environment's salt), bound to environment, org,
    # provider and field: byok_store's own `unseal` opens a PostgreSQL row.
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    with psycopg.connect(postgres_url) as conn:
        (salt,) = conn.execute("SELECT salt FROM switchyard_byok_meta").fetchone()
        nonce, ct = conn.execute("SELECT nonce, ciphertext FROM switchyard_byok").fetchone()
    key = derive_key(SECRET, bytes.fromhex(salt))
    assert unseal(key, ENV, "globex", "openai", "api_key", nonce, ct) == CREDENTIAL
    with pytest.raises(InvalidTag):  # another place does not open
        unseal(key, ENV, "globex", "anthropic", "api_key", nonce, ct)
    # A row copied to another org is reported, never served.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO switchyard_byok SELECT environment, 'initech', provider, field, nonce,"
            " ciphertext, fingerprint, created_at, updated_at FROM switchyard_byok"
        )
    problems: list[str] = []
    opened = store.decrypt_all({"globex": SECRET, "initech": SECRET}, problems)
    assert opened == {("globex", "openai"): {"api_key": CREDENTIAL}}
    assert len(problems) == 1 and "initech/openai" in problems[0]
    assert CREDENTIAL not in problems[0]


def test_one_key_per_org_and_rotation_all_or_nothing(store: PgByokStore) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    with pytest.raises(ByokError, match="byok rotate"):
        store.set("globex", "anthropic", "api_key", OTHER_CREDENTIAL, NEW_SECRET)
    with pytest.raises(ByokError, match="nothing rotated"):
        store.rotate("globex", "wrong-old-secret-" + "x" * 20, NEW_SECRET)
    assert store.decrypt_all({"globex": SECRET}) == {("globex", "openai"): {"api_key": CREDENTIAL}}
    v = store.data_version()
    assert store.rotate("globex", SECRET, NEW_SECRET) == 1
    assert store.data_version() > v
    assert store.decrypt_all({"globex": NEW_SECRET}) == {
        ("globex", "openai"): {"api_key": CREDENTIAL}
    }
    assert store.rotate("globex", SECRET, NEW_SECRET) == 0  # already under the new key


def test_every_change_bumps_the_version(store: PgByokStore) -> None:
    v0 = store.data_version()
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    v1 = store.data_version()
    store.list()
    store.decrypt_all({"globex": SECRET})
    assert v0 < v1 == store.data_version()
    store.delete("globex", "openai")
    assert store.data_version() > v1


def test_environments_apart_in_one_database(postgres_url: str) -> None:
    with PgByokStore(postgres_url, "prod") as prod, PgByokStore(postgres_url, ENV) as test:
        prod.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
        assert test.list() == []
        assert test.key(SECRET).fingerprint != prod.key(SECRET).fingerprint  # own salts
        assert test.delete("globex", "openai") == 0
        assert prod.decrypt_all({"globex": SECRET}) != {}


def test_migrations_once_when_stores_open_together(postgres_url: str) -> None:
    import threading

    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    salts: list[str] = []

    def open_one() -> None:
        try:
            barrier.wait()
            with PgByokStore(postgres_url, ENV) as s:
                salts.append(s.key(SECRET).fingerprint)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(salts)) == 1  # one salt for the environment


def test_the_cache_picks_changes_up(postgres_url: str) -> None:
    with PgByokStore(postgres_url, ENV) as writer:
        cache = ByokCache(PgByokStore(postgres_url, ENV), ENV, ORGS, {SECRET_VAR: SECRET})
        cache.start_background_refresh(0.1)
        try:
            assert cache.credentials("globex", "openai") is None
            writer.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
            deadline = time.monotonic() + 2
            while cache.credentials("globex", "openai") is None:
                assert time.monotonic() < deadline, "the change was not picked up"
                time.sleep(0.02)
            assert cache.credentials("globex", "openai") == {"api_key": CREDENTIAL}
            writer.delete("globex", "openai")
            deadline = time.monotonic() + 2
            while cache.credentials("globex", "openai") is not None:
                assert time.monotonic() < deadline, "the deletion was not picked up"
                time.sleep(0.02)
        finally:
            cache.stop()


def test_the_cache_serves_the_last_credentials_while_postgres_is_down() -> None:
    server = PostgresServer.start()
    try:
        url = fresh_database(server.url)
        with PgByokStore(url, ENV) as writer:
            writer.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
        cache = ByokCache(PgByokStore(url, ENV), ENV, ORGS, {SECRET_VAR: SECRET})
        cache.start_background_refresh(0.1)
        try:
            server.stop()
            time.sleep(0.8)
            assert cache.credentials("globex", "openai") == {"api_key": CREDENTIAL}
            assert any("BYOK store unreachable" in p for p in cache.problems())
            server.resume()
            with PgByokStore(url, ENV) as writer:
                writer.delete("globex", "openai")
            deadline = time.monotonic() + 10
            while cache.credentials("globex", "openai") is not None:
                assert time.monotonic() < deadline, "no recovery after PostgreSQL came back"
                time.sleep(0.05)
            assert not any("unreachable" in p for p in cache.problems())
        finally:
            cache.stop()
    finally:
        server.remove()


def test_a_cache_with_no_usable_secret_releases_the_store(postgres_url: str) -> None:
    store = PgByokStore(postgres_url, ENV)
    cache = ByokCache(store, ENV, ORGS, {})
    assert store._db._conn is None  # closed: the cache will never read it
    assert any(SECRET_VAR in p for p in cache.problems())
    cache.stop()


# --- the commands -------------------------------------------------------------------------


def pg_config() -> RuntimeConfig:
    return replace(
        byok_config(), state=StateConfig(keys_store="postgres", postgres_url_secret=URL_VAR)
    ).with_hash()


def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = runtime_cli.main(["byok", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_byok_commands_against_postgres(
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "runtime.json"
    config.write_text(pg_config().to_json())
    data = tmp_path / "data"
    monkeypatch.setenv(URL_VAR, postgres_url.replace("postgres@", f"postgres:{PASSWORD}@"))
    monkeypatch.setenv(SECRET_VAR, SECRET)
    monkeypatch.delenv("SWITCHYARD_CONFIG", raising=False)
    seen = ""
    code, out, err = cli(
        capsys,
        monkeypatch,
        "set",
        "--config",
        str(config),
        "--data-dir",
        str(data),
        "--org",
        "globex",
        "--provider",
        "openai",
        stdin=CREDENTIAL + "\n",
    )
    seen += out + err
    assert code == 0, err
    with PgByokStore(postgres_url, ENV) as s:
        assert s.decrypt_all({"globex": SECRET}) == {("globex", "openai"): {"api_key": CREDENTIAL}}
    code, out, err = cli(capsys, monkeypatch, "list", "--config", str(config), "--json")
    seen += out + err
    assert code == 0 and '"openai"' in out
    monkeypatch.setenv("OLD_SECRET", SECRET)
    monkeypatch.setenv(SECRET_VAR, NEW_SECRET)
    code, out, err = cli(
        capsys,
        monkeypatch,
        "rotate",
        "--config",
        str(config),
        "--org",
        "globex",
        "--old-secret-env",
        "OLD_SECRET",
    )
    seen += out + err
    assert code == 0 and "re-encrypted 1" in out, err
    with PgByokStore(postgres_url, ENV) as s:
        assert s.decrypt_all({"globex": NEW_SECRET}) != {}
    code, out, err = cli(
        capsys,
        monkeypatch,
        "delete",
        "--config",
        str(config),
        "--org",
        "globex",
        "--provider",
        "openai",
    )
    seen += out + err
    assert code == 0 and "deleted 1" in out
    code, out, err = cli(capsys, monkeypatch, "list", "--config", str(config))
    seen += out + err
    assert code == 0 and f"PostgreSQL (${URL_VAR})" in err
    assert not data.exists()
    for hidden in (CREDENTIAL, SECRET, NEW_SECRET, PASSWORD):
        assert hidden not in seen
    # set without a config: refused, naming --config.
    code, _, err = cli(
        capsys,
        monkeypatch,
        "set",
        "--env",
        ENV,
        "--org",
        "globex",
        "--provider",
        "openai",
        stdin=CREDENTIAL,
    )
    assert code == 1 and "--config is required" in err


def test_an_unset_url_secret_is_named(tmp_path: Path) -> None:
    with pytest.raises(ByokError) as caught:
        open_byok_store(pg_config(), ENV, tmp_path, {})
    assert URL_VAR in str(caught.value)
