"""Deploy unit tests, without a Docker engine or an sshd: secrets.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployer.bundle import Bundle, DeployError
from deployer.secrets_env import secrets_file
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    Compile,
    base_config,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources
staging = support.staging


def with_secrets(env: str, **sources: dict[str, Any]) -> dict[str, Any]:
    config = base_config()
    config["environments"][env]["secrets"] = sources
    return config


def test_the_secrets_file_holds_quoted_name_value_lines(
    staging: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "vendor-$HOME-`x`-value")
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "backup value")
    sf = secrets_file(staging)
    assert sf.content == (
        b"# Written by Switchyard deploy from the operator's sources; mode 0600. Do not edit.\n"
        b"BACKUP_API_KEY='backup value'\n"
        b"VENDOR_API_KEY='vendor-$HOME-`x`-value'\n"
    )
    assert (sf.names, sf.missing_optional) == (("BACKUP_API_KEY", "VENDOR_API_KEY"), ())
    assert sf.values() == ("backup value", "vendor-$HOME-`x`-value")


def test_a_file_source_is_read_from_home(
    compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "vendor.key").write_text("from-a-file\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "b")
    bundle = compile_env(
        with_secrets(
            "staging",
            VENDOR_API_KEY={"file": "~/keys/vendor.key"},
            BACKUP_API_KEY={"env": "SY_UNIT_STAGING_BACKUP_KEY"},
        )
    )
    assert secrets_file(bundle).content.splitlines()[1:] == [
        b"BACKUP_API_KEY='b'",
        b"VENDOR_API_KEY='from-a-file'",
    ]


def test_a_missing_optional_secret_is_skipped(
    compile_env: Compile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "v")
    bundle = compile_env(
        with_secrets(
            "staging",
            VENDOR_API_KEY={"env": "SY_UNIT_STAGING_VENDOR_KEY"},
            BACKUP_API_KEY={"env": "SY_UNIT_STAGING_BACKUP_KEY", "optional": True},
        )
    )
    sf = secrets_file(bundle)
    assert (sf.names, sf.missing_optional) == (("VENDOR_API_KEY",), ("BACKUP_API_KEY",))
    assert sf.content.splitlines()[1:] == [b"VENDOR_API_KEY='v'"]


def test_a_missing_required_env_secret_names_the_secret_and_the_variable(
    staging: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "b")
    with pytest.raises(DeployError) as err:
        secrets_file(staging)
    assert str(err.value) == (
        "environments.staging.secrets.VENDOR_API_KEY: the environment variable "
        "SY_UNIT_STAGING_VENDOR_KEY is not set; "
        "export it before deploying (or mark the secret `optional: true`)"
    )


def test_an_empty_variable_counts_as_missing(
    staging: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "")
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "v")
    with pytest.raises(
        DeployError,
        match=r"^environments\.staging\.secrets\.BACKUP_API_KEY: the environment variable "
        r"SY_UNIT_STAGING_BACKUP_KEY ",
    ):
        secrets_file(staging)


def test_a_missing_required_file_secret_names_the_secret_and_the_file(
    compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    bundle = compile_env(
        with_secrets(
            "production",
            VENDOR_API_KEY={"file": "~/nowhere/vendor.key"},
            BACKUP_API_KEY={"file": "~/nowhere/backup.key", "optional": True},
        ),
        "production",
    )
    with pytest.raises(DeployError) as err:
        secrets_file(bundle)
    assert str(err.value) == (
        "environments.production.secrets.VENDOR_API_KEY: ~/nowhere/vendor.key does not exist; "
        "create it (mode 0600) "
        "holding the value, or mark the secret `optional: true`"
    )


@pytest.mark.parametrize("value", ["two\nlines", "it's", "cr\rhere"])
def test_a_value_a_compose_env_file_cannot_hold_is_refused(
    staging: Bundle, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "b")
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", value)
    with pytest.raises(DeployError) as err:
        secrets_file(staging)
    assert str(err.value) == (
        "environments.staging.secrets.VENDOR_API_KEY: the value from $SY_UNIT_STAGING_VENDOR_KEY "
        "has a line break, "
        "a quote or a NUL in it, which a compose env file cannot hold"
    )
    assert value not in str(err.value)


@pytest.mark.parametrize("content", [b"first\nsecond\n", b"first\0second\n", b"first'second\n"])
def test_a_file_value_a_compose_env_file_cannot_hold_is_refused(
    compile_env: Compile, tmp_path: Path, content: bytes
) -> None:
    key = tmp_path / "vendor.key"
    key.write_bytes(content)
    bundle = compile_env(
        with_secrets(
            "staging", VENDOR_API_KEY={"file": str(key)}, BACKUP_API_KEY={"file": str(key)}
        )
    )
    with pytest.raises(DeployError) as err:
        secrets_file(bundle)
    assert str(err.value) == (
        f"environments.staging.secrets.BACKUP_API_KEY: the value from file {key} has a line break, "
        "a quote or a NUL in it, which a compose env file cannot hold"
    )


def test_the_secrets_file_never_shows_its_values(
    staging: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "vendor-value-123")
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "backup-value-456")
    sf = secrets_file(staging)
    for shown in (repr(sf), str(sf), f"{sf}", f"{sf!r}"):
        assert "vendor-value-123" not in shown and "backup-value-456" not in shown
        assert (
            shown == "SecretsFile(names=('BACKUP_API_KEY', 'VENDOR_API_KEY'), missing_optional=())"
        )
