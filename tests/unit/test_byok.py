"""BYOK: an org's own provider credentials, sealed at rest, opened only with the org's secret.

The store and the gateway's cache are driven directly; the CLI through `runtime.cli.main`
(as `python -m runtime byok` runs it) and, where stdin and argv matter, as a real
`python -m runtime byok` subprocess.
"""

from __future__ import annotations

import getpass
import io
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runtime import cli as runtime_cli
from runtime.byok_cache import ByokCache
from runtime.byok_store import ByokError, ByokStore
from runtime.config import OrgConfig, RuntimeConfig, SecretSpec
from tests.gateway_env import ROOT, runtime_config

ENV = "test"
SECRET = "old-secret-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
NEW_SECRET = "new-secret-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
CREDENTIAL = "sk-PLAINTEXT-credential-4242424242"
OTHER_CREDENTIAL = "sk-ant-ANOTHER-credential-7777777777"
SECRET_VAR = "GLOBEX_BYOK_KEY"


def byok_config() -> RuntimeConfig:
    config = runtime_config(
        "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3", environment=ENV
    )
    globex = OrgConfig("globex", None, None, frozenset({"anthropic", "openai"}), SECRET_VAR)
    secret = SecretSpec(SECRET_VAR, "orgs.globex.byok.encryption_key", optional=False)
    return replace(
        config,
        orgs={**config.orgs, "globex": globex},
        secrets={**config.secrets, SECRET_VAR: secret},
    ).with_hash()


ORGS: dict[str, OrgConfig] = RuntimeConfig.from_json(byok_config().to_json()).orgs


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "byok.db"


@pytest.fixture
def store(db: Path) -> Iterator[ByokStore]:
    with ByokStore(db, ENV) as s:
        yield s


def raw_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM credentials ORDER BY org, provider, field").fetchall()


def sql(db: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(statement, params)
    conn.close()


# --- the store -----------------------------------------------------------------------------


def test_a_stored_credential_decrypts_with_the_org_secret(store: ByokStore) -> None:
    key = store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    assert store.decrypt_all({"globex": SECRET}) == {("globex", "openai"): {"api_key": CREDENTIAL}}
    [row] = store.list()
    assert (row.org, row.provider, row.field, row.fingerprint) == (
        "globex",
        "openai",
        "api_key",
        key.fingerprint,
    )
    assert len(key.fingerprint) == 12 and key.fingerprint == store.key(SECRET).fingerprint
    assert CREDENTIAL not in repr(row) and SECRET not in repr(key)


def test_setting_again_replaces_the_value_and_keeps_the_creation_time(store: ByokStore) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    [first] = store.list()
    store.set("globex", "openai", "api_key", OTHER_CREDENTIAL, SECRET)
    [second] = store.list()
    assert store.decrypt_all({"globex": SECRET}) == {
        ("globex", "openai"): {"api_key": OTHER_CREDENTIAL}
    }
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at


def test_neither_the_value_nor_the_secret_is_in_the_database_files(
    store: ByokStore, db: Path
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.set("globex", "anthropic", "api_key", OTHER_CREDENTIAL, SECRET)
    files = sorted(db.parent.glob("byok.db*"))
    assert db.with_name("byok.db-wal") in files  # written while the store is open
    blob = b"".join(f.read_bytes() for f in files)
    for text in (CREDENTIAL, OTHER_CREDENTIAL, SECRET):
        assert text.encode() not in blob
    assert store.key(SECRET).key not in blob


def test_the_store_is_private_to_its_owner(store: ByokStore, db: Path) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    for extra in db.parent.glob("byok.db-*"):
        assert stat.S_IMODE(extra.stat().st_mode) == 0o600


def test_each_seal_uses_a_fresh_nonce(store: ByokStore, db: Path) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    first = raw_rows(db)[0][3:5]
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    second = raw_rows(db)[0][3:5]
    assert first[0] != second[0] and first[1] != second[1]


def test_a_wrong_secret_is_reported_not_raised(store: ByokStore) -> None:
    key = store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    problems: list[str] = []
    assert store.decrypt_all({"globex": NEW_SECRET}, problems) == {}
    [problem] = problems
    assert "globex/openai api_key" in problem and f"sealed with key {key.fingerprint}" in problem
    assert "not the one that sealed it" in problem
    assert SECRET not in problem and NEW_SECRET not in problem and CREDENTIAL not in problem


def test_only_the_orgs_given_a_secret_are_decrypted(store: ByokStore) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.set("acme", "openai", "api_key", OTHER_CREDENTIAL, NEW_SECRET)
    assert store.decrypt_all({"acme": NEW_SECRET}) == {
        ("acme", "openai"): {"api_key": OTHER_CREDENTIAL}
    }


@pytest.mark.parametrize(
    ("org", "provider", "field"),
    [
        ("acme", "openai", "api_key"),
        ("globex", "anthropic", "api_key"),
        ("globex", "openai", "organization"),
    ],
)
def test_a_ciphertext_moved_to_another_row_does_not_decrypt(
    store: ByokStore, db: Path, org: str, provider: str, field: str
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.set(
        org, provider, field, "placeholder-value", SECRET
    )  # same key, so only the place differs
    sql(
        db,
        "UPDATE credentials SET (nonce, ciphertext) = (SELECT nonce, ciphertext FROM credentials"
        " WHERE org = 'globex' AND provider = 'openai' AND field = 'api_key')"
        " WHERE org = ? AND provider = ? AND field = ?",
        org,
        provider,
        field,
    )
    problems: list[str] = []
    opened = store.decrypt_all({"globex": SECRET, "acme": SECRET}, problems)
    assert opened.get((org, provider), {}).get(field) is None
    assert opened[("globex", "openai")]["api_key"] == CREDENTIAL
    assert problems == [
        f"BYOK credential {org}/{provider} {field} does not decrypt "
        "(tampered with or copied from another row)"
    ]


def test_a_store_copied_to_another_environment_does_not_decrypt(
    store: ByokStore, db: Path, tmp_path: Path
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.close()
    copy = tmp_path / "prod" / "byok.db"
    copy.parent.mkdir()
    src = sqlite3.connect(db)
    dst = sqlite3.connect(copy)
    src.backup(dst)  # same salt and rows; only the environment differs
    src.close()
    with dst:
        dst.execute("UPDATE meta SET value = 'prod' WHERE key = 'environment'")
    dst.close()
    with ByokStore(copy, "prod") as prod:
        problems: list[str] = []
        assert prod.decrypt_all({"globex": SECRET}, problems) == {}
        assert "does not decrypt" in problems[0]


def test_a_tampered_ciphertext_is_reported(store: ByokStore, db: Path) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    ct = bytearray(raw_rows(db)[0][4])
    ct[0] ^= 1
    sql(db, "UPDATE credentials SET ciphertext = ?", bytes(ct))
    problems: list[str] = []
    assert store.decrypt_all({"globex": SECRET}, problems) == {}
    assert len(problems) == 1 and "does not decrypt" in problems[0]


def test_a_short_encryption_secret_is_refused_with_the_way_to_make_one(store: ByokStore) -> None:
    with pytest.raises(ByokError) as info:
        store.set("globex", "openai", "api_key", CREDENTIAL, "x" * 31)
    assert "shorter than 32 characters" in str(info.value)
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))'" in str(info.value)
    assert "x" * 31 not in str(info.value)
    assert store.list() == []


def test_an_org_keeps_one_key_for_all_its_credentials(store: ByokStore) -> None:
    key = store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    with pytest.raises(ByokError, match=f"sealed with key {key.fingerprint}.*byok rotate"):
        store.set("globex", "anthropic", "api_key", OTHER_CREDENTIAL, NEW_SECRET)


def test_a_store_of_another_environment_is_refused(store: ByokStore, db: Path) -> None:
    store.close()
    with pytest.raises(ByokError, match="belongs to environment 'test', not 'prod'"):
        ByokStore(db, "prod")


def test_delete_removes_every_field_of_the_provider(store: ByokStore) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.set("globex", "openai", "organization", "org-123", SECRET)
    store.set("globex", "anthropic", "api_key", OTHER_CREDENTIAL, SECRET)
    assert store.delete("globex", "openai") == 2
    assert store.delete("globex", "openai") == 0
    assert [(r.org, r.provider) for r in store.list()] == [("globex", "anthropic")]


# --- rotation ------------------------------------------------------------------------------


def test_rotation_reseals_with_the_new_secret_and_the_old_one_stops_working(
    store: ByokStore,
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.set("globex", "anthropic", "api_key", OTHER_CREDENTIAL, SECRET)
    store.set("acme", "openai", "api_key", "acme-own-key", NEW_SECRET)
    assert store.rotate("globex", SECRET, NEW_SECRET) == 2
    assert store.decrypt_all({"globex": NEW_SECRET}) == {
        ("globex", "anthropic"): {"api_key": OTHER_CREDENTIAL},
        ("globex", "openai"): {"api_key": CREDENTIAL},
    }
    problems: list[str] = []
    assert store.decrypt_all({"globex": SECRET}, problems) == {}
    assert len(problems) == 2
    new = store.key(NEW_SECRET).fingerprint
    assert {r.fingerprint for r in store.list()} == {new}
    assert store.rotate("globex", SECRET, NEW_SECRET) == 0  # a second run has nothing to do


def test_rotation_with_a_wrong_old_secret_changes_nothing(store: ByokStore, db: Path) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    before = raw_rows(db)
    with pytest.raises(ByokError, match="nothing rotated"):
        store.rotate("globex", "wrong-secret-CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", NEW_SECRET)
    assert raw_rows(db) == before
    assert store.decrypt_all({"globex": SECRET}) == {("globex", "openai"): {"api_key": CREDENTIAL}}


def test_rotation_is_all_or_nothing(store: ByokStore, db: Path) -> None:
    store.set("globex", "anthropic", "api_key", OTHER_CREDENTIAL, SECRET)
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)  # rotated second: tamper with it
    sql(db, "UPDATE credentials SET ciphertext = zeroblob(40) WHERE provider = 'openai'")
    before = raw_rows(db)
    with pytest.raises(ByokError, match="nothing rotated: BYOK credential globex/openai api_key"):
        store.rotate("globex", SECRET, NEW_SECRET)
    assert raw_rows(db) == before


def test_rotation_to_the_same_secret_is_refused(store: ByokStore) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    with pytest.raises(ByokError, match="the same"):
        store.rotate("globex", SECRET, SECRET)


# --- the gateway's cache -------------------------------------------------------------------


@pytest.fixture
def cache_factory(db: Path) -> Iterator[Any]:
    made: list[ByokCache] = []

    def make(environ: dict[str, str] | None = None) -> ByokCache:
        cache = ByokCache(db, ENV, ORGS, {SECRET_VAR: SECRET} if environ is None else environ)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.stop()


def test_the_cache_serves_only_providers_the_org_may_bring(
    store: ByokStore, cache_factory: Any
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    store.set("globex", "gemini", "api_key", OTHER_CREDENTIAL, SECRET)  # not in globex's byok list
    store.set("acme", "openai", "api_key", "acme-key", SECRET)  # acme has no byok
    cache = cache_factory()
    assert cache.credentials("globex", "openai") == {"api_key": CREDENTIAL}
    assert cache.credentials("globex", "gemini") is None
    assert cache.credentials("acme", "openai") is None
    assert cache.credentials("globex", "anthropic") is None
    assert cache.problems() == []


def test_the_cache_hands_out_copies(store: ByokStore, cache_factory: Any) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    cache = cache_factory()
    got = cache.credentials("globex", "openai")
    assert got is not None
    got["api_key"] = "changed"
    assert cache.credentials("globex", "openai") == {"api_key": CREDENTIAL}


@pytest.mark.parametrize("environ", [{}, {SECRET_VAR: "too-short"}])
def test_an_org_without_a_usable_secret_gets_no_credentials(
    store: ByokStore, cache_factory: Any, environ: dict[str, str]
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    cache = cache_factory(environ)
    assert cache.credentials("globex", "openai") is None
    [problem] = cache.problems()
    assert "org globex" in problem and SECRET_VAR in problem and "not used" in problem
    assert "too-short" not in problem


def test_a_wrong_secret_is_a_problem_of_the_cache_not_a_crash(
    store: ByokStore, cache_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    with caplog.at_level(logging.DEBUG):
        cache = cache_factory({SECRET_VAR: NEW_SECRET})
    assert cache.credentials("globex", "openai") is None
    assert len(cache.problems()) == 1 and "globex/openai" in cache.problems()[0]
    assert "globex/openai" in caplog.text
    for text in (CREDENTIAL, SECRET, NEW_SECRET):
        assert text not in caplog.text


def test_background_refresh_picks_up_new_and_deleted_credentials(
    db: Path, cache_factory: Any
) -> None:
    cache = cache_factory()
    cache.start_background_refresh(0.02)
    with ByokStore(db, ENV) as writer:
        writer.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
        assert wait_for(lambda: cache.credentials("globex", "openai") == {"api_key": CREDENTIAL})
        writer.delete("globex", "openai")
        assert wait_for(lambda: cache.credentials("globex", "openai") is None)


def test_after_a_rotation_the_gateway_keeps_the_values_it_read(
    db: Path, store: ByokStore, cache_factory: Any
) -> None:
    store.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    cache = cache_factory()  # still holds the old secret
    store.rotate("globex", SECRET, NEW_SECRET)
    assert cache.refresh()
    assert cache.credentials("globex", "openai") == {"api_key": CREDENTIAL}
    assert "not the one that sealed it" in cache.problems()[0]
    restarted = cache_factory({SECRET_VAR: NEW_SECRET})
    assert restarted.credentials("globex", "openai") == {"api_key": CREDENTIAL}
    assert restarted.problems() == []


def test_a_cache_without_byok_orgs_touches_no_file(tmp_path: Path) -> None:
    orgs = {oid: org for oid, org in ORGS.items() if not org.byok_providers}
    cache = ByokCache(tmp_path / "none" / "byok.db", ENV, orgs, {})
    cache.start_background_refresh(0.01)
    assert cache.credentials("acme", "openai") is None and cache.problems() == []
    cache.stop()
    assert not (tmp_path / "none").exists()


def wait_for(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "runtime.json"
    path.write_text(byok_config().to_json())
    return str(path)


@pytest.fixture
def data(tmp_path: Path) -> str:
    return str(tmp_path / "data")


def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = runtime_cli.main(["byok", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_cli(
    *argv: str, stdin: str = "", environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (SECRET_VAR, "SWITCHYARD_DATA_DIR")}
    env.update(environ or {})
    return subprocess.run(
        [sys.executable, "-m", "runtime", "byok", *argv],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def stored(data: str) -> dict[tuple[str, str], dict[str, str]]:
    with ByokStore(Path(data) / "byok.db", ENV) as s:
        return s.decrypt_all({"globex": SECRET})


def test_set_reads_the_value_from_stdin_and_never_shows_it(config: str, data: str) -> None:
    proc = subprocess_cli(
        "set",
        "--env",
        ENV,
        "--org",
        "globex",
        "--provider",
        "openai",
        "--config",
        config,
        "--data-dir",
        data,
        stdin=CREDENTIAL + "\n",
        environ={SECRET_VAR: SECRET},
    )
    assert proc.returncode == 0, proc.stderr
    with ByokStore(Path(data) / "byok.db", ENV) as s:
        fingerprint = s.key(SECRET).fingerprint
    assert proc.stdout == f"stored api_key for globex/openai (sealed with key {fingerprint})\n"
    assert CREDENTIAL not in proc.stdout + proc.stderr and SECRET not in proc.stdout + proc.stderr
    assert stored(data) == {("globex", "openai"): {"api_key": CREDENTIAL}}


def test_a_value_on_the_command_line_is_refused_without_being_echoed(
    config: str, data: str
) -> None:
    proc = subprocess_cli(
        "set",
        "--env",
        ENV,
        "--org",
        "globex",
        "--provider",
        "openai",
        "--config",
        config,
        "--data-dir",
        data,
        CREDENTIAL,
        environ={SECRET_VAR: SECRET},
    )
    assert proc.returncode == 1
    assert "read from stdin, never from the command line" in proc.stderr
    assert CREDENTIAL not in proc.stdout + proc.stderr
    assert not (Path(data) / "byok.db").exists()


def test_set_prompts_without_echo_on_a_terminal(
    config: str, data: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    monkeypatch.setenv(SECRET_VAR, SECRET)
    monkeypatch.setattr(sys, "stdin", Terminal())

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return CREDENTIAL

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    code = runtime_cli.main(
        [
            "byok",
            "set",
            "--env",
            ENV,
            "--org",
            "globex",
            "--provider",
            "anthropic",
            "--config",
            config,
            "--data-dir",
            data,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert prompts == ["api_key for globex/anthropic (not echoed): "]
    assert CREDENTIAL not in out + err
    assert stored(data) == {("globex", "anthropic"): {"api_key": CREDENTIAL}}


@pytest.mark.parametrize(
    ("org", "provider", "field", "stdin", "message"),
    [
        ("acme", "openai", "api_key", CREDENTIAL, "org 'acme' has no byok in"),
        ("initech", "openai", "api_key", CREDENTIAL, "org 'initech' is not in"),
        ("globex", "gemini", "api_key", CREDENTIAL, "may not bring its own 'gemini' credentials"),
        (
            "globex",
            "openai",
            "password",
            CREDENTIAL,
            "takes the credential field(s) api_key, not 'password'",
        ),
        ("globex", "openai", "api_key", "", "no credential on stdin"),
        ("globex", "openai", "api_key", "line one\nline two\n", "several lines"),
    ],
)
def test_set_refuses(
    config: str,
    data: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    org: str,
    provider: str,
    field: str,
    stdin: str,
    message: str,
) -> None:
    monkeypatch.setenv(SECRET_VAR, SECRET)
    code, out, err = cli(
        capsys,
        monkeypatch,
        "set",
        "--env",
        ENV,
        "--org",
        org,
        "--provider",
        provider,
        "--field",
        field,
        "--config",
        config,
        "--data-dir",
        data,
        stdin=stdin,
    )
    assert code == 1 and out == ""
    assert message in err
    assert CREDENTIAL not in err
    assert not (Path(data) / "byok.db").exists() or stored(data) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "is not set in the environment"), ("tiny-secret-value", "shorter than 32")],
)
def test_set_refuses_without_a_usable_encryption_secret(
    config: str,
    data: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
    message: str,
) -> None:
    if value is None:
        monkeypatch.delenv(SECRET_VAR, raising=False)
    else:
        monkeypatch.setenv(SECRET_VAR, value)
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
        "--config",
        config,
        "--data-dir",
        data,
        stdin=CREDENTIAL,
    )
    assert code == 1
    assert (
        f"the encryption secret {SECRET_VAR} (orgs.globex.byok.encryption_key)" in err
        and message in err
    )
    assert "secrets.token_urlsafe(32)" in err
    assert "tiny-secret-value" not in err and CREDENTIAL not in err


def test_set_refuses_a_config_of_another_environment(
    config: str, data: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_VAR, SECRET)
    code, _, err = cli(
        capsys,
        monkeypatch,
        "set",
        "--env",
        "prod",
        "--org",
        "globex",
        "--provider",
        "openai",
        "--config",
        config,
        "--data-dir",
        data,
        stdin=CREDENTIAL,
    )
    assert code == 1 and "is the config of environment 'test', not 'prod'" in err


def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    code, _, err = cli(
        capsys, monkeypatch, "set", "--env", ENV, "--provider", "openai", "--config", config
    )
    assert code == 2 and "--org" in err


def test_list_shows_rows_but_never_values(
    config: str, data: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = cli(capsys, monkeypatch, "list", "--env", ENV, "--data-dir", data)
    assert code == 0 and out == "" and "no BYOK credentials" in err
    with ByokStore(Path(data) / "byok.db", ENV) as s:
        fingerprint = s.set("globex", "openai", "api_key", CREDENTIAL, SECRET).fingerprint
    code, out, _ = cli(capsys, monkeypatch, "list", "--env", ENV, "--data-dir", data)
    assert code == 0
    assert out.splitlines()[0].split() == ["org", "provider", "field", "key", "updated"]
    assert ["globex", "openai", "api_key", fingerprint] == out.splitlines()[-1].split()[:4]
    code, out, _ = cli(capsys, monkeypatch, "list", "--env", ENV, "--data-dir", data, "--json")
    [row] = json.loads(out)
    assert (row["org"], row["provider"], row["field"], row["fingerprint"]) == (
        "globex",
        "openai",
        "api_key",
        fingerprint,
    )
    assert CREDENTIAL not in out


def test_delete(
    config: str, data: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with ByokStore(Path(data) / "byok.db", ENV) as s:
        s.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
    code, out, _ = cli(
        capsys,
        monkeypatch,
        "delete",
        "--env",
        ENV,
        "--org",
        "globex",
        "--provider",
        "openai",
        "--data-dir",
        data,
    )
    assert code == 0 and "deleted 1 credential field(s) of globex/openai" in out
    code, _, err = cli(
        capsys,
        monkeypatch,
        "delete",
        "--env",
        ENV,
        "--org",
        "globex",
        "--provider",
        "openai",
        "--data-dir",
        data,
    )
    assert code == 1 and "nothing stored for globex/openai" in err
    assert stored(data) == {}


def test_rotate_through_the_cli(
    config: str, data: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with ByokStore(Path(data) / "byok.db", ENV) as s:
        s.set("globex", "openai", "api_key", CREDENTIAL, SECRET)
        new_fingerprint = s.key(NEW_SECRET).fingerprint
    monkeypatch.setenv(SECRET_VAR, NEW_SECRET)
    monkeypatch.setenv("OLD_BYOK", "wrong-secret-CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC")
    args = (
        "rotate",
        "--env",
        ENV,
        "--org",
        "globex",
        "--config",
        config,
        "--data-dir",
        data,
        "--old-secret-env",
        "OLD_BYOK",
    )
    code, _, err = cli(capsys, monkeypatch, *args)
    assert code == 1 and "nothing rotated" in err
    assert stored(data) == {("globex", "openai"): {"api_key": CREDENTIAL}}
    monkeypatch.setenv("OLD_BYOK", SECRET)
    code, out, err = cli(capsys, monkeypatch, *args)
    assert code == 0, err
    assert out == f"re-encrypted 1 credential field(s) of org globex with key {new_fingerprint}\n"
    assert stored(data) == {}
    with ByokStore(Path(data) / "byok.db", ENV) as s:
        assert s.decrypt_all({"globex": NEW_SECRET}) == {
            ("globex", "openai"): {"api_key": CREDENTIAL}
        }
    for text in (SECRET, NEW_SECRET, CREDENTIAL):
        assert text not in out + err


def test_rotate_names_a_missing_old_secret_variable(
    config: str, data: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_VAR, NEW_SECRET)
    monkeypatch.delenv("OLD_BYOK", raising=False)
    code, _, err = cli(
        capsys,
        monkeypatch,
        "rotate",
        "--env",
        ENV,
        "--org",
        "globex",
        "--config",
        config,
        "--data-dir",
        data,
        "--old-secret-env",
        "OLD_BYOK",
    )
    assert code == 1 and "the variable OLD_BYOK is not set" in err
