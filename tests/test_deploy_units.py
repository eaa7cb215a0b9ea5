"""deploy.py piece by piece, without a Docker engine or an sshd (docs/deploy.md, docs/artifacts.md).

- commands: the exact argument lists; the fixed `sh` scripts run for real on this machine
  (LocalHost) against directories whose names carry spaces, quotes and `$(...)`;
- plan: unchanged / create / restart / rebuild / remove and the reasons, from manifests that
  the real compiler makes out of a small gateway.yaml and its mutations;
- claims, secrets, the bundle (release id, tarball), progress output, the steps as data;
- the CLI in a subprocess: usage errors, an invalid config, a missing secret — all before any
  connection.

Only `test_a_local_plan_creates_nothing` needs the Docker CLI (it asks whether the image
exists); it skips without one locally and fails in CI.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer import claims
from deployer import commands as cmd
from deployer.bundle import Bundle, DeployError, UsageError, load_bundle
from deployer.hosts import CommandFailed, LocalHost, Result
from deployer.output import Progress
from deployer.plan import (
    CREATE,
    REBUILD,
    REMOVE,
    RESTART,
    UNCHANGED,
    Inputs,
    Plan,
    make_plan,
    parse_compose,
)
from deployer.secrets import secrets_file
from deployer.state import (
    Container,
    HostState,
    Paths,
    check_ownership,
    parse_container,
    read_files,
    read_state,
    resolve_root,
)
from deployer.steps import (
    CheckCompose,
    ComposeUp,
    MakeCurrent,
    Prune,
    Record,
    RemoveServices,
    UploadRelease,
    WaitHealthy,
    WriteSecrets,
    plan_steps,
)
from tests.gateway_env import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy.py"
RUNTIME = ROOT / "runtime"
SCRUB = ["env", "-u", "COMPOSE_REMOVE_ORPHANS", "-u", "COMPOSE_FILE", "-u", "COMPOSE_PROJECT_NAME",
         "-u", "COMPOSE_PROFILES", "-u", "COMPOSE_PATH_SEPARATOR", "-u", "COMPOSE_ENV_FILES"]
# A directory name a shell would mangle if any script spliced it into its text.
WEIRD = "we ird 'sq' \"dq\" $(touch pwned) `touch pwned` ;touch pwned; *"
OLD = "20260101T000000Z-0a0a0a0a"          # the release running on the "host"
NEW = "20260102T000000Z-0b0b0b0b"          # the release being deployed
SECRET_VARS = ("SY_UNIT_STAGING_VENDOR_KEY", "SY_UNIT_STAGING_BACKUP_KEY",
               "SY_UNIT_PRODUCTION_VENDOR_KEY", "SY_UNIT_PRODUCTION_BACKUP_KEY")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------------------
# a small gateway.yaml (the shape of schema/examples/valid/minimal.yaml) and its bundles


def base_config() -> dict[str, Any]:
    """minimal.yaml plus two providers that need keys; staging (1 replica) and production (2)."""
    def vendor(key: str) -> dict[str, Any]:
        return {"adapter": "openai-compatible", "base_url": "http://127.0.0.1:9/v1",
                "credentials": {"api_key": key}, "models": {"small": {"context_window": 8192}}}

    def env(name: str, port: int, replicas: int) -> dict[str, Any]:
        return {"target": "ssh", "host": "127.0.0.1", "port": port, "replicas": replicas, "secrets": {
            "VENDOR_API_KEY": {"env": f"SY_UNIT_{name.upper()}_VENDOR_KEY"},
            "BACKUP_API_KEY": {"env": f"SY_UNIT_{name.upper()}_BACKUP_KEY"},
        }}

    return {
        "version": 1,
        "project": "hello-gateway",
        "providers": {
            "mock": {"adapter": "mock", "models": {"echo": {"context_window": 8192}}},
            "vendor": vendor("VENDOR_API_KEY"),
            "backup": vendor("BACKUP_API_KEY"),
        },
        "routes": {"chat": {"candidates": ["mock/echo", "vendor/small", "backup/small"]}},
        "environments": {"staging": env("staging", 8200, 1), "production": env("production", 8300, 2)},
    }


@pytest.fixture(autouse=True)
def no_secret_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine's environment holds, the tests' secret variables start unset."""
    for name in SECRET_VARS:
        monkeypatch.delenv(name, raising=False)


Compile = Callable[..., Bundle]


@pytest.fixture
def compile_env(tmp_path: Path) -> Compile:
    """compile_env(config, env): the Bundle of `env`, from a fresh directory's gateway.yaml.

    Always named gateway.yaml: the file's name is part of the Dockerfile's header comment,
    so it is part of the image inputs.
    """
    made = iter(range(1_000_000))

    def make(config: dict[str, Any], env: str = "staging") -> Bundle:
        d = tmp_path / f"config-{next(made)}"
        d.mkdir()
        (d / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return load_bundle(str(d / "gateway.yaml"), env)

    return make


def changed(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    config = base_config()
    mutate(config)
    return config


# ---------------------------------------------------------------------------------------
# plan helpers: what runs on the host, by hand


def running(bundle: Bundle, release: str = OLD, *, state: str = "running", health: str = "healthy",
            owned: bool = True) -> list[Container]:
    """The containers `bundle` makes (gateway x replicas, edge), as created from `release`."""
    out = []
    for service in bundle.services:
        for i in range(1, (int(bundle.manifest["replicas"]) if service == "gateway" else 1) + 1):
            out.append(Container(
                id=f"{service}{i}".ljust(64, "0"), name=f"{bundle.compose_project}-{service}-{i}", service=service,
                state=state, health=health, started_at="2026-01-01T00:00:00Z", release=release,
                image_id="sha256:" + "1" * 64, owned=owned,
            ))
    return out


def host_with(old: Bundle, containers: list[Container] | None = None) -> HostState:
    """A host where `old` was deployed as release OLD and its containers run."""
    return HostState(
        paths=Paths("/srv/switchyard", old.compose_project), exists=True, current=OLD, releases=[OLD],
        containers=running(old) if containers is None else containers, manifests={OLD: old.manifest},
    )


def inputs(new: Bundle, old: Bundle | None = None, manifest: dict[str, Any] | None = None) -> Inputs:
    olds = {OLD: old} if old else {}
    return Inputs(
        manifest or new.manifest, json.loads(new.files["runtime.json"]), parse_compose(new.files["compose.yaml"]),
        {rid: json.loads(b.files["runtime.json"]) for rid, b in olds.items()},
        {rid: parse_compose(b.files["compose.yaml"]) for rid, b in olds.items()},
    )


def actions(plan: Plan) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {s.service: (s.action, s.reasons) for s in plan.services}


def differing(a: dict[str, Any], b: dict[str, Any], service: str) -> set[str]:
    """Which of image/config/definition differ between two manifests for `service`."""
    return {k for k in ("image", "config", "definition") if a["services"][service][k] != b["services"][service][k]}


# =======================================================================================
# commands: argument lists


def test_compose_up_names_project_and_file_and_never_its_dependencies() -> None:
    assert cmd.compose_up("hello-gateway-staging", "/srv/s/releases/R/compose.yaml", ["gateway"], build=False) == [
        *SCRUB, "docker", "compose", "-p", "hello-gateway-staging", "-f", "/srv/s/releases/R/compose.yaml",
        "up", "--detach", "--no-deps", "gateway",
    ]


def test_compose_up_builds_only_when_asked() -> None:
    assert cmd.compose_up("p", "/f.yaml", ["edge", "gateway"], build=True) == [
        *SCRUB, "docker", "compose", "-p", "p", "-f", "/f.yaml", "up", "--detach", "--no-deps", "--build", "edge", "gateway",
    ]


def every_command() -> list[list[str]]:
    return [
        cmd.compose("p", "/f.yaml", "ps"), cmd.compose_config_check("p", "/f.yaml"),
        cmd.compose_up("p", "/f.yaml", ["gateway"], build=False), cmd.compose_up("p", "/f.yaml", ["gateway"], build=True),
        cmd.project_containers("p"), cmd.published_containers(), cmd.inspect(["abc"]), cmd.image_ids(["p/gateway:1"]),
        cmd.remove_image("p/gateway:1"), cmd.stop_and_remove(["abc"]), cmd.logs("abc"),
        cmd.make_env_dir("/d"), cmd.unpack_release("/t.tgz", "/d/r"), cmd.point_current("/d", "R"),
        cmd.probe("/d", "p", "p/gateway:1", True), cmd.cat_files(["/a", "/b"]),
        cmd.mark_failed("/d/r"), cmd.remove_release("/d", "R"),
        cmd.replace_if_changed("/a", "/b"), cmd.append_line("/h"),
        cmd.resolve_root("/d", True), cmd.resolve_root("/d", False), cmd.lock("/l", None), cmd.lock("/l", 5),
        cmd.serialised("/l", ["true"]),
    ]


def test_no_command_takes_anything_down_prunes_or_removes_orphans() -> None:
    for argv in every_command():
        words = " ".join(argv).split()
        assert not {"down", "prune", "--remove-orphans", "--force-recreate", "system", "volume", "network"} & set(words), argv


def test_every_compose_command_runs_with_project_file_and_scrubbed_variables() -> None:
    for argv in [cmd.compose("p", "/f.yaml", "ps"), cmd.compose_config_check("p", "/f.yaml"),
                 cmd.compose_up("p", "/f.yaml", ["gateway"], build=True)]:
        assert argv[:len(SCRUB) + 6] == [*SCRUB, "docker", "compose", "-p", "p", "-f", "/f.yaml"], argv


def test_the_scrub_prefix_really_unsets_the_compose_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in cmd.SCRUBBED:
        monkeypatch.setenv(name, "set-by-the-operator")
    monkeypatch.setenv("SY_UNIT_KEPT", "kept")
    argv = cmd.compose("p", "/f.yaml")
    prefix = argv[:argv.index("docker")]
    seen = dict(line.split("=", 1) for line in LocalHost().run([*prefix, "env"]).stdout.splitlines() if "=" in line)
    assert [name for name in cmd.SCRUBBED if name in seen] == []
    assert seen["SY_UNIT_KEPT"] == "kept"


def test_container_removal_is_exact_and_keeps_volumes_and_images_in_use() -> None:
    assert cmd.stop_and_remove(["a1", "b2"]) == ["docker", "rm", "--force", "--volumes=false", "a1", "b2"]
    assert cmd.remove_image("p/gateway:abc") == ["docker", "image", "rm", "p/gateway:abc"]


def test_lock_commands() -> None:
    assert cmd.lock("/d/deploy.lock", None) == [
        "flock", "--nonblock", "--conflict-exit-code", "75", "/d/deploy.lock", "sh", "-c", "echo locked; exec cat >/dev/null"]
    assert cmd.lock("/d/deploy.lock", 2.5)[1:3] == ["--timeout", "2"]
    assert cmd.lock("/d/deploy.lock", 0.2)[1:3] == ["--timeout", "1"]
    assert cmd.serialised("/d/compose.lock", ["docker", "ps"]) == ["flock", "--timeout", "900", "/d/compose.lock", "docker", "ps"]


# =======================================================================================
# commands: the sh scripts, run here against hostile directory names


@pytest.fixture
def weird(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory whose name a shell would execute if it were ever spliced into a script.

    The scripts run with tmp_path as their working directory, so an injection would create
    tmp_path/pwned.
    """
    monkeypatch.chdir(tmp_path)
    yield tmp_path / WEIRD
    assert not (tmp_path / "pwned").exists(), "a path was interpreted by the shell"


def sh(argv: Sequence[str], stdin: bytes | None = None) -> Result:
    return LocalHost().run(argv, stdin=stdin)


def test_make_env_dir_is_private_and_has_releases(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    assert stat.S_IMODE(weird.stat().st_mode) == 0o700
    assert (weird / "releases").is_dir()
    sh(cmd.make_env_dir(str(weird)))  # again: no error, same result
    assert stat.S_IMODE(weird.stat().st_mode) == 0o700


def tarball(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_unpack_release_replaces_the_directory_whole(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    final = weird / "releases" / NEW
    final.mkdir()
    (final / "stale.txt").write_text("from an interrupted attempt")
    packed = weird / "releases" / f".{NEW}.tar.gz"
    packed.write_bytes(tarball({"compose.yaml": b"name: p\n", "runtime/app.py": b"print(1)\n"}))

    sh(cmd.unpack_release(str(packed), str(final)))

    assert tree(final) == {"compose.yaml": b"name: p\n", "runtime/app.py": b"print(1)\n"}
    assert sorted(p.name for p in (weird / "releases").iterdir()) == [NEW]  # no tarball, no .tmp left


def test_unpack_release_of_a_broken_tarball_leaves_the_release_as_it_was(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    final = weird / "releases" / NEW
    final.mkdir()
    (final / "compose.yaml").write_text("name: good\n")
    packed = weird / "releases" / f".{NEW}.tar.gz"
    packed.write_bytes(b"this is not gzip")

    with pytest.raises(CommandFailed):
        sh(cmd.unpack_release(str(packed), str(final)))

    assert tree(final) == {"compose.yaml": b"name: good\n"}


def test_point_current_switches_the_symlink_atomically(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    for rid in (OLD, NEW):
        (weird / "releases" / rid).mkdir()
    assert not (weird / "current").exists()

    sh(cmd.point_current(str(weird), OLD))
    assert os.readlink(weird / "current") == f"releases/{OLD}"
    sh(cmd.point_current(str(weird), NEW))
    assert os.readlink(weird / "current") == f"releases/{NEW}"
    assert (weird / "current").resolve() == (weird / "releases" / NEW).resolve()
    assert sorted(p.name for p in weird.iterdir()) == ["current", "releases"]  # no .current.tmp


def test_mark_failed_leaves_a_marker_that_says_why(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    (weird / "releases" / NEW).mkdir()
    sh(cmd.mark_failed(str(weird / "releases" / NEW)))
    assert (weird / "releases" / NEW / "FAILED").read_text() == "health check failed; see history\n"


def test_cat_files_reads_several_files_in_one_command(weird: Path) -> None:
    weird.mkdir()
    (weird / "a.json").write_text('{"a": 1}\n')
    (weird / "b.yaml").write_text("no newline at the end")
    (weird / "empty").write_text("")
    paths = [str(weird / "a.json"), str(weird / "missing"), str(weird / "b.yaml"), str(weird / "empty")]
    assert read_files(LocalHost(), paths) == {
        paths[0]: '{"a": 1}\n', paths[1]: None, paths[2]: "no newline at the end", paths[3]: "",
    }
    assert read_files(LocalHost(), []) == {}


def test_remove_release_removes_exactly_that_release(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    for rid in (OLD, NEW):
        (weird / "releases" / rid).mkdir()
    sh(cmd.remove_release(str(weird), OLD))
    assert sorted(p.name for p in (weird / "releases").iterdir()) == [NEW]


def test_replace_if_changed_says_same_or_changed(weird: Path) -> None:
    weird.mkdir()
    target, new = weird / "secrets.env", weird / "secrets.env.new"

    new.write_text("A='1'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "changed\n"   # no target yet
    assert target.read_text() == "A='1'\n" and not new.exists()

    new.write_text("A='1'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "same\n"
    assert target.read_text() == "A='1'\n" and not new.exists()

    new.write_text("A='2'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "changed\n"
    assert target.read_text() == "A='2'\n" and not new.exists()


def test_append_line(weird: Path) -> None:
    weird.mkdir()
    history = weird / "history.jsonl"
    sh(cmd.append_line(str(history)), stdin=b'{"n": 1}\n')
    sh(cmd.append_line(str(history)), stdin=b'{"n": "$(touch pwned)"}\n')
    assert history.read_text() == '{"n": 1}\n{"n": "$(touch pwned)"}\n'


def test_resolve_root_creates_or_reports_absent(weird: Path) -> None:
    assert sh(cmd.resolve_root(str(weird), False)).stdout == "absent\n"
    assert not weird.exists()
    assert resolve_root(LocalHost(), str(weird), create=False) is None

    assert sh(cmd.resolve_root(str(weird), True)).stdout == os.path.realpath(weird) + "\n"
    assert weird.is_dir()
    assert resolve_root(LocalHost(), str(weird), create=False) == os.path.realpath(weird)


def test_a_home_relative_deploy_dir_on_this_machine_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    assert resolve_root(LocalHost(), "~/switchyard", create=True) == os.path.realpath(home / "switchyard")
    assert list(elsewhere.iterdir()) == []


# -- the lock ----------------------------------------------------------------------------


@pytest.fixture
def lock_path(weird: Path) -> Path:
    weird.mkdir()
    return weird / "deploy.lock"


def test_a_second_holder_is_refused_while_the_first_holds_the_lock(lock_path: Path) -> None:
    host = LocalHost()
    first, out = host.hold(cmd.lock(str(lock_path), None), "locked", 5)
    second = None
    try:
        assert first is not None and out == ""
        assert host.hold(cmd.lock(str(lock_path), None), "locked", 5) == (None, "")
        first.release()
        first = None
        second, out = host.hold(cmd.lock(str(lock_path), None), "locked", 5)
        assert second is not None and out == ""
    finally:
        for held in (first, second):
            if held is not None:
                held.release()


HOLDER = """
import sys
from deployer import commands
from deployer.hosts import LocalHost
held, _ = LocalHost().hold(commands.lock(sys.argv[1], None), "locked", 5)
print("held" if held else "refused", flush=True)
sys.stdin.read()
"""


def test_the_lock_dies_with_its_holder(lock_path: Path) -> None:
    """A deploy killed outright (kill -9, a lost connection) leaves no stale lock behind."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held = None
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        assert LocalHost().hold(cmd.lock(str(lock_path), None), "locked", 5) == (None, "")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        held, out = LocalHost().hold(cmd.lock(str(lock_path), 5), "locked", 10)  # waits at most 5 s
        assert held is not None and out == ""
    finally:
        if held is not None:
            held.release()
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# =======================================================================================
# plan


def test_nothing_running_creates_every_service(compile_env: Compile) -> None:
    staging, production = compile_env(base_config(), "staging"), compile_env(base_config(), "production")
    empty = HostState(Paths("/srv/switchyard", staging.compose_project), exists=False)

    plan = make_plan(inputs(staging), empty, image_present=True, secrets_changed=True)
    assert actions(plan) == {"gateway": (CREATE, ("not running yet",))}
    assert (plan.build, plan.noop, plan.deployed_release) == (False, False, None)

    plan = make_plan(inputs(production), replace(empty, paths=Paths("/srv/switchyard", production.compose_project)),
                     image_present=True, secrets_changed=True)
    assert actions(plan) == {"edge": (CREATE, ("not running yet",)), "gateway": (CREATE, ("not running yet",))}


def test_the_same_manifest_changes_nothing(compile_env: Compile) -> None:
    old, new = compile_env(base_config(), "production"), compile_env(base_config(), "production")
    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False)
    assert actions(plan) == {"edge": (UNCHANGED, ()), "gateway": (UNCHANGED, ())}
    assert (plan.noop, plan.build, plan.changed, plan.removed, plan.deployed_release) == (True, False, [], [], OLD)


def test_a_comment_only_edit_changes_nothing(compile_env: Compile, tmp_path: Path) -> None:
    old = compile_env(base_config(), "staging")
    d = tmp_path / "commented"
    d.mkdir()
    (d / "gateway.yaml").write_text("# a comment\n" + yaml.safe_dump(base_config(), sort_keys=False))
    new = load_bundle(str(d / "gateway.yaml"), "staging")
    assert new.manifest["source"] != old.manifest["source"]
    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False)
    assert plan.noop


def test_a_routing_change_restarts_the_gateway_naming_the_runtime_keys(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(lambda c: c["routes"]["chat"].update(fallback={"max_attempts": 2})), "production")
    assert differing(old.manifest, new.manifest, "gateway") == {"config"}
    assert differing(old.manifest, new.manifest, "edge") == set()

    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False)
    assert actions(plan) == {"edge": (UNCHANGED, ()), "gateway": (RESTART, ("runtime.json changed (routes.chat)",))}
    assert not plan.build


def test_a_changed_limit_and_route_are_both_named(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")

    def mutate(c: dict[str, Any]) -> None:
        c["routes"]["chat"]["fallback"] = {"max_attempts": 2}
        c["limits"] = {"per_key": {"requests_per_minute": 60}}

    new = compile_env(changed(mutate), "staging")
    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False)
    assert actions(plan) == {"gateway": (RESTART, ("runtime.json changed (limits.per_key, routes.chat)",))}


def test_a_port_change_restarts_only_the_service_that_publishes_it(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(lambda c: c["environments"]["production"].update(port=8301)), "production")
    assert differing(old.manifest, new.manifest, "edge") == {"definition"}
    assert differing(old.manifest, new.manifest, "gateway") == set()

    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False)
    assert actions(plan) == {"edge": (RESTART, ("compose definition changed (ports)",)), "gateway": (UNCHANGED, ())}
    assert not plan.build


def test_workers_change_both_runtime_json_and_the_command(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(changed(lambda c: c.setdefault("runtime", {}).update(workers=2)), "staging")
    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False)
    assert actions(plan) == {"gateway": (RESTART, (
        "runtime.json changed (server.workers)", "compose definition changed (command)"))}
    assert not plan.build


def test_a_new_base_image_rebuilds_every_service(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")), "production")
    plan = make_plan(inputs(new, old), host_with(old), image_present=False, secrets_changed=False)
    assert actions(plan) == {
        "edge": (REBUILD, ("Dockerfile (base image) changed",)),
        "gateway": (REBUILD, ("Dockerfile (base image) changed",)),
    }
    assert plan.build


def runtime_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of runtime/ that load_bundle compiles from (so a test may edit it)."""
    copy_dir = tmp_path / "runtime-copy" / "runtime"
    shutil.copytree(RUNTIME, copy_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    monkeypatch.setattr("deployer.bundle.RUNTIME_DIR", copy_dir)
    return copy_dir


def test_a_runtime_code_change_rebuilds(compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    old = compile_env(base_config(), "staging")
    with (code / "edge.py").open("a") as f:
        f.write("\n# a code change\n")
    new = compile_env(base_config(), "staging")
    plan = make_plan(inputs(new, old), host_with(old), image_present=False, secrets_changed=False)
    assert actions(plan) == {"gateway": (REBUILD, ("runtime/ code changed",))}


def test_a_dependency_change_rebuilds_naming_requirements(compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    old = compile_env(base_config(), "staging")
    with (code / "requirements.txt").open("a") as f:
        f.write("six==1.16.0\n")
    new = compile_env(base_config(), "staging")
    plan = make_plan(inputs(new, old), host_with(old), image_present=False, secrets_changed=False)
    # requirements.txt lives in runtime/ but is hashed on its own: only it is named.
    assert actions(plan) == {"gateway": (REBUILD, ("requirements.txt changed",))}


@pytest.mark.parametrize(("key", "reason"), [
    ("dockerfile", "Dockerfile (base image) changed"),
    ("runtime", "runtime/ code changed"),
    ("requirements", "requirements.txt changed"),
])
def test_a_rebuild_names_the_image_input_that_changed(compile_env: Compile, key: str, reason: str) -> None:
    old = compile_env(base_config(), "production")
    manifest = copy.deepcopy(old.manifest)
    manifest["image_inputs"][key] = "sha256:" + "f" * 64
    for service in manifest["services"].values():
        service["image"] = "sha256:" + "e" * 64
    plan = make_plan(inputs(old, old, manifest), host_with(old), image_present=True, secrets_changed=False)
    assert actions(plan) == {"edge": (REBUILD, (reason,)), "gateway": (REBUILD, (reason,))}
    assert plan.build


def test_a_missing_image_turns_a_create_or_restart_into_a_build(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    image = old.manifest["image"]
    empty = HostState(Paths("/srv/switchyard", old.compose_project), exists=False)

    plan = make_plan(inputs(old), empty, image_present=False, secrets_changed=True)
    assert actions(plan) == {"gateway": (CREATE, ("not running yet", f"image {image} is not on the host"))}
    assert plan.build

    new = compile_env(changed(lambda c: c["routes"]["chat"].update(fallback={"max_attempts": 2})), "staging")
    plan = make_plan(inputs(new, old), host_with(old), image_present=False, secrets_changed=False)
    assert actions(plan) == {"gateway": (REBUILD, ("runtime.json changed (routes.chat)", f"image {image} is not on the host"))}
    assert plan.build


@pytest.mark.parametrize(("state", "health", "said"), [
    ("exited", "none", "is exited"),
    ("restarting", "starting", "is restarting"),
    ("running", "unhealthy", "is unhealthy"),
])
def test_a_stopped_or_unhealthy_container_is_restarted(compile_env: Compile, state: str, health: str, said: str) -> None:
    old = compile_env(base_config(), "staging")
    host = host_with(old, running(old, state=state, health=health))
    plan = make_plan(inputs(old, old), host, image_present=True, secrets_changed=False)
    assert actions(plan) == {"gateway": (RESTART, (f"hello-gateway-staging-gateway-1 {said}",))}
    assert not plan.build


def test_changed_secrets_restart_the_gateway_but_not_the_edge(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    plan = make_plan(inputs(old, old), host_with(old), image_present=True, secrets_changed=True)
    assert actions(plan) == {"edge": (UNCHANGED, ()), "gateway": (RESTART, ("secrets changed",))}
    assert not plan.build


def test_changed_secrets_are_added_to_the_gateways_other_reasons(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(lambda c: c["routes"]["chat"].update(fallback={"max_attempts": 2})), "production")
    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=True)
    assert actions(plan) == {"edge": (UNCHANGED, ()),
                             "gateway": (RESTART, ("runtime.json changed (routes.chat)", "secrets changed"))}


def test_going_from_two_replicas_to_one_removes_the_edge(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(lambda c: c["environments"]["production"].update(replicas=1)), "production")
    host = host_with(old)
    plan = make_plan(inputs(new, old), host, image_present=True, secrets_changed=False)
    assert actions(plan) == {
        "gateway": (RESTART, ("compose definition changed (deploy, expose, ports)",)),
        "edge": (REMOVE, ("no longer in the config",)),
    }
    assert [s.service for s in plan.removed] == ["edge"]
    assert [c.id for c in plan.removed[0].running] == [c.id for c in host.owned("edge")]
    assert [s.service for s in plan.changed] == ["gateway"]


def test_containers_of_two_releases_are_restarted(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    mixed = [replace(c, release=NEW) if c.name.endswith("gateway-2") else c for c in running(old)]
    host = host_with(old, mixed)
    host.manifests[NEW] = old.manifest
    plan = make_plan(inputs(old, old), host, image_present=True, secrets_changed=False)
    assert actions(plan) == {"edge": (UNCHANGED, ()), "gateway": (RESTART, ("its containers run different releases",))}
    assert plan.deployed_release == NEW


def test_a_running_release_without_a_manifest_is_restarted(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    host = host_with(old)
    host.manifests.clear()
    plan = make_plan(inputs(old), host, image_present=True, secrets_changed=False)
    assert actions(plan) == {"gateway": (RESTART, (f"running release {OLD} has no manifest on the host",))}


def test_containers_we_do_not_own_are_never_planned_for_and_refuse_the_deploy(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    foreign = replace(running(old)[0], id="f" * 64, name="intruder-1", owned=False)
    host = HostState(Paths("/srv/switchyard", old.compose_project), exists=False, containers=[foreign])

    plan = make_plan(inputs(old), host, image_present=True, secrets_changed=False)
    assert actions(plan) == {"gateway": (CREATE, ("not running yet",))}
    with pytest.raises(DeployError) as err:
        check_ownership(host)
    assert "the compose project 'hello-gateway-staging' on this host is already used by containers " \
           "that Switchyard does not own for this environment: intruder-1 (ffffffffffff)" in str(err.value)


def test_plan_table_lists_services_actions_and_reasons(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    plan = make_plan(inputs(old, old), host_with(old), image_present=True, secrets_changed=True)
    assert plan.table() == (
        "  SERVICE  ACTION     WHY\n"
        "  edge     unchanged  -\n"
        "  gateway  restart    secrets changed"
    )


def test_a_container_belongs_to_the_release_its_compose_file_names() -> None:
    paths = Paths("/srv/switchyard", "hello-gateway-staging")
    raw = {
        "Id": "c" * 64, "Name": "/hello-gateway-staging-gateway-1", "Image": "sha256:" + "2" * 64,
        "State": {"Status": "running", "StartedAt": "2026-01-01T00:00:00Z", "ExitCode": 0,
                  "Health": {"Status": "healthy", "Log": [{"Output": "ok\n"}]}},
        "Config": {"Labels": {
            "dev.switchyard.managed-by": "switchyard", "dev.switchyard.project": "hello-gateway",
            "dev.switchyard.environment": "staging", "com.docker.compose.service": "gateway",
            "com.docker.compose.project.config_files": f"/srv/switchyard/hello-gateway-staging/releases/{OLD}/compose.yaml",
        }},
    }
    c = parse_container(raw, paths, "hello-gateway", "staging")
    assert (c.name, c.service, c.state, c.health, c.release, c.owned, c.health_log, c.short_id) == (
        "hello-gateway-staging-gateway-1", "gateway", "running", "healthy", OLD, True, "ok", "c" * 12)
    other_env = copy.deepcopy(raw)
    other_env["Config"]["Labels"]["dev.switchyard.environment"] = "production"
    assert parse_container(other_env, paths, "hello-gateway", "staging").owned is False
    unlabelled = copy.deepcopy(raw)
    del unlabelled["Config"]["Labels"]["dev.switchyard.managed-by"]
    assert parse_container(unlabelled, paths, "hello-gateway", "staging").owned is False


# =======================================================================================
# steps


def steps_for(bundle: Bundle, plan: Plan, *, secrets_changed: bool = False) -> list[Any]:
    paths = Paths("/srv/switchyard", bundle.compose_project)
    return plan_steps(bundle, paths, NEW, plan, secrets_names=("BACKUP_API_KEY", "VENDOR_API_KEY"),
                      secrets_changed=secrets_changed, tar_size=78_848)


def test_a_restart_runs_compose_up_without_build(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(changed(lambda c: c["routes"]["chat"].update(fallback={"max_attempts": 2})), "staging")
    steps = steps_for(new, make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False))
    release = f"/srv/switchyard/hello-gateway-staging/releases/{NEW}"

    assert [type(s) for s in steps] == [UploadRelease, CheckCompose, ComposeUp, WaitHealthy, MakeCurrent]
    assert steps[0] == UploadRelease(NEW, release, 78_848)
    assert steps[1] == CheckCompose("hello-gateway-staging", f"{release}/compose.yaml")
    assert steps[2] == ComposeUp("hello-gateway-staging", f"{release}/compose.yaml", ("gateway",), False)
    assert "--build" not in steps[2].argv()
    assert steps[3] == WaitHealthy(NEW, ("gateway",), (("gateway", 1),), 8200, 60.0)
    assert steps[4] == MakeCurrent(NEW)
    assert steps[2].describe() == (
        f"(re)create gateway: docker compose -p hello-gateway-staging -f {release}/compose.yaml up --detach --no-deps gateway")


def test_a_rebuild_runs_compose_up_with_build(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")), "production")
    steps = steps_for(new, make_plan(inputs(new, old), host_with(old), image_present=False, secrets_changed=False))
    up = next(s for s in steps if isinstance(s, ComposeUp))
    wait = next(s for s in steps if isinstance(s, WaitHealthy))
    assert (up.services, up.build) == (("edge", "gateway"), True)
    assert up.argv()[-3:] == ["--build", "edge", "gateway"]
    assert up.describe().startswith("build the image and (re)create edge, gateway: docker compose -p hello-gateway-production ")
    assert (wait.services, wait.replicas, wait.port) == (("edge", "gateway"), (("edge", 1), ("gateway", 2)), 8300)


def test_changed_secrets_alone_write_the_secrets_file_and_restart_the_gateway(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    plan = make_plan(inputs(old, old), host_with(old), image_present=True, secrets_changed=True)
    steps = steps_for(old, plan, secrets_changed=True)
    assert [type(s) for s in steps] == [UploadRelease, WriteSecrets, CheckCompose, ComposeUp, WaitHealthy, MakeCurrent]
    assert steps[1] == WriteSecrets("/srv/switchyard/hello-gateway-production/secrets.env", ("BACKUP_API_KEY", "VENDOR_API_KEY"))
    assert (steps[3].services, steps[3].build) == (("gateway",), False)
    assert (steps[4].services, steps[4].replicas) == (("gateway",), (("gateway", 2),))


def test_unchanged_secrets_are_not_written(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    plan = make_plan(inputs(old, old), host_with(old, running(old, state="exited")), image_present=True, secrets_changed=False)
    assert not any(isinstance(s, WriteSecrets) for s in steps_for(old, plan, secrets_changed=False))


def test_a_dropped_service_is_removed_before_compose_up(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(lambda c: c["environments"]["production"].update(replicas=1)), "production")
    host = host_with(old)
    steps = steps_for(new, make_plan(inputs(new, old), host, image_present=True, secrets_changed=False))
    assert [type(s) for s in steps] == [UploadRelease, CheckCompose, RemoveServices, ComposeUp, WaitHealthy, MakeCurrent]
    assert steps[2] == RemoveServices(("edge",), tuple(c.id for c in host.owned("edge")))
    assert steps[3].services == ("gateway",)
    assert steps[4].replicas == (("gateway", 1),)


def test_every_step_describes_itself_in_one_line() -> None:
    release = f"/srv/switchyard/hello-gateway-production/releases/{NEW}"
    steps = [
        UploadRelease(NEW, release, 78_848),
        WriteSecrets("/srv/switchyard/hello-gateway-production/secrets.env", ("VENDOR_API_KEY",)),
        WriteSecrets("/srv/switchyard/hello-gateway-production/secrets.env", ()),
        CheckCompose("hello-gateway-production", f"{release}/compose.yaml"),
        RemoveServices(("edge",), ("a" * 64,)),
        ComposeUp("hello-gateway-production", f"{release}/compose.yaml", ("gateway",), False),
        ComposeUp("hello-gateway-production", f"{release}/compose.yaml", ("edge", "gateway"), True),
        WaitHealthy(NEW, ("gateway",), (("gateway", 2),), 8300, 60.0),
        MakeCurrent(NEW),
        Prune(5),
        Record({"action": "deploy", "release": NEW}),
    ]
    for step in steps:
        text = step.describe()
        assert text.strip() == text and text and "\n" not in text, step
    assert [s.describe() for s in steps[:4]] == [
        f"upload release {NEW} (77 KiB) to {release}",
        "write /srv/switchyard/hello-gateway-production/secrets.env (0600): VENDOR_API_KEY (values from the operator's sources, not shown)",
        "write /srv/switchyard/hello-gateway-production/secrets.env (0600): no values (values from the operator's sources, not shown)",
        f"validate the compose file on the host: docker compose -p hello-gateway-production -f {release}/compose.yaml config --quiet",
    ]
    assert steps[7].describe() == "wait up to 60 s for gateway to be healthy and http://127.0.0.1:8300/readyz to answer 200"
    assert steps[8].describe() == f"point current -> releases/{NEW}"


# =======================================================================================
# claims


class CannedDocker(LocalHost):
    """This machine for files and flock; `docker` answers with a canned `docker ps` output."""

    def __init__(self, ps: str = "") -> None:
        self.ps = ps
        self.docker_calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        if argv[0] == "docker":
            self.docker_calls.append(list(argv))
            return Result(0, self.ps, "")
        return super().run(argv, stdin=stdin, check=check, timeout=timeout)


def test_published_ports_are_read_from_docker_ps() -> None:
    host = CannedDocker(
        "aaa\tneighbour\t127.0.0.1:8200->8000/tcp, [::1]:8200->8000/tcp\n"
        "bbb\t\t0.0.0.0:9000->9000/tcp, :::9000->9000/tcp\n"
        "ccc\tquiet\t8000/tcp\n"
        "ddd\tv4v6\t0.0.0.0:9100->80/tcp, [::]:9101->80/tcp, 10.1.2.3:9102->81/udp\n"
    )
    assert claims.published_ports(host) == {8200: "neighbour", 9000: "container bbb", 9100: "v4v6", 9101: "v4v6", 9102: "v4v6"}
    assert host.docker_calls == [cmd.published_containers()]
    assert cmd.published_containers() == [
        "docker", "ps", "--format", '{{.ID}}\t{{.Label "com.docker.compose.project"}}\t{{.Ports}}']


def test_a_published_port_range_counts_as_taken() -> None:
    host = CannedDocker("eee\trange\t0.0.0.0:8199-8201->8199-8201/tcp\n")
    assert claims.published_ports(host).get(8200) == "range"


@pytest.fixture
def staging(compile_env: Compile) -> Bundle:
    return compile_env(base_config(), "staging")


def test_another_project_claiming_our_port_is_a_conflict(staging: Bundle) -> None:
    theirs = {"acme-prod": claims.Claim("acme", "prod", 8200)}
    assert claims.conflicts(staging, theirs, {}) == [
        "port 8200 is claimed on this host by 'acme-prod' (project 'acme', environment 'prod'); "
        "pick another environments.staging.port"
    ]


def test_our_compose_project_claimed_by_someone_else_is_a_conflict(staging: Bundle) -> None:
    theirs = {"hello-gateway-staging": claims.Claim("other-team", "staging", 9999)}
    assert claims.conflicts(staging, theirs, {}) == [
        "the compose project 'hello-gateway-staging' is claimed on this host by project 'other-team' environment "
        "'staging'; set environments.staging.compose_project to another name"
    ]


def test_a_port_published_by_a_foreign_container_is_a_conflict(staging: Bundle) -> None:
    published = claims.published_ports(CannedDocker("aaa\tneighbour\t127.0.0.1:8200->8000/tcp, [::1]:8200->8000/tcp\n"))
    assert claims.conflicts(staging, {}, published) == [
        "port 8200 is already published on this host by 'neighbour'; pick another environments.staging.port"
    ]
    published = claims.published_ports(CannedDocker("0123456789ab\t\t0.0.0.0:8200->8200/tcp\n"))
    assert claims.conflicts(staging, {}, published) == [
        "port 8200 is already published on this host by 'container 0123456789ab'; pick another environments.staging.port"
    ]


def test_our_own_claim_and_our_own_containers_are_no_conflict(staging: Bundle) -> None:
    ours = {"hello-gateway-staging": claims.Claim("hello-gateway", "staging", 8200),
            "hello-gateway-production": claims.Claim("hello-gateway", "production", 8300)}
    assert claims.conflicts(staging, ours, {8200: "hello-gateway-staging", 8300: "hello-gateway-production"}) == []


def test_claims_render_and_parse_round_trip() -> None:
    theirs = {"b-prod": claims.Claim("b", "prod", 8301), "a-staging": claims.Claim("a", "staging", 8200)}
    data = claims.render(theirs, "alice@laptop", "2026-01-01T00:00:00Z")
    assert claims.parse(data) == theirs
    doc = json.loads(data)
    assert (doc["version"], doc["updated_by"], doc["updated"], list(doc["projects"])) == (
        1, "alice@laptop", "2026-01-01T00:00:00Z", ["a-staging", "b-prod"])
    assert claims.parse(None) == {} and claims.parse(b"") == {}


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'{"projects": {"x": {"project": "a"}}}',
                                  b'{"projects": {"x": {"project": "a", "environment": "e", "port": "eighty"}}}',
                                  b'{"projects": {"x": "a"}}'])
def test_an_unreadable_claims_file_stops_the_deploy_naming_the_fix(data: bytes) -> None:
    with pytest.raises(DeployError, match=r"^.*claims\.json on the host is not a valid claims file \(.*\); fix it by hand, or remove it and deploy every environment on this host again$"):
        claims.parse(data)


def test_claim_records_ours_and_refuses_a_second_project_on_our_port(staging: Bundle, compile_env: Compile, tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    host = CannedDocker()
    claims.claim(host, Paths(str(root), staging.compose_project), staging, "alice@laptop", "2026-01-01T00:00:00Z")
    written = (root / "claims.json").read_bytes()
    assert claims.parse(written) == {"hello-gateway-staging": claims.Claim("hello-gateway", "staging", 8200)}

    other = compile_env(changed(lambda c: c.update(project="other-gateway")), "staging")
    with pytest.raises(DeployError) as err:
        claims.claim(host, Paths(str(root), other.compose_project), other, "bob@desk", "2026-01-02T00:00:00Z")
    assert str(err.value) == (
        "refusing to deploy: port 8200 is claimed on this host by 'hello-gateway-staging' "
        "(project 'hello-gateway', environment 'staging'); pick another environments.staging.port")
    assert (root / "claims.json").read_bytes() == written
    # the claims lock was released on the way out
    held, _ = LocalHost().hold(cmd.lock(str(root / "claims.lock"), None), "locked", 5)
    assert held is not None
    held.release()


# =======================================================================================
# secrets


def with_secrets(env: str, **sources: dict[str, Any]) -> dict[str, Any]:
    config = base_config()
    config["environments"][env]["secrets"] = sources
    return config


def test_the_secrets_file_holds_quoted_name_value_lines(staging: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_a_file_source_is_read_from_home(compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "vendor.key").write_text("from-a-file\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "b")
    bundle = compile_env(with_secrets("staging", VENDOR_API_KEY={"file": "~/keys/vendor.key"},
                                      BACKUP_API_KEY={"env": "SY_UNIT_STAGING_BACKUP_KEY"}))
    assert secrets_file(bundle).content.splitlines()[1:] == [b"BACKUP_API_KEY='b'", b"VENDOR_API_KEY='from-a-file'"]


def test_a_missing_optional_secret_is_skipped(compile_env: Compile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "v")
    bundle = compile_env(with_secrets("staging", VENDOR_API_KEY={"env": "SY_UNIT_STAGING_VENDOR_KEY"},
                                      BACKUP_API_KEY={"env": "SY_UNIT_STAGING_BACKUP_KEY", "optional": True}))
    sf = secrets_file(bundle)
    assert (sf.names, sf.missing_optional) == (("VENDOR_API_KEY",), ("BACKUP_API_KEY",))
    assert sf.content.splitlines()[1:] == [b"VENDOR_API_KEY='v'"]


def test_a_missing_required_env_secret_names_the_secret_and_the_variable(staging: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "b")
    with pytest.raises(DeployError) as err:
        secrets_file(staging)
    assert str(err.value) == (
        "environments.staging.secrets.VENDOR_API_KEY: the environment variable SY_UNIT_STAGING_VENDOR_KEY is not set; "
        "export it before deploying (or mark the secret `optional: true`)")


def test_an_empty_variable_counts_as_missing(staging: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "")
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "v")
    with pytest.raises(DeployError, match=r"^environments\.staging\.secrets\.BACKUP_API_KEY: the environment variable SY_UNIT_STAGING_BACKUP_KEY "):
        secrets_file(staging)


def test_a_missing_required_file_secret_names_the_secret_and_the_file(compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    bundle = compile_env(with_secrets("production", VENDOR_API_KEY={"file": "~/nowhere/vendor.key"},
                                      BACKUP_API_KEY={"file": "~/nowhere/backup.key", "optional": True}), "production")
    with pytest.raises(DeployError) as err:
        secrets_file(bundle)
    assert str(err.value) == (
        "environments.production.secrets.VENDOR_API_KEY: ~/nowhere/vendor.key does not exist; create it (mode 0600) "
        "holding the value, or mark the secret `optional: true`")


@pytest.mark.parametrize("value", ["two\nlines", "it's", "cr\rhere"])
def test_a_value_a_compose_env_file_cannot_hold_is_refused(staging: Bundle, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "b")
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", value)
    with pytest.raises(DeployError) as err:
        secrets_file(staging)
    assert str(err.value) == (
        "environments.staging.secrets.VENDOR_API_KEY: the value from $SY_UNIT_STAGING_VENDOR_KEY has a line break, "
        "a quote or a NUL in it, which a compose env file cannot hold")
    assert value not in str(err.value)


@pytest.mark.parametrize("content", [b"first\nsecond\n", b"first\0second\n", b"first'second\n"])
def test_a_file_value_a_compose_env_file_cannot_hold_is_refused(compile_env: Compile, tmp_path: Path, content: bytes) -> None:
    key = tmp_path / "vendor.key"
    key.write_bytes(content)
    bundle = compile_env(with_secrets("staging", VENDOR_API_KEY={"file": str(key)}, BACKUP_API_KEY={"file": str(key)}))
    with pytest.raises(DeployError) as err:
        secrets_file(bundle)
    assert str(err.value) == (
        f"environments.staging.secrets.BACKUP_API_KEY: the value from file {key} has a line break, "
        "a quote or a NUL in it, which a compose env file cannot hold")


def test_the_secrets_file_never_shows_its_values(staging: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "vendor-value-123")
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "backup-value-456")
    sf = secrets_file(staging)
    for shown in (repr(sf), str(sf), f"{sf}", f"{sf!r}"):
        assert "vendor-value-123" not in shown and "backup-value-456" not in shown
        assert shown == "SecretsFile(names=('BACKUP_API_KEY', 'VENDOR_API_KEY'), missing_optional=())"


# =======================================================================================
# bundle


def test_an_invalid_config_is_refused_with_its_diagnostics(compile_env: Compile, tmp_path: Path) -> None:
    config = base_config()
    config["environments"]["production"]["secrets"]["VENDOR_API_KEY"] = {"env": "SY_UNIT_STAGING_VENDOR_KEY"}
    with pytest.raises(DeployError) as err:
        compile_env(config)
    path = str(tmp_path / "config-0" / "gateway.yaml")
    text = str(err.value)
    assert re.match(re.escape(path) + r":\d+:\d+: error\[E041\] environments\.production\.secrets\.VENDOR_API_KEY\.env: "
                    r"environments 'staging' and 'production' both read a secret from the environment variable "
                    r"'SY_UNIT_STAGING_VENDOR_KEY'\n", text), text
    assert text.endswith(f"\nrefusing to deploy: {path} has errors (run `python -m compiler check {path}`)")


def test_an_unknown_environment_is_a_usage_error_listing_them(compile_env: Compile, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        compile_env(base_config(), "qa")
    path = tmp_path / "config-0" / "gateway.yaml"
    assert str(err.value) == f"unknown environment 'qa' in {path} (environments: staging, production)"


def test_a_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^.*/nope\.yaml: no such file \(run from your repository root, or pass --config\)$"):
        load_bundle(str(tmp_path / "nope.yaml"), "staging")


def test_the_release_id_is_time_then_a_digest_of_the_service_inputs(compile_env: Compile) -> None:
    bundle = compile_env(base_config(), "staging")
    when = datetime(2026, 11, 26, 7, 15, 0, tzinfo=UTC)
    rid = bundle.release_id(when)
    assert re.fullmatch(r"20261126T071500Z-[0-9a-f]{8}", rid)
    assert rid == bundle.release_id(when) == compile_env(base_config(), "staging").release_id(when)
    moved = compile_env(changed(lambda c: c["routes"]["chat"].update(fallback={"max_attempts": 2})), "staging")
    assert moved.release_id(when)[:17] == rid[:17] and moved.release_id(when) != rid
    assert sorted([bundle.release_id(datetime(2026, 11, 26, 7, 15, 1, tzinfo=UTC)), rid]) == [
        rid, bundle.release_id(datetime(2026, 11, 26, 7, 15, 1, tzinfo=UTC))]


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None and m.isfile() and m.mtime == 0 and m.mode == 0o644, m.name
            out[m.name] = f.read()
        return out


def test_the_release_tarball_is_deterministic_and_complete(compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    (code / "__pycache__").mkdir(exist_ok=True)
    (code / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0bytecode")
    (code / "stray.pyc").write_bytes(b"\0bytecode")
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "sy-unit-vendor-value-9f8e7d")
    bundle = compile_env(base_config(), "staging")

    data = bundle.tarball()
    assert data == bundle.tarball()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header either
    assert data == compile_env(base_config(), "staging").tarball()
    files = members(data)
    code_files = {f"runtime/{p.relative_to(code).as_posix()}": p.read_bytes() for p in code.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert set(files) == {"compose.yaml", "runtime.json", "Dockerfile", "manifest.json", "requirements.txt"} | set(code_files)
    assert {name: files[name] for name in code_files} == code_files
    assert files["requirements.txt"] == (code / "requirements.txt").read_bytes()
    assert {name: files[name].decode() for name in bundle.files} == bundle.files
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert b"sy-unit-vendor-value-9f8e7d" not in gzip.decompress(data)


# =======================================================================================
# output


def test_progress_redacts_the_secret_values_and_known_key_formats() -> None:
    stream = io.StringIO()
    out = Progress("staging", stream=stream, secrets=("vendor-value-123",))
    out.say("upstream said vendor-value-123 and sk-proj-abcdefghijklmnopqrstuvwx and https://u:pw@db.example/x")
    assert stream.getvalue() == "upstream said <redacted> and <redacted> and <redacted>db.example/x\n"


def test_progress_records_steps_with_their_status() -> None:
    stream = io.StringIO()
    out = Progress("staging", stream=stream, secrets=("vendor-value-123",))
    with out.step("first"):
        pass
    with pytest.raises(DeployError), out.step("second vendor-value-123"):
        raise DeployError("it broke: vendor-value-123\nmore")
    out.skipped("third", "nothing to do")
    assert [(s["step"], s["status"]) for s in out.steps] == [
        ("first", "ok"), ("second <redacted>", "failed"), ("third", "skipped")]
    assert all(isinstance(s["seconds"], float) and s["seconds"] >= 0 for s in out.steps)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "-> first" and re.fullmatch(r"   ok \(\d+\.\d\d s\)", lines[1])
    assert lines[2] == "-> second <redacted>"
    assert re.fullmatch(r"   failed after \d+\.\d\d s: it broke: <redacted>", lines[3])
    assert lines[4] == "-- third: skipped (nothing to do)"
    assert "vendor-value-123" not in stream.getvalue()


def test_json_mode_prints_one_document_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    out = Progress("staging", json_mode=True, secrets=("vendor-value-123",))
    with out.step("validate"):
        pass
    doc = {"ok": False, "environment": "staging", "action": "deploy", "release": None, "previous": None,
           "url": "http://127.0.0.1:8200", "health": "unknown", "services": {}, "error": "boom vendor-value-123"}
    out.finish(doc, "staging: deploy refused: boom")
    captured = capsys.readouterr()
    parsed = json.loads(captured.out)
    assert set(parsed) == {"ok", "environment", "action", "release", "previous", "url", "health", "services",
                           "steps", "error", "seconds"}
    assert parsed["error"] == "boom <redacted>"
    assert [s["step"] for s in parsed["steps"]] == ["validate"]
    assert "staging: deploy refused" not in captured.out


def test_text_mode_prints_the_final_line_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    out = Progress("staging", stream=io.StringIO(), secrets=("vendor-value-123",))
    out.finish({}, "staging: release R is live at http://127.0.0.1:8200 (healthy) vendor-value-123")
    assert capsys.readouterr().out == "staging: release R is live at http://127.0.0.1:8200 (healthy) <redacted>\n"


def test_json_mode_redacts_values_that_json_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    value = 'pa\\ss"w\u00f6rd-1'
    out = Progress("staging", json_mode=True, secrets=(value,))
    out.finish({"error": f"upstream echoed {value}"}, "line")
    assert value not in json.loads(capsys.readouterr().out)["error"]


# =======================================================================================
# the command line (a subprocess, as an operator runs it)


def deploy_py(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS and k != "SWITCHYARD_SSH_IDENTITY"}
    run_env["PYTHONDONTWRITEBYTECODE"] = "1"
    run_env.update(env or {})
    return subprocess.run([sys.executable, str(DEPLOY), *args], cwd=cwd, env=run_env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize(("args", "said"), [
    ((), "the following arguments are required: env"),
    (("staging", "--plan", "--status"), "argument --status: not allowed with argument --plan"),
    (("staging", "--rollback", "--history"), "argument --history: not allowed with argument --rollback"),
    (("staging", "--no-wait", "--lock-timeout", "5"), "argument --lock-timeout: not allowed with argument --no-wait"),
    (("staging", "--lock-timeout", "soon"), "argument --lock-timeout: invalid float value: 'soon'"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    write_config(tmp_path, base_config())
    proc = deploy_py(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("usage: python deploy.py ")
    assert proc.stderr.endswith(f"python deploy.py: error: {said}\n")
    assert proc.stdout == ""


@pytest.mark.parametrize("action", [(), ("--status",), ("--rollback",), ("--history",), ("--plan",)])
def test_an_unknown_environment_exits_2_listing_the_environments(tmp_path: Path, action: tuple[str, ...]) -> None:
    write_config(tmp_path, base_config())
    proc = deploy_py("qa", *action, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.splitlines()[-1] == (
        "python deploy.py: error: unknown environment 'qa' in gateway.yaml (environments: staging, production)")
    assert "Traceback" not in proc.stderr


def test_a_missing_config_exits_2(tmp_path: Path) -> None:
    proc = deploy_py("staging", "--config", "nope.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.splitlines()[-1] == (
        "python deploy.py: error: nope.yaml: no such file (run from your repository root, or pass --config)")


def local_config(deploy_dir: Path, port: int) -> dict[str, Any]:
    return {
        "version": 1, "project": "hello-gateway",
        "providers": {"mock": {"adapter": "mock", "models": {"echo": {"context_window": 8192}}}},
        "routes": {"chat": {"candidates": ["mock/echo"]}},
        "environments": {"dev": {"target": "local", "port": port, "deploy_dir": str(deploy_dir)}},
    }


def test_an_invalid_config_exits_1_with_its_diagnostics_and_touches_nothing(tmp_path: Path) -> None:
    config = local_config(tmp_path / "srv", free_port())
    config["routes"]["chat"]["candidates"] = ["mock/nope"]
    write_config(tmp_path / "repo", config)
    proc = deploy_py("dev", "--yes", cwd=tmp_path / "repo")
    assert proc.returncode == 1, proc
    assert proc.stdout.splitlines() == [
        "dev: deploy refused: gateway.yaml:12:7: error[E021] routes.chat.candidates[0]: provider 'mock' has no model 'nope'",
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
        "staging: deploy refused: environments.staging.secrets.VENDOR_API_KEY: the environment variable "
        "SY_UNIT_STAGING_VENDOR_KEY is not set; export it before deploying (or mark the secret `optional: true`)\n")
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
            pytest.fail("the Docker CLI does not answer `docker info`; in CI it must", pytrace=False)
        pytest.skip("the Docker CLI does not answer `docker info`")
    deploy_dir = tmp_path / "srv" / "switchyard"
    port = free_port()
    write_config(tmp_path / "repo", local_config(deploy_dir, port))

    proc = deploy_py("dev", "--plan", cwd=tmp_path / "repo")
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("Plan for dev on localhost (compose project hello-gateway-dev), running now: nothing\n")
    assert re.search(r"^  gateway  create  not running yet", proc.stdout, re.MULTILINE), proc.stdout
    # Built when the image is not on this machine (it is named for this config's inputs).
    up = re.search(rf"^  \d+\. (build the image and )?\(re\)create gateway: docker compose -p hello-gateway-dev "
                   rf"-f {re.escape(str(deploy_dir))}/hello-gateway-dev/releases/\d{{8}}T\d{{6}}Z-[0-9a-f]{{8}}/compose\.yaml "
                   r"up --detach --no-deps (--build )?gateway$", proc.stdout, re.MULTILINE)
    assert up is not None, proc.stdout
    assert bool(up.group(1)) == bool(up.group(2))
    assert proc.stdout.endswith("dev: plan only, nothing was changed (1 service(s) would change)\n")
    assert not (tmp_path / "srv").exists()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["gateway.yaml"]

    proc = deploy_py("dev", "--plan", "--json", cwd=tmp_path / "repo")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["environment"], doc["action"], doc["previous"], doc["url"], doc["error"]) == (
        True, "dev", "plan", None, f"http://127.0.0.1:{port}", None)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", doc["release"])
    assert doc["services"]["gateway"]["action"] == "create"
    assert doc["services"]["gateway"]["reasons"][0] == "not running yet"
    assert all(set(s) == {"step", "seconds", "status"} and s["status"] == "ok" for s in doc["steps"])
    assert not (tmp_path / "srv").exists()


def test_secret_values_never_reach_the_manifest_hash_inputs(compile_env: Compile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing a secret's VALUE changes no artifact (only the secrets file, compared on the host)."""
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
    plan = make_plan(inputs(new, old), host_with(old), image_present=True, secrets_changed=False)
    assert actions(plan) == {"gateway": (UNCHANGED, ())}


# =======================================================================================
# the command line against this machine with a stand-in `docker` on PATH
#
# A `target: local` environment whose deploy_dir is laid out as a deploy leaves it, and a
# `docker` executable that answers `ps`, `inspect` and `image inspect` from a JSON file (and
# logs every call). Nothing else is answered: a command that would change something fails.

FAKE_DOCKER = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["SY_FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
with open(os.environ["SY_FAKE_DOCKER_STATE"]) as f:
    state = json.load(f)
if args[:1] == ["ps"] and "--format" in args:
    for c in state["containers"]:
        if c["State"]["Status"] == "running":
            project = c["Config"]["Labels"].get("com.docker.compose.project", "")
            print(c["Id"] + "\t" + project + "\t" + c.get("Ports", ""))
elif args[:1] == ["ps"]:
    key, _, value = args[args.index("--filter") + 1].removeprefix("label=").partition("=")
    for c in state["containers"]:
        if c["Config"]["Labels"].get(key) == value:
            print(c["Id"])
elif args[:3] == ["inspect", "--type", "container"]:
    print(json.dumps([c for c in state["containers"] if c["Id"] in args[3:]]))
elif args[:2] == ["image", "inspect"]:
    if args[-1] not in state["images"]:
        sys.exit("Error: No such image: " + args[-1])
    print("sha256:" + "9" * 64)
else:
    sys.exit("fake docker: not answered: " + " ".join(args))
'''
READ_ONLY_DOCKER = {("ps",), ("inspect",), ("image", "inspect")}


class LocalHostSetup:
    """A repository with a `target: local` gateway.yaml, its deploy_dir, and the stand-in docker."""

    def __init__(self, tmp_path: Path) -> None:
        self.repo = tmp_path / "repo"
        self.deploy_dir = tmp_path / "srv"
        self.bin = tmp_path / "bin"
        self.state_file = tmp_path / "docker-state.json"
        self.log = tmp_path / "docker-calls.jsonl"
        self.port = free_port()
        self.config = local_config(self.deploy_dir, self.port)
        write_config(self.repo, self.config)
        self.bin.mkdir()
        (self.bin / "docker").write_text(FAKE_DOCKER.replace("{python}", sys.executable))
        (self.bin / "docker").chmod(0o755)
        self.containers: list[dict[str, Any]] = []
        self.images: list[str] = []
        self.save()

    def save(self) -> None:
        self.state_file.write_text(json.dumps({"containers": self.containers, "images": self.images}))

    def bundle(self) -> Bundle:
        return load_bundle(str(self.repo / "gateway.yaml"), "dev")

    def env_dir(self, bundle: Bundle) -> Path:
        return Path(os.path.realpath(self.deploy_dir)) / bundle.compose_project

    def deployed(self, release: str) -> Bundle:
        """As a successful deploy of the current gateway.yaml as `release` leaves the host."""
        bundle = self.bundle()
        env_dir = self.env_dir(bundle)
        (env_dir / "releases" / release).mkdir(parents=True)
        env_dir.chmod(0o700)
        for name, text in bundle.files.items():
            (env_dir / "releases" / release / name).write_text(text)
        (env_dir / "current").symlink_to(f"releases/{release}")
        (env_dir / "secrets.env").write_bytes(secrets_file(bundle).content)
        (env_dir / "history.jsonl").write_text(json.dumps({"action": "deploy", "release": release, "result": "ok",
                                                           "who": "alice@laptop", "when": "2026-01-01T00:00:00Z"}) + "\n")
        self.containers.append(self.container(bundle, release, "gateway", ports=f"127.0.0.1:{self.port}->8000/tcp"))
        self.images.append(str(bundle.manifest["image"]))
        self.save()
        return bundle

    def container(self, bundle: Bundle, release: str, service: str, *, ports: str = "") -> dict[str, Any]:
        cp = bundle.compose_project
        return {
            "Id": f"{service}-{release}".encode().hex().ljust(64, "0")[:64], "Name": f"/{cp}-{service}-1",
            "Image": "sha256:" + "9" * 64, "Ports": ports,
            "State": {"Status": "running", "StartedAt": "2026-01-01T00:00:00.000000000Z", "ExitCode": 0,
                      "Health": {"Status": "healthy", "Log": []}},
            "Config": {"Labels": {
                "dev.switchyard.managed-by": "switchyard", "dev.switchyard.project": bundle.config.project,
                "dev.switchyard.environment": bundle.env, "dev.switchyard.service": service,
                "com.docker.compose.project": cp, "com.docker.compose.service": service,
                "com.docker.compose.project.config_files": str(self.env_dir(bundle) / "releases" / release / "compose.yaml"),
            }},
        }

    def foreign(self, project: str, *, ports: str = "", labels: dict[str, str] | None = None) -> None:
        self.containers.append({
            "Id": project.encode().hex().ljust(64, "f")[:64], "Name": f"/{project}-web-1", "Image": "sha256:" + "8" * 64,
            "Ports": ports, "State": {"Status": "running", "StartedAt": "2026-01-01T00:00:00Z", "ExitCode": 0},
            "Config": {"Labels": {"com.docker.compose.project": project, "com.docker.compose.service": "web", **(labels or {})}},
        })
        self.save()

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return deploy_py(*args, cwd=self.repo, env={
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "SY_FAKE_DOCKER_STATE": str(self.state_file), "SY_FAKE_DOCKER_LOG": str(self.log),
        })

    def docker_calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def snapshot(self) -> dict[str, tuple[int, bytes | str]]:
        """Every path under deploy_dir with its mode and content (or link target)."""
        out: dict[str, tuple[int, bytes | str]] = {}
        for p in sorted(self.deploy_dir.rglob("*")):
            st = p.lstat()
            body: bytes | str = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else b""
            out[str(p.relative_to(self.deploy_dir))] = (st.st_mode, body)
        return out


@pytest.fixture
def local(tmp_path: Path) -> LocalHostSetup:
    return LocalHostSetup(tmp_path)


def read_only(calls: list[list[str]]) -> bool:
    return all(tuple(c[:1]) in READ_ONLY_DOCKER or tuple(c[:2]) in READ_ONLY_DOCKER for c in calls)


def test_a_plan_with_nothing_changed_says_so_and_touches_nothing(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    before = local.snapshot()
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines() == [
        f"Plan for dev on localhost: nothing to do; release {OLD} is up to date.",
        "  SERVICE  ACTION     WHY",
        "  gateway  unchanged  -",
        "dev: plan only, nothing would change",
    ]
    assert local.snapshot() == before
    assert local.docker_calls() and read_only(local.docker_calls()), local.docker_calls()


def test_a_json_plan_with_nothing_changed_is_one_json_document(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--plan", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["action"], doc["release"], doc["services"]) == ("plan", OLD, {"gateway": {"action": "unchanged", "reasons": []}})


def test_a_plan_for_a_routing_change_restarts_the_gateway_without_a_build(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    before = local.snapshot()
    local.config["routes"]["chat"]["fallback"] = {"max_attempts": 2}
    write_config(local.repo, local.config)

    proc = local.deploy("dev", "--plan", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], doc["previous"], doc["error"]) == (True, "plan", OLD, None)
    assert doc["services"] == {"gateway": {"action": "restart", "reasons": ["runtime.json changed (routes.chat)"]}}
    ups = [s for s in doc["plan"] if " up --detach " in s]
    assert len(ups) == 1 and ups[0].startswith("(re)create gateway: docker compose -p hello-gateway-dev ")
    assert ups[0].endswith(" up --detach --no-deps gateway"), ups
    assert not any("write " in s and "secrets.env" in s for s in doc["plan"])  # the secrets did not change
    assert local.snapshot() == before
    assert local.docker_calls() and read_only(local.docker_calls()), local.docker_calls()


def test_a_plan_refuses_a_port_another_project_publishes(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    local.foreign("neighbour", ports=f"127.0.0.1:{local.port}->80/tcp, [::1]:{local.port}->80/tcp")
    local.config["routes"]["chat"]["fallback"] = {"max_attempts": 2}
    write_config(local.repo, local.config)
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 1, proc
    assert proc.stdout.splitlines()[-1] == (
        f"dev: plan refused: this deploy would be refused: port {local.port} is already published on this host "
        f"by 'neighbour'; pick another environments.dev.port")


def test_a_plan_refuses_a_compose_project_used_by_containers_we_do_not_own(local: LocalHostSetup) -> None:
    local.foreign("hello-gateway-dev")  # compose's label, none of ours
    local.deploy_dir.mkdir()
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 1, proc
    assert proc.stdout.startswith(
        "dev: plan refused: the compose project 'hello-gateway-dev' on this host is already used by containers "
        "that Switchyard does not own for this environment: hello-gateway-dev-web-1 (")
    assert local.docker_calls() and read_only(local.docker_calls())


def test_status_reports_the_live_release_and_its_containers(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--status", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], doc["release"], doc["url"]) == (True, "status", OLD, f"http://127.0.0.1:{local.port}")
    [gateway] = doc["containers"]["gateway"]
    assert (gateway["state"], gateway["health"], gateway["release"], gateway["owned"]) == ("running", "healthy", OLD, True)
    assert {"id", "state", "health", "started_at", "release"} <= set(gateway)
    assert doc["last"]["who"] == "alice@laptop"


def test_history_lists_the_recorded_deploys(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--history", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], [e["release"] for e in doc["entries"]]) == (True, "history", [OLD])


def test_one_probe_reads_releases_current_image_secrets_and_containers(local: LocalHostSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = local.deployed(OLD)
    env_dir = local.env_dir(bundle)
    (env_dir / "releases" / NEW).mkdir()
    (env_dir / "releases" / NEW / "FAILED").write_text("x\n")
    (env_dir / "releases" / "stray-file").write_text("not a release")
    monkeypatch.setenv("PATH", f"{local.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SY_FAKE_DOCKER_STATE", str(local.state_file))
    monkeypatch.setenv("SY_FAKE_DOCKER_LOG", str(local.log))
    root = str(env_dir.parent)
    content = secrets_file(bundle).content
    image = str(bundle.manifest["image"])

    state = read_state(LocalHost(), root, bundle.compose_project, bundle.config.project, "dev", image=image, secrets=content)
    assert (state.releases, state.failed, state.current) == ([OLD, NEW], {NEW}, OLD)
    assert state.image_present is True and state.secrets_same is True
    assert [(c.service, c.release, c.owned) for c in state.containers] == [("gateway", OLD, True)]
    assert state.manifests == {OLD: bundle.manifest}

    other = read_state(LocalHost(), root, bundle.compose_project, bundle.config.project, "dev",
                       image="nope/gateway:0", secrets=content + b"B='2'\n")
    assert other.image_present is False and other.secrets_same is False
    plain = read_state(LocalHost(), root, bundle.compose_project, bundle.config.project, "dev")
    assert plain.image_present is None and plain.secrets_same is None
    # Only read-only docker commands ran, one probe per read_state.
    assert read_only(local.docker_calls())

    never = read_state(LocalHost(), root, "never-deployed", bundle.config.project, "dev")
    assert (never.releases, never.current, never.containers, never.exists) == ([], None, [], False)


def test_a_plan_without_the_secrets_still_plans_and_says_a_deploy_would_refuse(local: LocalHostSetup) -> None:
    local.config["providers"]["vendor"] = {
        "adapter": "openai-compatible", "base_url": "http://127.0.0.1:9/v1",
        "credentials": {"api_key": "VENDOR_API_KEY"}, "models": {"small": {"context_window": 8192}},
    }
    local.config["routes"]["chat"]["candidates"] = ["mock/echo", "vendor/small"]
    local.config["environments"]["dev"]["secrets"] = {"VENDOR_API_KEY": {"env": "SYTEST_UNSET_SECRET_VAR"}}
    write_config(local.repo, local.config)
    before = local.snapshot()
    plan = local.deploy("dev", "--plan")
    assert plan.returncode == 0, plan
    assert "gateway  create  not running yet" in plan.stdout
    assert ("note: environments.dev.secrets.VENDOR_API_KEY: the environment variable SYTEST_UNSET_SECRET_VAR is not set"
            in plan.stderr), plan.stderr
    assert "a deploy would refuse" in plan.stderr
    assert "write " not in plan.stdout  # no secrets step planned without the values
    assert local.snapshot() == before and read_only(local.docker_calls())
    real = local.deploy("dev", "--yes")
    assert real.returncode == 1 and "SYTEST_UNSET_SECRET_VAR is not set" in real.stdout, real
    assert "-> connect" not in real.stderr
