"""Gateway keys: issued per environment, shown once, stored only as hashes, verified in memory."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.keys import (
    Authenticator,
    AuthError,
    KeyStore,
    KeyStoreError,
    key_hash,
    parse_key,
    token_from_headers,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keys.db"


@pytest.fixture
def store(db: Path) -> Iterator[KeyStore]:
    with KeyStore(db, "production") as s:
        yield s


@pytest.fixture
def auth(db: Path, store: KeyStore) -> Iterator[Authenticator]:
    a = Authenticator(db, "production", "sy_production_")
    yield a
    a.stop()


def refused(auth: Authenticator, token: str | None) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.verify(token)
    return info.value


# --- issuing -------------------------------------------------------------------------------


def test_a_created_key_has_the_environment_prefix_and_a_public_key_id(store: KeyStore) -> None:
    info, key = store.create("acme", "ci", None)
    env, key_id, secret = parse_key(key) or ("", "", "")
    assert key.startswith("sy_production_")
    assert (env, key_id) == ("production", info.id)
    assert len(key_id) == 12 and key_id.isalnum() and key_id == key_id.lower()
    assert len(secret) == 40 and secret.isalnum()
    assert (info.org, info.name, info.environment) == ("acme", "ci", "production")
    assert info.status() == "active"


def test_only_the_hash_is_stored_never_the_secret(db: Path, store: KeyStore) -> None:
    info, key = store.create("acme", "ci", None)
    _, key_id, secret = parse_key(key) or ("", "", "")
    store.close()
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith("keys.db"))
    assert secret.encode() not in raw
    assert key.encode() not in raw
    assert key_hash(key_id, secret).encode() in raw
    assert info.id.encode() in raw


def test_the_database_is_private_to_its_owner(db: Path, store: KeyStore) -> None:
    store.create("acme", "ci", None)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    for sidecar in db.parent.glob("keys.db-*"):
        assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar


def test_list_shows_every_key_with_its_status(store: KeyStore) -> None:
    active, _ = store.create("acme", "ci", None)
    expired, _ = store.create("acme", "old", time.time() - 1)
    revoked, _ = store.create("globex", "web", None)
    store.revoke(revoked.id)
    statuses = {info.id: info.status() for info in store.list()}
    assert statuses == {active.id: "active", expired.id: "expired", revoked.id: "revoked"}


def test_revoke_is_idempotent_and_keeps_the_first_revocation_time(store: KeyStore) -> None:
    info, _ = store.create("acme", "ci", None)
    first = store.revoke(info.id)
    assert first.revoked_at is not None
    assert store.revoke(info.id).revoked_at == first.revoked_at


def test_revoking_an_unknown_key_is_an_error(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="no key with id 'nosuchkey000'"):
        store.revoke("nosuchkey000")


def test_a_store_of_another_environment_is_refused(db: Path, store: KeyStore) -> None:
    store.create("acme", "ci", None)
    with pytest.raises(KeyStoreError, match="belongs to environment 'production', not 'staging'"):
        KeyStore(db, "staging")


# --- verifying -----------------------------------------------------------------------------


def test_a_valid_key_verifies_to_its_info(store: KeyStore, auth: Authenticator) -> None:
    info, key = store.create("acme", "ci", None)
    auth.refresh()
    assert auth.verify(key) == info


def test_missing_and_malformed_keys(auth: Authenticator) -> None:
    assert refused(auth, None).code == "missing_api_key"
    assert refused(auth, "").code == "missing_api_key"
    assert refused(auth, "sk-openai-looking-key").code == "invalid_api_key"
    assert refused(auth, "sy_production_short_x").code == "invalid_api_key"


def test_a_wrong_secret_is_invalid(store: KeyStore, auth: Authenticator) -> None:
    _, key = store.create("acme", "ci", None)
    auth.refresh()
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert refused(auth, forged).code == "invalid_api_key"


def test_an_unknown_key_id_is_invalid(auth: Authenticator) -> None:
    assert refused(auth, "sy_production_abcdefghijkl_" + "x" * 40).code == "invalid_api_key"


def test_a_key_of_another_environment_says_which_without_echoing_it(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "staging" / "keys.db", "staging") as staging:
        _, key = staging.create("acme", "ci", None)
    auth = Authenticator(tmp_path / "production" / "keys.db", "production", "sy_production_")
    try:
        err = refused(auth, key)
    finally:
        auth.stop()
    assert err.code == "key_wrong_environment"
    assert err.message == (
        "this key belongs to environment 'staging'; this gateway serves 'production'"
    )
    assert key not in err.message and key.split("_")[-1] not in err.message
    assert err.gateway_error().status == 401


def test_revoked_and_expired_keys(store: KeyStore, auth: Authenticator) -> None:
    _, expired = store.create("acme", "ci", time.time() + 0.2)
    revoked_info, revoked = store.create("acme", "web", None)
    store.revoke(revoked_info.id)
    auth.refresh()
    assert refused(auth, revoked).code == "key_revoked"
    auth.verify(expired)
    time.sleep(0.25)
    assert refused(auth, expired).code == "key_expired"


def test_two_keys_of_one_org_and_name_are_both_active_during_rotation(
    store: KeyStore, auth: Authenticator
) -> None:
    old_info, old = store.create("acme", "ci", None)
    new_info, new = store.create("acme", "ci", None)
    auth.refresh()
    assert auth.verify(old).id == old_info.id
    assert auth.verify(new).id == new_info.id
    store.revoke(old_info.id)
    auth.refresh()
    assert refused(auth, old).code == "key_revoked"
    assert auth.verify(new).id == new_info.id


def test_verify_does_no_io_it_reads_the_snapshot(store: KeyStore, auth: Authenticator) -> None:
    _, key = store.create("acme", "ci", None)
    auth.refresh()
    auth._store.close()  # any database access from verify would now raise
    auth.verify(key)
    assert refused(auth, "sy_production_abcdefghijkl_" + "x" * 40).code == "invalid_api_key"


def test_refresh_reloads_only_when_the_store_changed(store: KeyStore, auth: Authenticator) -> None:
    assert auth.refresh() is False
    store.create("acme", "ci", None)
    assert auth.refresh() is True
    assert auth.refresh() is False


def test_background_refresh_picks_up_new_and_revoked_keys(
    store: KeyStore, auth: Authenticator
) -> None:
    auth.start_background_refresh(interval=0.05)
    info, key = store.create("acme", "ci", None)
    wait_until(lambda: accepts(auth, key))
    store.revoke(info.id)
    wait_until(lambda: not accepts(auth, key))
    assert refused(auth, key).code == "key_revoked"


def test_an_unknown_key_id_wakes_the_refresh_early(store: KeyStore, auth: Authenticator) -> None:
    auth.start_background_refresh(interval=30)  # the regular round would come far too late
    _, key = store.create("acme", "ci", None)
    assert refused(auth, key).code == "invalid_api_key"  # not in the snapshot yet
    wait_until(lambda: accepts(auth, key))


def accepts(auth: Authenticator, key: str) -> bool:
    try:
        auth.verify(key)
    except AuthError:
        return False
    return True


def wait_until(condition: object, timeout: float = 3.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer sy_a_b_c", None, "sy_a_b_c"),
        ("bearer  sy_a_b_c ", None, "sy_a_b_c"),
        (None, "sy_x", "sy_x"),
        ("Basic dXNlcjpwYXNz", "sy_x", "sy_x"),
        ("Bearer ", None, None),
        (None, None, None),
        ("", "  ", None),
    ],
)
def test_token_from_headers(
    authorization: str | None, x_api_key: str | None, expected: str | None
) -> None:
    assert token_from_headers(authorization, x_api_key) == expected
