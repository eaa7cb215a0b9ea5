"""Deploy unit tests, without a Docker engine or an sshd: bundle.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployer.bundle import DeployError, UsageError, load_bundle
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    Compile,
    base_config,
    changed,
    runtime_copy,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources


def test_an_invalid_config_is_refused_with_its_diagnostics(
    compile_env: Compile, tmp_path: Path
) -> None:
    config = base_config()
    config["environments"]["production"]["secrets"]["VENDOR_API_KEY"] = {
        "env": "SY_UNIT_STAGING_VENDOR_KEY"
    }
    with pytest.raises(DeployError) as err:
        compile_env(config)
    path = str(tmp_path / "config-0" / "gateway.yaml")
    text = str(err.value)
    assert re.match(
        re.escape(path)
        + r":\d+:\d+: error\[E041\] environments\.production\.secrets\.VENDOR_API_KEY\.env: "
        r"environments 'staging' and 'production' both read a secret from the environment variable "
        r"'SY_UNIT_STAGING_VENDOR_KEY'\n",
        text,
    ), text
    assert text.endswith(
        f"\nrefusing to deploy: {path} has errors (run `python -m compiler check {path}`)"
    )


def test_an_unknown_environment_is_a_usage_error_listing_them(
    compile_env: Compile, tmp_path: Path
) -> None:
    with pytest.raises(UsageError) as err:
        compile_env(base_config(), "qa")
    path = tmp_path / "config-0" / "gateway.yaml"
    assert (
        str(err.value) == f"unknown environment 'qa' in {path} (environments: staging, production)"
    )


def test_a_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError,
        match=r"^.*/nope\.yaml: no such file \(run from your repository root, or pass --config\)$",
    ):
        load_bundle(str(tmp_path / "nope.yaml"), "staging")


def test_the_release_id_is_time_then_a_digest_of_the_service_inputs(compile_env: Compile) -> None:
    bundle = compile_env(base_config(), "staging")
    when = datetime(2026, 11, 26, 7, 15, 0, tzinfo=UTC)
    rid = bundle.release_id(when)
    assert re.fullmatch(r"20261126T071500Z-[0-9a-f]{8}", rid)
    assert rid == bundle.release_id(when) == compile_env(base_config(), "staging").release_id(when)
    moved = compile_env(
        changed(lambda c: c["routes"]["chat"].update(fallback={"max_attempts": 2})), "staging"
    )
    assert moved.release_id(when)[:17] == rid[:17] and moved.release_id(when) != rid
    assert sorted([bundle.release_id(datetime(2026, 11, 26, 7, 15, 1, tzinfo=UTC)), rid]) == [
        rid,
        bundle.release_id(datetime(2026, 11, 26, 7, 15, 1, tzinfo=UTC)),
    ]


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None and m.isfile() and m.mtime == 0 and m.mode == 0o644, m.name
            out[m.name] = f.read()
        return out


def test_the_release_tarball_is_deterministic_and_complete(
    compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    (code / "__pycache__").mkdir(exist_ok=True)
    (code / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0bytecode")
    (code / "stray.pyc").write_bytes(b"\0bytecode")
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "sy-unit-vendor-value-9f8e7d")
    bundle = compile_env(base_config(), "staging")

    data = bundle.tarball()
    assert data == bundle.tarball()
    assert (
        data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"
    )  # no timestamp in the gzip header either
    assert data == compile_env(base_config(), "staging").tarball()
    files = members(data)
    code_files = {
        f"runtime/{p.relative_to(code).as_posix()}": p.read_bytes()
        for p in code.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert set(bundle.files) == {
        "compose.yaml",
        "runtime.json",
        "Dockerfile",
        "manifest.json",
        "proxy/Dockerfile",
        "proxy/haproxy-a.cfg",
        "proxy/haproxy-b.cfg",
    }
    assert set(files) == set(bundle.files) | {"requirements.txt"} | set(code_files)
    assert {name: files[name] for name in code_files} == code_files
    assert files["requirements.txt"] == (code / "requirements.txt").read_bytes()
    assert {name: files[name].decode() for name in bundle.files} == bundle.files
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert b"sy-unit-vendor-value-9f8e7d" not in gzip.decompress(data)
