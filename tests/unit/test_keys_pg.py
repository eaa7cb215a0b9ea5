"""Gateway keys in PostgreSQL (runtime/keys_pg.py) on a real server: the store's operations,
its change counter, environments sharing a database, migrations racing, the authenticator
over it (revocation within a second, an outage served from the last snapshot), the `keys`
commands with --config, and the URL never shown."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from runtime.cli import main
from runtime.config import RuntimeConfig, StateConfig
from runtime.keys import Authenticator, AuthError, KeyStoreError
from runtime.keys_pg import PgKeyStore
from runtime.stores import open_key_store
from tests.gateway_env import runtime_config
from tests.servers import PostgresServer, fresh_database

URL_VAR = "TEST_KEYS_PG_URL"
PASSWORD = "pw-never-shown-7c1e"  # trust auth ignores it; it must appear nowhere


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def pg_config(environment: str = "test") -> RuntimeConfig:
    config = runtime_config("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    config = replace(
        config,
        environment=environment,
        key_prefix=f"sy_{environment}_",
        key_environment=environment,
        state=StateConfig(keys_store="postgres", postgres_url_secret=URL_VAR),
    )
    return config.with_hash()


def test_create_get_list_revoke(postgres_url: str) -> None:
    with PgKeyStore(postgres_url, "production") as store:
        info, key = store.create("acme", "ci", expires_at=None)
        assert key.startswith(f"sy_production_{info.id}_")
        assert store.get(info.id) == info
        assert store.get("nosuchkey000") is None
        second, _ = store.create("acme", "ci-next", expires_at=time.time() + 3600)
        assert [i.id for i in store.list()] == [info.id, second.id]
        revoked = store.revoke(info.id)
        assert revoked.status() == "revoked"
        again = store.revoke(info.id)  # idempotent: the first revocation time stays
        assert again.revoked_at == revoked.revoked_at
        with pytest.raises(KeyStoreError, match="no key with id"):
            store.revoke("nosuchkey000")
        # Only the hash is stored: the secret is nowhere in the database.
        secret = key.rsplit("_", 1)[1]
        with psycopg.connect(postgres_url) as conn:
            dump = str(conn.execute("SELECT * FROM switchyard_keys").fetchall())
        assert secret not in dump


def test_every_change_bumps_the_version_and_reads_do_not(postgres_url: str) -> None:
    with PgKeyStore(postgres_url, "production") as store:
        v0 = store.data_version()
        info, _ = store.create("acme", "ci")
        v1 = store.data_version()
        assert v1 > v0
        store.list()
        store.get(info.id)
        assert store.data_version() == v1
        store.revoke(info.id)
        v2 = store.data_version()
        assert v2 > v1
        store.revoke(info.id)  # nothing changed
        assert store.data_version() == v2


def test_environments_sharing_a_database_see_only_their_keys(postgres_url: str) -> None:
    with (
        PgKeyStore(postgres_url, "production") as prod,
        PgKeyStore(postgres_url, "staging") as staging,
    ):
        p, _ = prod.create("acme", "ci")
        s, _ = staging.create("acme", "ci")
        assert [i.id for i in prod.list()] == [p.id]
        assert [i.id for i in staging.list()] == [s.id]
        assert staging.get(p.id) is None
        v = prod.data_version()
        with pytest.raises(KeyStoreError):
            staging.revoke(p.id)
        assert prod.get(p.id) is not None and prod.get(p.id).revoked_at is None
        staging.create("acme", "more")
        assert prod.data_version() == v  # staging's changes do not reload production


def test_stores_opening_at_once_on_an_empty_database_migrate_once(postgres_url: str) -> None:
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            barrier.wait()
            PgKeyStore(postgres_url, "production").close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT version FROM switchyard_migrations WHERE component = 'keys'"
        ).fetchall()
    assert rows == [(1,)]


def test_a_key_revoked_elsewhere_is_refused_within_a_second(postgres_url: str) -> None:
    with PgKeyStore(postgres_url, "production") as issuer:
        info, key = issuer.create("acme", "ci")
        auth = Authenticator(PgKeyStore(postgres_url, "production"), "production")
        auth.start_background_refresh(0.25)
        try:
            assert auth.verify(key).id == info.id
            issuer.revoke(info.id)
            t0 = time.monotonic()
            while True:
                try:
                    auth.verify(key)
                except AuthError as exc:
                    assert exc.code == "key_revoked"
                    break
                assert time.monotonic() - t0 < 1.0, "revocation not seen within a second"
                time.sleep(0.01)
            # A key created elsewhere is accepted as soon as it is seen, too.
            _, fresh = issuer.create("acme", "new")
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    auth.verify(fresh)
                    break
                except AuthError:
                    time.sleep(0.01)
            assert auth.verify(fresh).org == "acme"
        finally:
            auth.stop()


def test_an_outage_keeps_the_last_snapshot_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = PostgresServer.start()
    try:
        url = fresh_database(server.url)
        with PgKeyStore(url, "production") as issuer:
            info, key = issuer.create("acme", "ci")
        auth = Authenticator(PgKeyStore(url, "production"), "production")
        auth.start_background_refresh(0.1)
        try:
            caplog.set_level(logging.WARNING, logger="switchyard.keys")
            server.stop()
            time.sleep(1.0)  # several failed refreshes
            assert auth.verify(key).id == info.id  # still served from memory
            [warning] = auth.warnings()
            assert "key store unreachable" in warning
            failures = [r for r in caplog.records if "cannot refresh the keys" in r.message]
            assert len(failures) == 1, "an outage is logged once, not once per poll"
            server.resume()
            with PgKeyStore(url, "production") as issuer:
                issuer.revoke(info.id)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _refused(auth, key):
                time.sleep(0.05)
            assert _refused(auth, key)
            assert auth.warnings() == []
            assert any("readable again" in r.message for r in caplog.records)
        finally:
            auth.stop()
    finally:
        server.remove()


def _refused(auth: Authenticator, key: str) -> bool:
    try:
        auth.verify(key)
    except AuthError as exc:
        return exc.code == "key_revoked"
    return False


def test_errors_never_show_the_url_or_its_password() -> None:
    from tests.servers import free_port

    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(KeyStoreError) as caught:
        PgKeyStore(url, "production")
    assert "key store (PostgreSQL)" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_an_unset_url_secret_is_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError) as caught:
        open_key_store(pg_config(), "test", tmp_path, {})
    assert URL_VAR in str(caught.value) and "not set" in str(caught.value)
    # Without a config, or with the embedded default, the data dir's SQLite file.
    with open_key_store(None, "test", tmp_path, {}) as store:
        store.create("acme", "ci")
    assert (tmp_path / "keys.db").exists()


def test_keys_commands_use_the_configured_store(
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_path = tmp_path / "runtime.json"
    config_path.write_text(pg_config().to_json())
    monkeypatch.setenv(URL_VAR, with_password(postgres_url))
    data = tmp_path / "data"
    # --env comes from the config when left out.
    assert (
        main(["keys", "create", "--config", str(config_path), "--org", "acme", "--name", "ci"]) == 0
    )
    key = capsys.readouterr().out.strip()
    key_id = key.split("_")[2]
    with PgKeyStore(postgres_url, "test") as store:
        assert [i.id for i in store.list()] == [key_id]
    assert main(["keys", "list", "--config", str(config_path), "--json"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed
    # $SWITCHYARD_CONFIG is the default --config.
    monkeypatch.setenv("SWITCHYARD_CONFIG", str(config_path))
    assert main(["keys", "revoke", "--env", "test", "--data-dir", str(data), key_id]) == 0
    out = capsys.readouterr()
    assert f"revoked key {key_id}" in out.out
    with PgKeyStore(postgres_url, "test") as store:
        assert store.get(key_id).status() == "revoked"
    assert not data.exists(), "a PostgreSQL store leaves no SQLite file behind"
    assert PASSWORD not in out.out + out.err + listed
    # Another environment's config is refused, naming both.
    assert main(["keys", "list", "--env", "prod"]) == 1
    assert "not 'prod'" in capsys.readouterr().err
    # The secret unset: the variable is named.
    monkeypatch.delenv(URL_VAR)
    assert main(["keys", "list"]) == 1
    assert URL_VAR in capsys.readouterr().err


def test_keys_commands_without_config_need_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHYARD_CONFIG", raising=False)
    with pytest.raises(SystemExit) as caught:
        main(["keys", "list"])
    assert caught.value.code == 2
    assert "--env" in capsys.readouterr().err
    assert os.environ.get("SWITCHYARD_CONFIG") is None


def test_a_malformed_url_is_refused_without_quoting_it() -> None:
    with pytest.raises(KeyStoreError) as caught:
        PgKeyStore(f"postgresql://postgres:{PASSWORD}@[broken/db", "production")
    assert "not a valid connection string" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_connections_notice_a_silent_peer(postgres_url: str) -> None:
    # A network partition must not hang the refresh thread for TCP's ~15 minutes.
    with PgKeyStore(postgres_url, "production") as store:
        store.data_version()
        conn = store._connection()
        params = conn.info.get_parameters()
        assert params.get("keepalives") == "1"
        assert params.get("tcp_user_timeout") == "10000"
        (timeout,) = conn.execute("SHOW statement_timeout").fetchone()
        assert timeout == "5s"


class _HungStore:
    """A key source whose refresh never returns once `hang` is set (a wedged server)."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()

    def rows(self) -> list[tuple[object, str]]:
        return []

    def data_version(self) -> int:
        if self.hang.is_set():
            self.release.wait(60)
        return 0

    def close(self) -> None:
        pass


def test_stopping_is_not_held_by_a_refresh_stuck_on_the_store() -> None:
    store = _HungStore()
    auth = Authenticator(store, "production")  # type: ignore[arg-type]
    auth.start_background_refresh(0.05)
    store.hang.set()
    time.sleep(0.3)  # the refresh thread is now stuck inside data_version
    stopped = threading.Event()
    threading.Thread(target=lambda: (auth.stop(), stopped.set()), daemon=True).start()
    try:
        assert stopped.wait(10), "stop() hung behind the stuck refresh"
    finally:
        store.release.set()
