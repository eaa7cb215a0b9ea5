"""Deploy unit tests: the command line (a subprocess, as an operator runs it).

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deployer.bundle import load_bundle
from deployer.plan import (
    UNCHANGED,
)
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    Compile,
    actions,
    base_config,
    deploy_py,
    differing,
    host_with,
    in_ci,
    local_config,
    plan_of,
    write_config,
)
from tests.gateway_env import free_port

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ((), "the following arguments are required: env"),
        (("staging", "--plan", "--status"), "argument --status: not allowed with argument --plan"),
        (
            ("staging", "--rollback", "--history"),
            "argument --history: not allowed with argument --rollback",
        ),
        (
            ("staging", "--no-wait", "--lock-timeout", "5"),
            "argument --lock-timeout: not allowed with argument --no-wait",
        ),
        (
            ("staging", "--lock-timeout", "soon"),
            "argument --lock-timeout: invalid float value: 'soon'",
        ),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    write_config(tmp_path, base_config())
    proc = deploy_py(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("usage: python deploy.py ")
    assert proc.stderr.endswith(f"python deploy.py: error: {said}\n")
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "action", [(), ("--status",), ("--rollback",), ("--history",), ("--plan",)]
)
def test_an_unknown_environment_exits_2_listing_the_environments(
    tmp_path: Path, action: tuple[str, ...]
) -> None:
    write_config(tmp_path, base_config())
    proc = deploy_py("qa", *action, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.splitlines()[-1] == (
        "python deploy.py: error: unknown environment 'qa' in gateway.yaml (environments: staging, "
        "production)"
    )
    assert "Traceback" not in proc.stderr


def test_a_missing_config_exits_2(tmp_path: Path) -> None:
    proc = deploy_py("staging", "--config", "nope.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.splitlines()[-1] == (
        "python deploy.py: error: nope.yaml: no such file (run from your repository root, or pass "
        "--config)"
    )


def test_an_invalid_config_exits_1_with_its_diagnostics_and_touches_nothing(tmp_path: Path) -> None:
    config = local_config(tmp_path / "srv", free_port())
    config["routes"]["chat"]["candidates"] = ["mock/nope"]
    write_config(tmp_path / "repo", config)
    proc = deploy_py("dev", "--yes", cwd=tmp_path / "repo")
    assert proc.returncode == 1, proc
    assert proc.stdout.splitlines() == [
        "dev: deploy refused: gateway.yaml:12:7: error[E021] routes.chat.candidates[0]: provider "
        "'mock' has no model 'nope'",
        "  hint: its models: echo",
        "gateway.yaml: 1 error",
        "refusing to deploy: gateway.yaml has errors (run `python -m compiler check gateway.yaml`)",
    ]
    assert "-> connect" not in proc.stderr
    assert not (tmp_path / "srv").exists()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["gateway.yaml"]


@contextlib.contextmanager
def listener() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 that accepts nothing by itself: a connection attempt would queue."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        yield s


def test_a_missing_secret_exits_1_before_any_connection(tmp_path: Path) -> None:
    with listener() as ssh:
        config = base_config()
        config["environments"]["staging"]["ssh_port"] = ssh.getsockname()[1]
        write_config(tmp_path, config)
        proc = deploy_py("staging", "--yes", cwd=tmp_path, env={"SY_UNIT_STAGING_BACKUP_KEY": "b"})
        with pytest.raises(BlockingIOError):
            ssh.accept()  # nobody ever tried to connect
    assert proc.returncode == 1, proc
    assert proc.stdout == (
        "staging: deploy refused: environments.staging.secrets.VENDOR_API_KEY: the environment "
        "variable "
        "SY_UNIT_STAGING_VENDOR_KEY is not set; export it before deploying (or mark the secret "
        "`optional: true`)\n"
    )
    assert "connect" not in proc.stderr and "Traceback" not in proc.stderr


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.docker
def test_a_local_plan_creates_nothing(tmp_path: Path) -> None:
    if not docker_answers():
        if in_ci():
            pytest.fail(
                "the Docker CLI does not answer `docker info`; in CI it must", pytrace=False
            )
        pytest.skip("the Docker CLI does not answer `docker info`")
    deploy_dir = tmp_path / "srv" / "switchyard"
    port = free_port()
    write_config(tmp_path / "repo", local_config(deploy_dir, port))

    proc = deploy_py("dev", "--plan", cwd=tmp_path / "repo")
    assert proc.returncode == 0, proc
    out = proc.stdout
    assert out.startswith(
        "Plan for dev on localhost (compose project hello-gateway-dev), serving now: nothing\n"
    )
    assert re.search(r"^  gateway  create  not running yet", out, re.MULTILINE), out
    assert re.search(r"^  proxy    create  not running yet", out, re.MULTILINE), out
    compose = (
        rf"docker compose -p hello-gateway-dev -f "
        rf"{re.escape(str(deploy_dir))}/hello-gateway-dev/releases/"
        r"\d{8}T\d{6}Z-[0-9a-f]{8}/compose\.yaml"
    )
    steps = re.findall(r"^  \d+\. (.*)$", out, re.MULTILINE)
    # Built only when an image is not on this machine (each is named for its inputs).
    missing = re.findall(r"image (\S+) is not on the host", out)
    builds = [s for s in steps if s.startswith("build ")]
    assert len(builds) == (1 if missing else 0), steps
    for build in builds:
        images, _, argv = build.removeprefix("build ").partition(": ")
        assert images.split(", ") == missing
        assert re.fullmatch(compose + r" build( gateway-a1)?( proxy)?", argv) and len(
            argv.split()[7:]
        ) == len(missing), argv
    assert [s for s in steps if " up --detach " in s] == [
        s
        for s in steps
        if re.fullmatch(
            r"(start the new gateways in slot a beside the live ones: "
            + compose
            + " up --detach --no-deps --no-build gateway-a1"
            rf"|cut over: \(re\)create the proxy on 127\.0\.0\.1:{port} with slot a's config: "
            + compose
            + " up --detach --no-deps --no-build proxy)",
            s,
        )
    ]
    assert len([s for s in steps if " up --detach " in s]) == 2, steps
    assert out.endswith("dev: plan only, nothing was changed (2 service(s) would change)\n")
    assert not (tmp_path / "srv").exists()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["gateway.yaml"]

    proc = deploy_py("dev", "--plan", "--json", cwd=tmp_path / "repo")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (
        doc["ok"],
        doc["environment"],
        doc["action"],
        doc["previous"],
        doc["url"],
        doc["error"],
    ) == (True, "dev", "plan", None, f"http://127.0.0.1:{port}", None)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", doc["release"])
    assert {name: s["action"] for name, s in doc["services"].items()} == {
        "gateway": "create",
        "proxy": "create",
    }
    assert doc["services"]["gateway"]["reasons"][0] == "not running yet"
    assert all(
        set(s) == {"step", "seconds", "status"} and s["status"] == "ok" for s in doc["steps"]
    )
    assert not (tmp_path / "srv").exists()


def test_secret_values_never_reach_the_manifest_hash_inputs(
    compile_env: Compile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changing a secret's VALUE changes no artifact (only the secrets file, compared on the
    host)."""
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "one-value")
    first = compile_env(base_config())
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "another-value")
    second = compile_env(base_config())
    assert first.files == second.files
    assert hashlib.sha256(first.tarball()).digest() == hashlib.sha256(second.tarball()).digest()


def test_the_config_files_name_is_not_an_image_input(compile_env: Compile, tmp_path: Path) -> None:
    old = compile_env(base_config(), "staging")
    d = tmp_path / "renamed"
    d.mkdir()
    (d / "gateway-staging.yaml").write_text(yaml.safe_dump(base_config(), sort_keys=False))
    new = load_bundle(str(d / "gateway-staging.yaml"), "staging")
    assert differing(old.manifest, new.manifest, "gateway") == set()
    plan = plan_of(new, host_with(old), old)
    assert (actions(plan)["gateway"], plan.build) == ((UNCHANGED, ()), ())
