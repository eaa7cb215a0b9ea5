"""deploy.py piece by piece, without a Docker engine or an sshd (docs/deploy.md, docs/artifacts.md).

- commands: the exact argument lists; the fixed `sh` scripts run for real on this machine
  (LocalHost) against directories whose names carry spaces, quotes and `$(...)`, with a
  stand-in `docker` on PATH where a script calls it (the proxy's stage / promote / reload /
  restore, the removal of containers, the listing of HAProxy's workers);
- plan: the two gateway slots and the proxy in front of them — create / replace / rebuild /
  reload / recreate / remove and the reasons, from manifests that the real compiler makes
  out of a small gateway.yaml and its mutations; which slot is live; what an interrupted
  deploy or an earlier Switchyard left;
- the steps a plan turns into (`steps_for`), which release a rollback brings back, the proxy's
  live-config header;
- claims, secrets, the bundle (release id, tarball), progress output;
- the CLI in a subprocess: usage errors, an invalid config, a missing secret — all before any
  connection; plans, status and history against a `target: local` host whose `docker` is a
  stand-in.

Only `test_a_local_plan_creates_nothing` needs the Docker CLI (it asks whether the images
exist); it skips without one locally and fails in CI.
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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.manifest import Manifest, release_manifest
from deployer import claims
from deployer import commands as cmd
from deployer.activate import Target, steps_for
from deployer.bundle import Bundle, DeployError, UsageError, load_bundle
from deployer.hosts import CommandFailed, LocalHost, Result
from deployer.output import Progress
from deployer.plan import (
    CREATE,
    REBUILD,
    RECREATE,
    RELOAD,
    REMOVE,
    REPLACE,
    UNCHANGED,
    DeployPlan,
    Inputs,
    live_slot,
    make_plan,
    other_slot,
    parse_compose,
)
from deployer.rollback import live_sequence, rollback_target
from deployer.secrets_env import secrets_file
from deployer.state import (
    Container,
    HostState,
    Paths,
    ProxyHeader,
    check_ownership,
    parse_container,
    read_files,
    read_state,
    resolve_root,
)
from deployer.steps import (
    BuildImages,
    CheckCompose,
    CutOver,
    Drain,
    MakeCurrent,
    Prune,
    RecordHistory,
    RemoveGateways,
    RemoveServices,
    StageProxyConfig,
    StartGateways,
    Step,
    UploadRelease,
    WaitReady,
    WriteSecrets,
)
from tests.gateway_env import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy.py"
RUNTIME = ROOT / "runtime"
SCRUB = [
    "env",
    "-u",
    "COMPOSE_REMOVE_ORPHANS",
    "-u",
    "COMPOSE_FILE",
    "-u",
    "COMPOSE_PROJECT_NAME",
    "-u",
    "COMPOSE_PROFILES",
    "-u",
    "COMPOSE_PATH_SEPARATOR",
    "-u",
    "COMPOSE_ENV_FILES",
    "COMPOSE_IGNORE_ORPHANS=1",
]
# A directory name a shell would mangle if any script spliced it into its text.
WEIRD = "we ird 'sq' \"dq\" $(touch pwned) `touch pwned` ;touch pwned; *"
OLD = "20260101T000000Z-0a0a0a0a"  # the release running on the "host"
NEW = "20260102T000000Z-0b0b0b0b"  # the release being deployed
SECRET_VARS = (
    "SY_UNIT_STAGING_VENDOR_KEY",
    "SY_UNIT_STAGING_BACKUP_KEY",
    "SY_UNIT_PRODUCTION_VENDOR_KEY",
    "SY_UNIT_PRODUCTION_BACKUP_KEY",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------------------
# a small gateway.yaml (the shape of schema/examples/valid/minimal.yaml) and its bundles


def base_config() -> dict[str, Any]:
    """minimal.yaml plus two providers that need keys; staging (1 replica) and production (2)."""

    def vendor(key: str) -> dict[str, Any]:
        return {
            "adapter": "openai-compatible",
            "base_url": "http://127.0.0.1:9/v1",
            "credentials": {"api_key": key},
            "models": {"small": {"context_window": 8192}},
        }

    def env(name: str, port: int, replicas: int) -> dict[str, Any]:
        return {
            "target": "ssh",
            "host": "127.0.0.1",
            "port": port,
            "replicas": replicas,
            "secrets": {
                "VENDOR_API_KEY": {"env": f"SY_UNIT_{name.upper()}_VENDOR_KEY"},
                "BACKUP_API_KEY": {"env": f"SY_UNIT_{name.upper()}_BACKUP_KEY"},
            },
        }

    return {
        "version": 1,
        "project": "hello-gateway",
        "providers": {
            "mock": {"adapter": "mock", "models": {"echo": {"context_window": 8192}}},
            "vendor": vendor("VENDOR_API_KEY"),
            "backup": vendor("BACKUP_API_KEY"),
        },
        "routes": {"chat": {"candidates": ["mock/echo", "vendor/small", "backup/small"]}},
        "environments": {
            "staging": env("staging", 8200, 1),
            "production": env("production", 8300, 2),
        },
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

    Always named gateway.yaml: the file's name is in the header comment of the proxy's
    haproxy-<slot>.cfg, whose hash the plan compares with the live one.
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


def container_id(*parts: str) -> str:
    return "".join(parts).encode().hex().ljust(64, "0")[:64]


def gateways(
    bundle: Bundle,
    slot: str = "a",
    release: str = OLD,
    *,
    state: str = "running",
    health: str = "healthy",
) -> list[Container]:
    """The gateways `bundle` runs in `slot` (one per replica), as created from `release`."""
    names = bundle.manifest.services.gateway.slots[slot]
    return [
        Container(
            id=container_id(name, release),
            name=f"{bundle.compose_project}-{name}-1",
            service="gateway",
            compose_service=name,
            slot=slot,
            state=state,
            health=health,
            started_at="2026-01-01T00:00:00Z",
            release=release,
            image_id="sha256:" + "1" * 64,
            owned=True,
            ip=f"172.20.0.{i}",
        )
        for i, name in enumerate(names, 2)
    ]


def proxy(bundle: Bundle, release: str = OLD, *, state: str = "running") -> Container:
    return Container(
        id=container_id("proxy", release),
        name=f"{bundle.compose_project}-proxy-1",
        service="proxy",
        compose_service="proxy",
        state=state,
        health="none",
        started_at="2026-01-01T00:00:00Z",
        release=release,
        image_id="sha256:" + "2" * 64,
        owned=True,
        ip="172.20.0.1",
    )


def header(bundle: Bundle, slot: str = "a", release: str = OLD) -> ProxyHeader:
    """What deploy writes at the top of the live haproxy.cfg when `bundle`'s `slot` config goes live."""
    return ProxyHeader(release, slot, bundle.manifest.services.proxy.config[slot])


def host_with(
    old: Bundle,
    slot: str = "a",
    containers: list[Container] | None = None,
    *,
    live_config: bool = True,
) -> HostState:
    """A host where `old` was deployed as release OLD: its gateways in `slot`, the proxy serving them."""
    return HostState(
        paths=Paths("/srv/switchyard", old.compose_project),
        exists=True,
        current=OLD,
        releases=[OLD],
        containers=[*gateways(old, slot), proxy(old)] if containers is None else containers,
        manifests={OLD: old.manifest},
        proxy_live=header(old, slot) if live_config else None,
    )


def empty_host(bundle: Bundle) -> HostState:
    return HostState(Paths("/srv/switchyard", bundle.compose_project), exists=False)


def inputs(
    new: Bundle, old: Bundle | None = None, manifest: dict[str, Any] | None = None
) -> Inputs:
    olds = {OLD: old} if old else {}
    return Inputs(
        Manifest.from_json(manifest) if manifest else new.manifest,
        json.loads(new.files["runtime.json"]),
        parse_compose(new.files["compose.yaml"]),
        {rid: json.loads(b.files["runtime.json"]) for rid, b in olds.items()},
        {rid: parse_compose(b.files["compose.yaml"]) for rid, b in olds.items()},
    )


def plan_of(
    new: Bundle,
    host: HostState,
    old: Bundle | None = None,
    *,
    image: bool = True,
    proxy_image: bool = True,
    secrets_changed: bool = False,
    serving: Container | None = None,
    manifest: dict[str, Any] | None = None,
) -> DeployPlan:
    """make_plan for `new` on `host`; `image` / `proxy_image`: whether its images are on the host."""
    m = Manifest.from_json(manifest) if manifest else new.manifest
    return make_plan(
        inputs(new, old, manifest),
        host,
        images={m.image: image, m.proxy_image: proxy_image},
        secrets_changed=secrets_changed,
        serving=serving,
    )


def actions(plan: DeployPlan) -> dict[str, tuple[str, tuple[str, ...]]]:
    listed = {s.service: (s.action, s.reasons) for s in plan.services}
    assert len(listed) == len(plan.services), (
        f"two services of the plan share a name: {plan.services}"
    )
    return listed


def differing(a: Manifest, b: Manifest, service: str) -> set[str]:
    """Which of image/config/definition differ between two manifests for `service`."""
    return {
        k
        for k in ("image", "config", "definition")
        if a.to_json()["services"][service][k] != b.to_json()["services"][service][k]
    }


def route_change(c: dict[str, Any]) -> None:
    c["routes"]["chat"]["fallback"] = {"max_attempts": 2}


# =======================================================================================
# commands: argument lists


def test_compose_up_starts_exactly_the_named_services_from_images_already_built() -> None:
    assert cmd.compose_up(
        "hello-gateway-staging", "/srv/s/releases/R/compose.yaml", ["gateway-b1", "gateway-b2"]
    ) == [
        *SCRUB,
        "docker",
        "compose",
        "-p",
        "hello-gateway-staging",
        "-f",
        "/srv/s/releases/R/compose.yaml",
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "gateway-b1",
        "gateway-b2",
    ]


def test_images_are_built_by_their_own_command_one_service_per_image() -> None:
    assert cmd.compose_build("p", "/f.yaml", ["gateway-a1", "proxy"]) == [
        *SCRUB,
        "docker",
        "compose",
        "-p",
        "p",
        "-f",
        "/f.yaml",
        "build",
        "gateway-a1",
        "proxy",
    ]


def test_the_staged_proxy_config_is_checked_by_haproxy_in_the_running_proxy_or_a_throwaway_one() -> (
    None
):
    check = ["haproxy", "-c", "-f", "/etc/switchyard/proxy/haproxy.cfg.next"]
    assert cmd.check_proxy_config("/d/proxy", "p/proxy:1", "c0ffee") == [
        "docker",
        "exec",
        "c0ffee",
        *check,
    ]
    assert cmd.check_proxy_config("/d/proxy", "p/proxy:1", None) == [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        "dev.switchyard.managed-by=switchyard",
        "--volume",
        "/d/proxy:/etc/switchyard/proxy:ro",
        "p/proxy:1",
        *check,
    ]


def every_command() -> list[list[str]]:
    return [
        cmd.compose("p", "/f.yaml", "ps"),
        cmd.compose_config_check("p", "/f.yaml"),
        cmd.compose_up("p", "/f.yaml", ["gateway-a1"]),
        cmd.compose_build("p", "/f.yaml", ["gateway-a1", "proxy"]),
        cmd.project_containers("p"),
        cmd.published_containers(),
        cmd.inspect(["abc"]),
        cmd.image_ids(["p/gateway:1"]),
        cmd.remove_image("p/gateway:1"),
        cmd.stop_and_remove(["abc"]),
        cmd.logs("abc"),
        cmd.make_env_dir("/d"),
        cmd.make_env_dir("/d", ["true"]),
        cmd.unpack_release("/t.tgz", "/d/r"),
        cmd.remove_leftovers("/d/releases", [".x"]),
        cmd.point_current("/d", "R"),
        cmd.proxy_workers("c"),
        cmd.stage_proxy_config("/d/r/proxy/haproxy-a.cfg", "/d/proxy", "# h"),
        cmd.check_proxy_config("/d/proxy", "p/proxy:1", "c"),
        cmd.check_proxy_config("/d/proxy", "p/proxy:1", None),
        cmd.reload_proxy("/d/proxy", "c"),
        cmd.restore_proxy_config("/d/proxy", "c"),
        cmd.promote_proxy_config("/d/proxy"),
        cmd.probe("/d", "p", ("p/gateway:1", "p/proxy:1"), True, "/claims.json"),
        cmd.cat_files(["/a", "/b"]),
        cmd.mark_failed("/d/r"),
        cmd.remove_release("/d", "R"),
        cmd.replace_if_changed("/a", "/b"),
        cmd.append_line("/h", "/l.json"),
        cmd.resolve_root("/d", True),
        cmd.resolve_root("/d", False),
        cmd.lock("/l", None),
        cmd.lock("/l", 5),
        cmd.deploy_lock("/d", "/d/deploy.lock", None, "/d/lock.json", "{}"),
        cmd.serialised("/l", ["true"]),
    ]


def test_no_command_takes_anything_down_prunes_or_removes_orphans() -> None:
    for argv in every_command():
        words = " ".join(argv).split()
        assert not {
            "down",
            "prune",
            "--remove-orphans",
            "--force-recreate",
            "system",
            "volume",
            "network",
        } & set(words), argv


def test_every_compose_command_runs_with_project_file_and_scrubbed_variables() -> None:
    composes = [argv for argv in every_command() if "compose" in argv and argv[0] == "env"]
    assert len(composes) == 4
    for argv in composes:
        assert argv[: len(SCRUB) + 6] == [
            *SCRUB,
            "docker",
            "compose",
            "-p",
            "p",
            "-f",
            "/f.yaml",
        ], argv


def test_the_scrub_prefix_really_unsets_the_compose_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in cmd.SCRUBBED:
        monkeypatch.setenv(name, "set-by-the-operator")
    monkeypatch.setenv("SY_UNIT_KEPT", "kept")
    monkeypatch.delenv("COMPOSE_IGNORE_ORPHANS", raising=False)
    argv = cmd.compose("p", "/f.yaml")
    prefix = argv[: argv.index("docker")]
    seen = dict(
        line.split("=", 1)
        for line in LocalHost().run([*prefix, "env"]).stdout.splitlines()
        if "=" in line
    )
    assert [name for name in cmd.SCRUBBED if name in seen] == []
    assert seen["SY_UNIT_KEPT"] == "kept"
    # The other slot's gateways are orphans to compose: it is told to leave them be, quietly.
    assert seen["COMPOSE_IGNORE_ORPHANS"] == "1"


def test_an_unused_image_is_untagged_by_its_exact_name_never_forced() -> None:
    assert cmd.remove_image("p/gateway:abc") == ["docker", "image", "rm", "p/gateway:abc"]


def test_lock_commands() -> None:
    assert cmd.lock("/d/deploy.lock", None) == [
        "flock",
        "--nonblock",
        "--conflict-exit-code",
        "75",
        "/d/deploy.lock",
        "sh",
        "-c",
        "echo locked; exec cat >/dev/null",
    ]
    assert cmd.lock("/d/deploy.lock", 2.5)[1:3] == ["--timeout", "2"]
    assert cmd.lock("/d/deploy.lock", 0.2)[1:3] == ["--timeout", "1"]
    assert cmd.serialised("/d/compose.lock", ["docker", "ps"]) == [
        "flock",
        "--timeout",
        "900",
        "/d/compose.lock",
        "docker",
        "ps",
    ]


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
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_unpack_release_replaces_the_directory_whole(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    final = weird / "releases" / NEW
    final.mkdir()
    (final / "stale.txt").write_text("from an interrupted attempt")
    packed = weird / "releases" / f".{NEW}.tar.gz"
    packed.write_bytes(tarball({"compose.yaml": b"name: p\n", "runtime/app.py": b"print(1)\n"}))

    sh(cmd.unpack_release(str(packed), str(final)))

    assert tree(final) == {"compose.yaml": b"name: p\n", "runtime/app.py": b"print(1)\n"}
    assert sorted(p.name for p in (weird / "releases").iterdir()) == [
        NEW
    ]  # no tarball, no .tmp left


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
    assert (
        weird / "releases" / NEW / "FAILED"
    ).read_text() == "never went live; see history.jsonl\n"
    sh(
        cmd.mark_failed(str(weird / "releases" / OLD))
    )  # never uploaded: nothing to mark, nothing made
    assert sorted(p.name for p in (weird / "releases").iterdir()) == [NEW]


def test_cat_files_reads_several_files_in_one_command(weird: Path) -> None:
    weird.mkdir()
    (weird / "a.json").write_text('{"a": 1}\n')
    (weird / "b.yaml").write_text("no newline at the end")
    (weird / "empty").write_text("")
    paths = [
        str(weird / "a.json"),
        str(weird / "missing"),
        str(weird / "b.yaml"),
        str(weird / "empty"),
    ]
    assert read_files(LocalHost(), paths) == {
        paths[0]: '{"a": 1}\n',
        paths[1]: None,
        paths[2]: "no newline at the end",
        paths[3]: "",
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
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "changed\n"  # no target yet
    assert target.read_text() == "A='1'\n" and not new.exists()

    new.write_text("A='1'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "same\n"
    assert target.read_text() == "A='1'\n" and not new.exists()

    new.write_text("A='2'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "changed\n"
    assert target.read_text() == "A='2'\n" and not new.exists()
    # The one it replaced is kept, with its mode, and put back by restore_previous.
    prev = weird / "secrets.env.prev"
    assert prev.read_text() == "A='1'\n"
    sh(cmd.restore_previous(str(target)))
    assert target.read_text() == "A='1'\n" and not prev.exists()
    sh(cmd.restore_previous(str(target)))  # nothing to put back: a no-op
    assert target.read_text() == "A='1'\n"


def test_append_line(weird: Path) -> None:
    weird.mkdir()
    history = weird / "history.jsonl"
    sh(cmd.append_line(str(history)), stdin=b'{"n": 1}\n')
    sh(cmd.append_line(str(history)), stdin=b'{"n": "$(touch pwned)"}\n')
    assert history.read_text() == '{"n": 1}\n{"n": "$(touch pwned)"}\n'


def test_resolve_root_creates_or_reports_absent(weird: Path) -> None:
    assert sh(cmd.resolve_root(str(weird), False)).stdout == "absent\n"
    assert not weird.exists()
    assert resolve_root(LocalHost(), str(weird), create=False, env="staging") is None

    assert sh(cmd.resolve_root(str(weird), True)).stdout == os.path.realpath(weird) + "\n"
    assert weird.is_dir()
    assert resolve_root(LocalHost(), str(weird), create=False, env="staging") == os.path.realpath(
        weird
    )


def test_a_deploy_dir_that_is_a_file_is_refused_naming_the_setting(weird: Path) -> None:
    weird.write_text("not a directory")
    assert sh(cmd.resolve_root(str(weird), True)).stdout == "notdir\n"
    with pytest.raises(DeployError) as err:
        resolve_root(LocalHost(), str(weird), create=True, env="staging")
    assert str(err.value) == (
        f"environments.staging.deploy_dir: {weird} on localhost is a file, not a directory; "
        "pick another deploy_dir, or move that file away"
    )
    assert weird.read_text() == "not a directory"


def test_a_home_relative_deploy_dir_on_this_machine_is_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    assert resolve_root(
        LocalHost(), "~/switchyard", create=True, env="staging"
    ) == os.path.realpath(home / "switchyard")
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
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
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


# -- scripts that call docker: run here with a stand-in `docker` that logs its calls ----

STAND_IN_DOCKER = r"""#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["SY_FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:1] == ["exec"]:
    canned = os.environ.get("SY_FAKE_DOCKER_EXEC_STDOUT")
    if canned is not None:
        sys.stdout.write(canned)
        sys.exit(0)
    sys.exit(subprocess.run(args[2:]).returncode)   # "in the container": here
sys.exit(int(os.environ.get("SY_FAKE_DOCKER_EXIT_" + args[0].upper(), "0")))
"""
# A container reference that would run something if a script spliced it into its text.
HOSTILE_ID = "c0ffee $(touch pwned) `touch pwned`;touch pwned"


class StandInDocker:
    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        directory.mkdir()
        self.log = directory / "calls.jsonl"
        (directory / "docker").write_text(STAND_IN_DOCKER.replace("{python}", sys.executable))
        (directory / "docker").chmod(0o755)
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("SY_FAKE_DOCKER_LOG", str(self.log))
        monkeypatch.delenv("SY_FAKE_DOCKER_EXEC_STDOUT", raising=False)

    def exec_prints(self, text: str) -> None:
        self.monkeypatch.setenv("SY_FAKE_DOCKER_EXEC_STDOUT", text)

    def fails(self, subcommand: str, code: int = 1) -> None:
        self.monkeypatch.setenv(f"SY_FAKE_DOCKER_EXIT_{subcommand.upper()}", str(code))

    def calls(self) -> list[list[str]]:
        return (
            [json.loads(line) for line in self.log.read_text().splitlines()]
            if self.log.exists()
            else []
        )


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandInDocker:
    return StandInDocker(tmp_path / "stand-in-bin", monkeypatch)


def test_stop_and_remove_stops_then_removes_exactly_the_given_containers(
    weird: Path, docker: StandInDocker
) -> None:
    sh(cmd.stop_and_remove(["a" * 64, HOSTILE_ID]))
    assert docker.calls() == [
        ["stop", "--", "a" * 64, HOSTILE_ID],
        [
            "rm",
            "--force",
            "--volumes",
            "--",
            "a" * 64,
            HOSTILE_ID,
        ],  # anonymous volumes only; `data` is named
    ]


def test_stop_and_remove_still_removes_when_the_stop_fails(
    weird: Path, docker: StandInDocker
) -> None:
    docker.fails("stop")  # say, one of them had already exited and been removed
    sh(cmd.stop_and_remove(["b" * 64]))
    assert [c[0] for c in docker.calls()] == ["stop", "rm"]
    docker.fails("rm")
    with pytest.raises(CommandFailed):  # but a removal that fails is reported
        sh(cmd.stop_and_remove(["b" * 64]))


def proxy_files(proxy_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(proxy_dir.iterdir())}


@pytest.fixture
def release_cfg(weird: Path) -> Path:
    """A release's proxy/haproxy-b.cfg, under a directory name made to break quoting."""
    source = weird / "releases" / NEW / "proxy" / "haproxy-b.cfg"
    source.parent.mkdir(parents=True)
    source.write_text('global\n  maxconn 4096\n# "quoted" $(touch pwned)\n')
    return source


def test_stage_proxy_config_writes_the_release_config_headed_by_what_goes_live(
    weird: Path, release_cfg: Path
) -> None:
    proxy_dir = weird / "proxy"
    live = ProxyHeader(NEW, "b", "sha256:" + "ab" * 32)
    old_umask = os.umask(0o077)  # the host's umask does not decide whether HAProxy can read it
    try:
        sh(cmd.stage_proxy_config(str(release_cfg), str(proxy_dir), live.line()))
    finally:
        os.umask(old_umask)
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg.next": live.line() + "\n" + release_cfg.read_text()
    }
    assert stat.S_IMODE(proxy_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE((proxy_dir / "haproxy.cfg.next").stat().st_mode) == 0o644
    # What the probe reads back (the first line) is what was staged.
    first = (proxy_dir / "haproxy.cfg.next").read_text().splitlines()[0]
    assert ProxyHeader.parse(first) == live


def test_stage_proxy_config_leaves_the_live_config_alone_and_opens_a_private_directory(
    weird: Path, release_cfg: Path
) -> None:
    proxy_dir = weird / "proxy"
    proxy_dir.mkdir(mode=0o700)
    (proxy_dir / "haproxy.cfg").write_text("# live\n")
    (proxy_dir / "haproxy.cfg.next").write_text("# staged by an earlier attempt\n")
    sh(cmd.stage_proxy_config(str(release_cfg), str(proxy_dir), "# h"))
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": "# live\n",
        "haproxy.cfg.next": "# h\n" + release_cfg.read_text(),
    }
    assert stat.S_IMODE(proxy_dir.stat().st_mode) == 0o755


def test_stage_proxy_config_of_a_missing_file_fails_and_stages_nothing(weird: Path) -> None:
    proxy_dir = weird / "proxy"
    with pytest.raises(CommandFailed):
        sh(
            cmd.stage_proxy_config(
                str(weird / "releases" / NEW / "proxy" / "haproxy-a.cfg"), str(proxy_dir), "# h"
            )
        )
    assert "haproxy.cfg.next" not in proxy_files(proxy_dir)


@pytest.fixture
def proxy_dir(weird: Path) -> Path:
    """<env dir>/proxy with a live config and a staged one."""
    d = weird / "proxy"
    d.mkdir(parents=True)
    (d / "haproxy.cfg").write_text("# live: slot a\n")
    (d / "haproxy.cfg.next").write_text("# staged: slot b\n")
    return d


def test_reload_proxy_lists_the_workers_then_makes_the_staged_config_live_and_signals_the_master(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    docker.exec_prints("101\n102\n")
    out = sh(cmd.reload_proxy(str(proxy_dir), HOSTILE_ID)).stdout
    # The workers from before the reload: the ones the drain waits for (as CutOver reads them).
    assert out.splitlines() == ["workers 101 102 "]
    assert out.split()[1:] == ["101", "102"]
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": "# staged: slot b\n",
        "haproxy.cfg.prev": "# live: slot a\n",
    }
    assert docker.calls() == [
        cmd.proxy_workers(HOSTILE_ID)[1:],  # listed before the signal, not after
        ["kill", "--signal", "USR2", HOSTILE_ID],  # a graceful reload, never a plain kill
    ]


def test_reload_proxy_without_a_staged_config_fails_without_signalling(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    (proxy_dir / "haproxy.cfg.next").unlink()
    docker.exec_prints("101\n")
    with pytest.raises(CommandFailed):
        sh(cmd.reload_proxy(str(proxy_dir), "c0ffee"))
    assert (proxy_dir / "haproxy.cfg").read_text() == "# live: slot a\n"
    assert [c[0] for c in docker.calls()] == ["exec"]


def test_reload_proxy_fails_when_the_signal_cannot_be_sent(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    docker.exec_prints("")
    docker.fails("kill")  # the proxy is gone
    with pytest.raises(CommandFailed):
        sh(cmd.reload_proxy(str(proxy_dir), "c0ffee"))


def test_restore_proxy_config_puts_the_previous_config_back_and_reloads(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    docker.exec_prints("")
    sh(cmd.reload_proxy(str(proxy_dir), HOSTILE_ID))
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": "# live: slot a\n"}
    assert docker.calls()[-1] == ["kill", "--signal", "USR2", HOSTILE_ID]
    assert len(docker.calls()) == 3

    # Again: nothing to put back, nothing is signalled.
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": "# live: slot a\n"}
    assert len(docker.calls()) == 3


def test_restore_proxy_config_only_undoes_this_deploys_promote(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    mine, earlier = (
        ProxyHeader(NEW, "b", "sha256:2").line(),
        ProxyHeader(OLD, "a", "sha256:1").line(),
    )
    (proxy_dir / "haproxy.cfg.next").unlink()
    # Interrupted before its promote: the live config is an earlier deploy's, .prev older still.
    (proxy_dir / "haproxy.cfg").write_text(f"{earlier}\n# live: slot a\n")
    (proxy_dir / "haproxy.cfg.prev").write_text("# two deploys ago\n")
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID, mine))
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": f"{earlier}\n# live: slot a\n",
        "haproxy.cfg.prev": "# two deploys ago\n",
    }
    assert docker.calls() == []

    # Its promote happened: the live config carries its header, and is undone.
    (proxy_dir / "haproxy.cfg").write_text(f"{mine}\n# staged: slot b\n")
    (proxy_dir / "haproxy.cfg.prev").write_text(f"{earlier}\n# live: slot a\n")
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID, mine))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": f"{earlier}\n# live: slot a\n"}
    assert docker.calls() == [["kill", "--signal", "USR2", HOSTILE_ID]]


def test_restore_proxy_config_without_a_proxy_only_puts_the_file_back(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    sh(cmd.promote_proxy_config(str(proxy_dir)))
    sh(cmd.restore_proxy_config(str(proxy_dir), None))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": "# live: slot a\n"}
    assert docker.calls() == []


def test_promote_proxy_config_makes_the_staged_config_live_keeping_the_old_one(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    sh(cmd.promote_proxy_config(str(proxy_dir)))
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": "# staged: slot b\n",
        "haproxy.cfg.prev": "# live: slot a\n",
    }
    assert docker.calls() == []  # the proxy is (re)created afterwards; nothing to signal


def test_promote_proxy_config_on_a_first_deploy_keeps_no_previous_config(weird: Path) -> None:
    d = weird / "proxy"
    d.mkdir(parents=True)
    (d / "haproxy.cfg.next").write_text("# staged: slot a\n")
    sh(cmd.promote_proxy_config(str(d)))
    assert proxy_files(d) == {"haproxy.cfg": "# staged: slot a\n"}
    sh(cmd.restore_proxy_config(str(d), None))  # nothing to put back
    assert proxy_files(d) == {"haproxy.cfg": "# staged: slot a\n"}


def processes() -> dict[str, tuple[str, str]]:
    """pid -> (name as /proc shows it, parent pid), for every process this machine shows."""
    found = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            pid, name, _, ppid = stat_file.read_text().split()[:4]
            found[pid] = (name, ppid)
    return found


def test_proxy_workers_are_the_haproxy_processes_whose_parent_is_haproxy(
    weird: Path, docker: StandInDocker
) -> None:
    """The listing script, run for real over /proc: a `haproxy` master (here a shell named
    haproxy) and its `haproxy` worker; only the worker is listed. (HAProxy processes of other
    containers on this machine may be listed too: only ours are asserted.)"""
    weird.mkdir()
    haproxy = weird / "haproxy"
    haproxy.symlink_to(shutil.which("sh") or "/bin/sh")  # a process's name is its executable's
    master = subprocess.Popen(
        [str(haproxy), "-c", '"$0" -c "sleep 60; :" & wait', str(haproxy)], start_new_session=True
    )
    try:
        worker = None
        deadline = time.monotonic() + 10
        while worker is None and time.monotonic() < deadline:  # until the child has exec'd haproxy
            worker = next(
                (
                    pid
                    for pid, (name, ppid) in processes().items()
                    if ppid == str(master.pid) and name == "(haproxy)"
                ),
                None,
            )
            time.sleep(0.05)
        assert worker is not None, "the stand-in worker did not start"
        listed = sh(cmd.proxy_workers("c0ffee")).stdout.split()
        assert worker in listed and str(master.pid) not in listed, (listed, master.pid, worker)
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()


# =======================================================================================
# plan: the gateways


def test_nothing_running_creates_the_gateways_in_slot_a_and_the_proxy(compile_env: Compile) -> None:
    staging = compile_env(base_config(), "staging")
    plan = plan_of(staging, empty_host(staging))
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (CREATE, ("not running yet",)),
    }
    assert (plan.live_slot, plan.live_release, plan.target_slot, plan.build) == (
        None,
        None,
        "a",
        (),
    )
    assert (plan.noop, plan.gateways_change, plan.proxy_action) == (False, True, CREATE)
    assert (plan.stale, plan.legacy, plan.removed, [s.service for s in plan.changed]) == (
        (),
        (),
        [],
        ["gateway", "proxy"],
    )


def test_images_not_on_the_host_are_built_one_service_per_image(compile_env: Compile) -> None:
    production = compile_env(base_config(), "production")
    image, proxy_image = production.manifest.images
    plan = plan_of(production, empty_host(production), image=False, proxy_image=False)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet", f"image {image} is not on the host")),
        "proxy": (CREATE, ("not running yet", f"image {proxy_image} is not on the host")),
    }
    assert plan.build == ("gateway-a1", "proxy")  # not gateway-a2: both replicas share the image
    assert plan_of(production, empty_host(production), proxy_image=False).build == ("proxy",)


@pytest.mark.parametrize("slot", ["a", "b"])
def test_the_same_manifest_changes_nothing(compile_env: Compile, slot: str) -> None:
    old, new = compile_env(base_config(), "production"), compile_env(base_config(), "production")
    plan = plan_of(new, host_with(old, slot), old)
    assert actions(plan) == {"gateway": (UNCHANGED, ()), "proxy": (UNCHANGED, ())}
    assert (plan.noop, plan.build, plan.changed, plan.removed, plan.stale) == (True, (), [], [], ())
    assert (plan.live_slot, plan.target_slot, plan.live_release, plan.deployed_release) == (
        slot,
        slot,
        OLD,
        OLD,
    )


def test_a_missing_image_of_gateways_that_do_not_change_is_not_built(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    plan = plan_of(old, host_with(old), old, image=False)
    assert plan.noop and plan.build == ()


def test_a_comment_only_edit_changes_nothing(compile_env: Compile, tmp_path: Path) -> None:
    old = compile_env(base_config(), "staging")
    d = tmp_path / "commented"
    d.mkdir()
    (d / "gateway.yaml").write_text(
        "# a comment\n" + yaml.safe_dump(base_config(), sort_keys=False)
    )
    new = load_bundle(str(d / "gateway.yaml"), "staging")
    assert new.manifest.to_json()["source"] != old.manifest.to_json()["source"]
    assert plan_of(new, host_with(old), old).noop


@pytest.mark.parametrize(("live", "target"), [("a", "b"), ("b", "a")])
def test_a_routing_change_replaces_the_gateways_in_the_other_slot(
    compile_env: Compile, live: str, target: str
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(route_change), "production")
    assert differing(old.manifest, new.manifest, "gateway") == {"config"}
    assert differing(old.manifest, new.manifest, "proxy") == set()

    plan = plan_of(new, host_with(old, live), old)
    assert actions(plan) == {
        "gateway": (REPLACE, ("runtime.json changed (routes.chat)",)),
        "proxy": (RELOAD, (f"the gateways move to slot {target}",)),
    }
    assert (plan.live_slot, plan.target_slot, plan.live_release, plan.build) == (
        live,
        target,
        OLD,
        (),
    )
    assert [c.id for c in plan.service("gateway").running] == [c.id for c in gateways(old, live)]


def test_a_changed_limit_and_route_are_both_named(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")

    def mutate(c: dict[str, Any]) -> None:
        route_change(c)
        c["limits"] = {"per_key": {"requests_per_minute": 60}}

    new = compile_env(changed(mutate), "staging")
    assert actions(plan_of(new, host_with(old), old))["gateway"] == (
        REPLACE,
        ("runtime.json changed (limits.per_key, routes.chat)",),
    )


def test_workers_change_both_runtime_json_and_the_command(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(changed(lambda c: c.setdefault("runtime", {}).update(workers=2)), "staging")
    plan = plan_of(new, host_with(old), old)
    assert actions(plan)["gateway"] == (
        REPLACE,
        ("runtime.json changed (server.workers)", "compose definition changed (command)"),
    )
    assert plan.build == ()


def test_changed_secrets_replace_the_gateways_alone_or_with_other_reasons(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    plan = plan_of(old, host_with(old), old, secrets_changed=True)
    assert actions(plan) == {
        "gateway": (REPLACE, ("secrets changed",)),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }

    new = compile_env(changed(route_change), "production")
    plan = plan_of(new, host_with(old), old, secrets_changed=True)
    assert actions(plan)["gateway"] == (
        REPLACE,
        ("runtime.json changed (routes.chat)", "secrets changed"),
    )


@pytest.mark.parametrize(("env", "before", "after"), [("production", 2, 1), ("staging", 1, 3)])
def test_a_replica_count_change_replaces_the_gateways(
    compile_env: Compile, env: str, before: int, after: int
) -> None:
    old = compile_env(base_config(), env)
    new = compile_env(changed(lambda c: c["environments"][env].update(replicas=after)), env)
    plan = plan_of(new, host_with(old), old)
    assert actions(plan) == {
        "gateway": (REPLACE, (f"replicas {before} -> {after}",)),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert new.manifest.to_json()["services"]["gateway"]["slots"]["b"] == [
        f"gateway-b{i}" for i in range(1, after + 1)
    ]


def test_a_new_base_image_rebuilds_the_gateway_image_once(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")),
        "production",
    )
    plan = plan_of(new, host_with(old), old, image=False)
    assert actions(plan) == {
        "gateway": (
            REBUILD,
            (
                "Dockerfile (base image) changed",
                f"image {new.manifest.to_json()['image']} is not on the host",
            ),
        ),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert plan.build == ("gateway-b1",)


def runtime_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of runtime/ that load_bundle compiles from (so a test may edit it)."""
    copy_dir = tmp_path / "runtime-copy" / "runtime"
    shutil.copytree(RUNTIME, copy_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    monkeypatch.setattr("deployer.bundle.RUNTIME_DIR", copy_dir)
    return copy_dir


def test_a_runtime_code_change_rebuilds(
    compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    old = compile_env(base_config(), "staging")
    with (code / "app.py").open("a") as f:
        f.write("\n# a code change\n")
    new = compile_env(base_config(), "staging")
    image = new.manifest.to_json()["image"]
    assert image != old.manifest.to_json()["image"]
    plan = plan_of(new, host_with(old), old, image=False)
    assert actions(plan)["gateway"] == (
        REBUILD,
        ("runtime/ code changed", f"image {image} is not on the host"),
    )
    assert plan.build == ("gateway-b1",)


def test_a_dependency_change_rebuilds_naming_requirements(
    compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    old = compile_env(base_config(), "staging")
    with (code / "requirements.txt").open("a") as f:
        f.write("six==1.16.0\n")
    new = compile_env(base_config(), "staging")
    # requirements.txt lives in runtime/ but is hashed on its own: only it is named.
    assert actions(plan_of(new, host_with(old), old, image=False))["gateway"] == (
        REBUILD,
        ("requirements.txt changed", f"image {new.manifest.to_json()['image']} is not on the host"),
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("dockerfile", "Dockerfile (base image) changed"),
        ("runtime", "runtime/ code changed"),
        ("requirements", "requirements.txt changed"),
    ],
)
def test_a_rebuild_names_the_image_input_that_changed(
    compile_env: Compile, key: str, reason: str
) -> None:
    old = compile_env(base_config(), "production")
    manifest = old.manifest.to_json()
    manifest["image_inputs"][key] = "sha256:" + "f" * 64
    manifest["services"]["gateway"]["image"] = "sha256:" + "e" * 64
    manifest["image"] = "hello-gateway-production/gateway:eeeeeeeeeeee"
    plan = plan_of(old, host_with(old), old, manifest=manifest, image=False)
    assert actions(plan) == {
        "gateway": (REBUILD, (reason, f"image {manifest['image']} is not on the host")),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert plan.build == ("gateway-b1",)


def test_a_rebuild_whose_image_is_already_on_the_host_is_not_built_again(
    compile_env: Compile,
) -> None:
    """Images are named by the hash of their inputs: say, the one of the release a rollback brings back."""
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")),
        "production",
    )
    plan = plan_of(new, host_with(old), old, image=True)
    assert actions(plan)["gateway"] == (
        REPLACE,
        (
            "Dockerfile (base image) changed",
            f"image {new.manifest.to_json()['image']} is already on the host (not built again)",
        ),
    )
    assert plan.build == ()


def test_a_missing_image_turns_a_replace_into_a_rebuild(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(changed(route_change), "staging")
    image = new.manifest.to_json()["image"]
    assert image == old.manifest.to_json()["image"]
    plan = plan_of(new, host_with(old), old, image=False)
    assert actions(plan)["gateway"] == (
        REBUILD,
        ("runtime.json changed (routes.chat)", f"image {image} is not on the host"),
    )
    assert plan.build == ("gateway-b1",)


@pytest.mark.parametrize(
    ("state", "health", "said"),
    [
        ("exited", "none", "is exited"),
        ("restarting", "starting", "is restarting"),
        ("running", "unhealthy", "is unhealthy"),
    ],
)
def test_a_stopped_or_unhealthy_gateway_is_replaced(
    compile_env: Compile, state: str, health: str, said: str
) -> None:
    old = compile_env(base_config(), "production")
    a1, a2 = gateways(old)
    host = host_with(old, containers=[a1, replace(a2, state=state, health=health), proxy(old)])
    plan = plan_of(old, host, old)
    assert actions(plan) == {
        "gateway": (REPLACE, (f"hello-gateway-production-gateway-a2-1 {said}",)),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert (plan.live_slot, plan.target_slot, plan.build) == ("a", "b", ())


def test_a_missing_replica_is_named(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    plan = plan_of(old, host_with(old, containers=[gateways(old)[0], proxy(old)]), old)
    assert actions(plan)["gateway"] == (REPLACE, ("1 of 2 gateways run",))


def test_a_slot_whose_gateways_all_stopped_serves_nothing_new_ones_start_and_the_stopped_go(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    stopped = gateways(old, state="exited", health="none")
    plan = plan_of(old, host_with(old, containers=[*stopped, proxy(old)]), old)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (RELOAD, ("the gateways move to slot a",)),
        "gateway (slot a)": (REMOVE, ("not served by the proxy (left by an interrupted deploy)",)),
    }
    assert (plan.live_slot, plan.live_release, plan.target_slot) == (None, None, "a")
    assert plan.stale == tuple(stopped)


def test_gateways_of_two_releases_are_replaced(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    a1, a2 = gateways(old)
    host = host_with(old, containers=[a1, replace(a2, release=NEW), proxy(old)])
    host.manifests[NEW] = old.manifest
    plan = plan_of(old, host, old)
    assert actions(plan)["gateway"] == (REPLACE, ("its containers run different releases",))
    assert plan.live_release == NEW  # the newer of the two


def test_a_running_release_without_a_manifest_is_replaced(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    host = host_with(old)
    host.manifests.clear()
    assert actions(plan_of(old, host)) == {
        "gateway": (REPLACE, (f"running release {OLD} has no manifest on the host",)),
        "proxy": (
            RECREATE,
            (f"running release {OLD} has no manifest on the host (a short interruption)",),
        ),
    }


def test_containers_we_do_not_own_are_never_planned_for_and_refuse_the_deploy(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    foreign = replace(gateways(old)[0], id="f" * 64, name="intruder-1", owned=False)
    foreign_proxy = replace(proxy(old), id="e" * 64, name="intruder-2", owned=False)
    host = HostState(
        Paths("/srv/switchyard", old.compose_project),
        exists=False,
        containers=[foreign, foreign_proxy],
    )

    plan = plan_of(old, host)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (CREATE, ("not running yet",)),
    }
    assert (plan.stale, plan.legacy) == ((), ())
    with pytest.raises(DeployError) as err:
        check_ownership(host)
    assert (
        "the compose project 'hello-gateway-staging' on this host is already used by containers "
        "that Switchyard does not own for this environment: intruder-1 (ffffffffffff), intruder-2 (eeeeeeeeeeee)"
        in str(err.value)
    )


# -- which slot is live ------------------------------------------------------------------


def test_the_live_slot_is_the_one_that_answered_then_the_proxy_configs_then_the_only_one_running(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    both = host_with(old, "a", [*gateways(old, "a"), *gateways(old, "b", NEW), proxy(old)])
    b1 = gateways(old, "b", NEW)[0]
    assert live_slot(both, b1) == "b"  # answered through the proxy: it serves
    assert live_slot(both, None) == "a"  # else what the live haproxy.cfg names
    assert (
        live_slot(replace(both, proxy_live=None), None) is None
    )  # two slots and nothing says which
    only_b = host_with(old, "a", [*gateways(old, "b"), proxy(old)])
    assert live_slot(only_b, None) == "b"  # the config names a slot with no gateways
    assert live_slot(replace(only_b, proxy_live=None), None) == "b"
    stopped_a = host_with(old, "a", [*gateways(old, "a", state="exited"), proxy(old)])
    assert live_slot(stopped_a, None) is None
    assert live_slot(empty_host(old), None) is None
    assert (other_slot("a"), other_slot("b"), other_slot(None)) == ("b", "a", "a")


def test_gateways_the_proxy_does_not_serve_are_removed(compile_env: Compile) -> None:
    """A deploy interrupted between starting the new gateways and the cut-over leaves them."""
    old = compile_env(base_config(), "production")
    left = gateways(old, "b", NEW, health="starting")
    host = host_with(old, "a", [*gateways(old, "a"), *left, proxy(old)])
    plan = plan_of(old, host, old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (UNCHANGED, ()),
        "gateway (slot b)": (REMOVE, ("not served by the proxy (left by an interrupted deploy)",)),
    }
    assert (plan.noop, plan.stale, plan.changed) == (False, tuple(left), [])
    assert [s.service for s in plan.removed] == ["gateway (slot b)"]
    assert (plan.live_slot, plan.target_slot, plan.live_release) == ("a", "a", OLD)

    # After the cut-over (the new ones answer), it is the old slot that is left over.
    host.manifests[NEW] = old.manifest
    plan = plan_of(old, host, old, serving=left[0])
    assert plan.live_slot == "b" and plan.stale == tuple(gateways(old, "a"))
    assert actions(plan)["gateway (slot a)"][0] == REMOVE
    assert actions(plan)["proxy"] == (
        RELOAD,
        ("haproxy.cfg changed (runtime.proxy)",),
    )  # its config still names a


def test_with_both_slots_running_and_nothing_saying_which_serves_both_are_replaced(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    host = host_with(
        old, "a", [*gateways(old, "a"), *gateways(old, "b"), proxy(old)], live_config=False
    )
    plan = plan_of(old, host, old)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (RELOAD, ("the gateways move to slot a",)),
        "gateway (slot a/b)": (
            REMOVE,
            ("not served by the proxy (left by an interrupted deploy)",),
        ),
    }
    assert len(plan.stale) == 2


def test_a_first_deploy_interrupted_before_the_proxy_started_is_finished(
    compile_env: Compile,
) -> None:
    staging = compile_env(base_config(), "staging")
    started = gateways(staging, "a", OLD)
    host = HostState(
        Paths("/srv/switchyard", staging.compose_project),
        exists=True,
        releases=[OLD],
        containers=started,
        manifests={OLD: staging.manifest},
    )
    plan = plan_of(staging, host, staging)
    assert actions(plan) == {"gateway": (UNCHANGED, ()), "proxy": (CREATE, ("not running yet",))}
    assert (plan.live_slot, plan.target_slot, plan.live_release, plan.stale) == ("a", "a", OLD, ())


# -- an earlier Switchyard's layout ------------------------------------------------------


def legacy(bundle: Bundle, *services: str) -> list[Container]:
    """Containers of the layout before the proxy: a `gateway` service (no slot) and an `edge`."""
    return [
        Container(
            id=container_id("legacy", s),
            name=f"{bundle.compose_project}-{s}-1",
            service=s,
            compose_service=s,
            state="running",
            health="healthy",
            started_at="2025-06-01T00:00:00Z",
            release=OLD,
            image_id="sha256:" + "3" * 64,
            owned=True,
        )
        for s in services
    ]


def test_the_layout_before_the_proxy_is_replaced_and_its_services_removed(
    compile_env: Compile,
) -> None:
    production = compile_env(base_config(), "production")
    earlier = legacy(production, "edge", "gateway")
    old_manifest = {
        "services": {
            "gateway": {
                "image": "sha256:" + "3" * 64,
                "config": "x",
                "definition": "y",
                "replicas": 2,
            },
            "edge": {"image": "sha256:" + "3" * 64, "config": "x", "definition": "z"},
        }
    }
    host = HostState(
        Paths("/srv/switchyard", production.compose_project),
        exists=True,
        current=OLD,
        releases=[OLD],
        containers=earlier,
        manifests={},
    )
    # The deployer reads no manifest of an earlier layout (it has no schema_version).
    assert release_manifest(json.dumps(old_manifest)) is None
    plan = plan_of(production, host)
    assert actions(plan) == {
        "gateway": (
            CREATE,
            (
                "replaces the gateway of an earlier Switchyard (one short interruption: the proxy takes over its port)",
            ),
        ),
        "proxy": (CREATE, ("not running yet",)),
        "edge": (REMOVE, ("not part of this release (an earlier Switchyard's layout)",)),
        "gateway (earlier layout)": (
            REMOVE,
            ("not part of this release (an earlier Switchyard's layout)",),
        ),
    }
    assert (plan.legacy, plan.stale, plan.live_slot, plan.target_slot) == (
        tuple(earlier),
        (),
        None,
        "a",
    )
    assert plan.service("gateway").action == CREATE and plan.gateways_change
    # The JSON document and the history key the services by name: none hides another.
    assert {s.service: s.as_json()["action"] for s in plan.services}["gateway"] == "create"


def test_an_earlier_service_left_beside_the_new_layout_is_removed(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    edge = legacy(old, "edge")
    plan = plan_of(old, host_with(old, containers=[*gateways(old), proxy(old), *edge]), old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (UNCHANGED, ()),
        "edge": (REMOVE, ("not part of this release (an earlier Switchyard's layout)",)),
    }
    assert plan.legacy == tuple(edge) and not plan.noop


# =======================================================================================
# plan: the proxy


def proxy_change(**settings: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.setdefault("runtime", {}).setdefault("proxy", {}).update(settings)


def test_a_proxy_setting_change_reloads_the_proxy_and_leaves_the_gateways(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(proxy_change(request_head_timeout_s=5)), "production")
    assert differing(old.manifest, new.manifest, "gateway") == set()
    assert differing(old.manifest, new.manifest, "proxy") == {"config"}
    for slot in ("a", "b"):
        plan = plan_of(new, host_with(old, slot), old)
        assert actions(plan) == {
            "gateway": (UNCHANGED, ()),
            "proxy": (RELOAD, ("haproxy.cfg changed (runtime.proxy)",)),
        }
        assert (plan.gateways_change, plan.live_slot, plan.target_slot, plan.build) == (
            False,
            slot,
            slot,
            (),
        )


def test_a_proxy_image_change_recreates_the_proxy(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(proxy_change(base_image="haproxy:2.9")), "production")
    plan = plan_of(new, host_with(old), old, proxy_image=False)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (
            RECREATE,
            (
                "its image changed (runtime.proxy.base_image or Switchyard's proxy Dockerfile)",
                "a short interruption: the port is closed while it restarts",
                f"image {new.manifest.to_json()['proxy_image']} is not on the host",
            ),
        ),
    }
    assert plan.build == ("proxy",)


def test_a_port_change_recreates_the_proxy_only(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c["environments"]["production"].update(port=8301)), "production"
    )
    assert differing(old.manifest, new.manifest, "gateway") == set()
    plan = plan_of(new, host_with(old), old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (
            RECREATE,
            (
                "compose definition changed (ports)",
                "a short interruption: the port is closed while it restarts",
            ),
        ),
    }


def test_a_stopped_proxy_is_recreated(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    plan = plan_of(
        old, host_with(old, containers=[*gateways(old), proxy(old, state="exited")]), old
    )
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (RECREATE, ("hello-gateway-staging-proxy-1 is exited (a short interruption)",)),
    }
    assert plan.live_slot == "a"


def test_a_live_config_deploy_did_not_write_is_replaced_by_a_reload(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    plan = plan_of(old, host_with(old, live_config=False), old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (RELOAD, ("its live config is not Switchyard's",)),
    }
    assert plan.live_slot == "a"  # the only slot running

    edited = host_with(old)
    edited.proxy_live = replace(
        header(old), config="sha256:" + "0" * 64
    )  # edited by hand, or another release's
    assert actions(plan_of(old, edited, old))["proxy"] == (
        RELOAD,
        ("haproxy.cfg changed (runtime.proxy)",),
    )


def test_the_plan_table_lists_services_actions_and_reasons(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    plan = plan_of(old, host_with(old), old, secrets_changed=True)
    assert plan.table() == (
        "  SERVICE  ACTION   WHY\n"
        "  gateway  replace  secrets changed\n"
        "  proxy    reload   the gateways move to slot b"
    )
    assert {s.service: s.as_json() for s in plan.services} == {
        "gateway": {"action": "replace", "reasons": ["secrets changed"]},
        "proxy": {"action": "reload", "reasons": ["the gateways move to slot b"]},
    }


def test_a_container_belongs_to_the_release_its_compose_file_names() -> None:
    paths = Paths("/srv/switchyard", "hello-gateway-staging")
    raw: dict[str, Any] = {
        "Id": "c" * 64,
        "Name": "/hello-gateway-staging-gateway-b1-1",
        "Image": "sha256:" + "2" * 64,
        "State": {
            "Status": "running",
            "StartedAt": "2026-01-01T00:00:00Z",
            "ExitCode": 0,
            "Health": {"Status": "healthy", "Log": [{"Output": "ok\n"}]},
        },
        "Config": {
            "Labels": {
                "dev.switchyard.managed-by": "switchyard",
                "dev.switchyard.project": "hello-gateway",
                "dev.switchyard.environment": "staging",
                "dev.switchyard.service": "gateway",
                "dev.switchyard.slot": "b",
                "com.docker.compose.service": "gateway-b1",
                "com.docker.compose.project.config_files": f"/srv/switchyard/hello-gateway-staging/releases/{OLD}/compose.yaml",
            }
        },
        "NetworkSettings": {
            "Networks": {"hello-gateway-staging_default": {"IPAddress": "172.20.0.3"}}
        },
    }
    c = parse_container(raw, paths, "hello-gateway", "staging")
    assert (
        c.name,
        c.service,
        c.compose_service,
        c.slot,
        c.ip,
        c.state,
        c.health,
        c.release,
        c.owned,
        c.health_log,
        c.short_id,
    ) == (
        "hello-gateway-staging-gateway-b1-1",
        "gateway",
        "gateway-b1",
        "b",
        "172.20.0.3",
        "running",
        "healthy",
        OLD,
        True,
        "ok",
        "c" * 12,
    )
    other_env = copy.deepcopy(raw)
    other_env["Config"]["Labels"]["dev.switchyard.environment"] = "production"
    assert parse_container(other_env, paths, "hello-gateway", "staging").owned is False
    unlabelled = copy.deepcopy(raw)
    del unlabelled["Config"]["Labels"]["dev.switchyard.managed-by"]
    assert parse_container(unlabelled, paths, "hello-gateway", "staging").owned is False
    earlier = copy.deepcopy(raw)  # the layout before the proxy: no role or slot label
    for label in ("dev.switchyard.service", "dev.switchyard.slot"):
        del earlier["Config"]["Labels"][label]
    earlier["Config"]["Labels"]["com.docker.compose.service"] = "edge"
    e = parse_container(earlier, paths, "hello-gateway", "staging")
    assert (e.service, e.compose_service, e.slot) == ("edge", "edge", None)


# =======================================================================================
# the proxy's live-config header


def test_the_proxy_header_line_parses_back_to_itself() -> None:
    live = ProxyHeader(NEW, "b", "sha256:" + "ab" * 32)
    assert live.line() == f"# switchyard-live: release={NEW} slot=b config=sha256:{'ab' * 32}"
    assert ProxyHeader.parse(live.line()) == live
    assert ProxyHeader.parse(
        f"# switchyard-live: config=sha256:1 slot=a release={OLD} note=x"
    ) == ProxyHeader(OLD, "a", "sha256:1")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "global",
        "# Generated by Switchyard",
        f"#switchyard-live: release={OLD} slot=a config=sha256:1",
        f"# switchyard-live: release={OLD} slot=a",
        f"# switchyard-live: release={OLD} slot= config=sha256:1",
        f"# switchyard-live: release={OLD} slot config=sha256:1",
        "# switchyard-live:",
    ],
)
def test_a_line_that_is_not_a_complete_header_is_no_header(line: str) -> None:
    assert ProxyHeader.parse(line) is None


# =======================================================================================
# rollback: which release it brings back


def deploy_entry(release: str, result: str = "ok", previous: str | None = None) -> dict[str, Any]:
    return {"action": "deploy", "release": release, "previous": previous, "result": result}


def rollback_entry(to: str, live: str, result: str = "ok") -> dict[str, Any]:
    return {"action": "rollback", "release": to, "previous": live, "result": result}


R1, R2, R3, R4 = (f"2026010{i}T000000Z-0000000{i}" for i in range(1, 5))


def on_host(*releases: str, failed: tuple[str, ...] = ()) -> HostState:
    return HostState(
        Paths("/srv/switchyard", "p-staging"),
        exists=True,
        releases=sorted(releases),
        failed=set(failed),
    )


def test_rollback_goes_to_the_release_live_before_the_live_one() -> None:
    history = [deploy_entry(R1), deploy_entry(R2, previous=R1), deploy_entry(R3, previous=R2)]
    assert live_sequence(history) == ([R1, R2, R3], set())
    assert rollback_target(history, on_host(R1, R2, R3), R3) == R2


def test_rollback_again_goes_further_back_never_to_the_release_rolled_back_from() -> None:
    """Deploy 1, 2, 3; roll back: 2; roll back again: 1, not 3."""
    host = on_host(R1, R2, R3)
    history = [deploy_entry(R1), deploy_entry(R2), deploy_entry(R3), rollback_entry(R2, R3)]
    assert live_sequence(history) == ([R1, R2], {R3})
    assert rollback_target(history, host, R2) == R1
    history.append(rollback_entry(R1, R2))
    assert live_sequence(history) == ([R1], {R2, R3})
    with pytest.raises(DeployError) as err:
        rollback_target(history, host, R1)
    assert str(err.value) == f"no release was live before {R1}; there is nothing to roll back to"


def test_a_deploy_after_a_rollback_rolls_back_past_the_rolled_back_release() -> None:
    history = [
        deploy_entry(R1),
        deploy_entry(R2),
        deploy_entry(R3),
        rollback_entry(R2, R3),
        deploy_entry(R4),
    ]
    assert live_sequence(history)[0] == [R1, R2, R4]
    assert rollback_target(history, on_host(R1, R2, R3, R4), R4) == R2


def test_releases_that_never_went_live_are_skipped() -> None:
    history = [
        deploy_entry(R1),
        deploy_entry(R2, "rolled-back"),
        deploy_entry(R3, "failed"),
        deploy_entry(R1, "unchanged"),
        {"action": "deploy", "release": None, "result": "interrupted"},
        deploy_entry(R4),
        rollback_entry(R3, R4, "failed"),
    ]  # a rollback that failed changed nothing
    assert live_sequence(history) == ([R1, R4], set())
    assert rollback_target(history, on_host(R1, R2, R3, R4), R4) == R1


def test_without_the_live_release_in_the_history_rollback_goes_by_the_release_names() -> None:
    """A history from before this Switchyard, or lost."""
    assert rollback_target([], on_host(R1, R2, R3, R4, failed=(R3,)), R4) == R2
    history = [
        deploy_entry(R1),
        deploy_entry(R2),
        rollback_entry(R1, R2),
    ]  # R2 was rolled back; R4 is not in the history
    assert rollback_target(history, on_host(R1, R2, R3, R4), R4) == R3
    assert rollback_target(history, on_host(R1, R2, R4), R4) == R1


def test_rollback_refuses_what_it_cannot_bring_back() -> None:
    history = [deploy_entry(R1), deploy_entry(R2), deploy_entry(R3)]
    with pytest.raises(DeployError) as err:
        rollback_target(history, on_host(R1, R3), R3)
    assert str(err.value) == (
        f"release {R2}, live before {R3}, is no longer on the host (pruned: keep_releases); "
        "deploy the config you want instead"
    )
    with pytest.raises(DeployError) as err:
        rollback_target(history, on_host(R1, R2, R3, failed=(R2,)), R3)
    assert (
        str(err.value)
        == f"release {R2}, live before {R3}, is marked FAILED on the host; deploy the config you want instead"
    )
    with pytest.raises(
        DeployError,
        match=r"^nothing serves here, so there is nothing to roll back from; deploy instead$",
    ):
        rollback_target(history, on_host(R1, R2, R3), None)
    with pytest.raises(DeployError, match=f"^no release was live before {R1}"):
        rollback_target([], on_host(R1), R1)


# =======================================================================================
# steps: what a plan turns into (steps_for), in order


def steps_of(new: Bundle, plan: DeployPlan, host: HostState) -> list[Any]:
    return steps_for(
        Paths("/srv/switchyard", new.compose_project), Target(NEW, new.manifest), plan, host
    )


def compose_file(bundle: Bundle) -> str:
    return f"/srv/switchyard/{bundle.compose_project}/releases/{NEW}/compose.yaml"


def proxy_config(bundle: Bundle, slot: str) -> str:
    return str(bundle.manifest.services.proxy.config[slot])


def test_a_first_deploy_builds_stages_starts_waits_and_creates_the_proxy(
    compile_env: Compile,
) -> None:
    staging = compile_env(base_config(), "staging")
    cp, cf, m = staging.compose_project, compose_file(staging), staging.manifest.to_json()
    host = empty_host(staging)
    steps = steps_of(staging, plan_of(staging, host, image=False, proxy_image=False), host)
    assert steps == [
        BuildImages(cp, cf, ("gateway-a1", "proxy"), (m["image"], m["proxy_image"])),
        StageProxyConfig(
            NEW, "a", proxy_config(staging, "a"), m["proxy_image"], None
        ),  # checked in a throwaway proxy
        StartGateways(cp, cf, ("gateway-a1",), "a"),
        WaitReady(NEW, ("gateway-a1",), 60.0),
        CutOver("create", cp, cf, "a", 8200, ()),
        MakeCurrent(NEW),
    ]
    assert Target(NEW, staging.manifest).port == 8200
    # With the images there, nothing is built.
    assert [type(s) for s in steps_of(staging, plan_of(staging, host), host)] == [
        StageProxyConfig,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
    ]


def test_a_config_change_starts_the_other_slot_reloads_the_proxy_then_drains_the_old_slot(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(route_change), "production")
    cp, cf, m = new.compose_project, compose_file(new), new.manifest.to_json()
    host = host_with(old, "a")
    steps = steps_of(new, plan_of(new, host, old), host)
    live = gateways(old, "a")
    assert steps == [
        StageProxyConfig(
            NEW, "b", proxy_config(new, "b"), m["proxy_image"], proxy(old).id
        ),  # checked in the running proxy
        StartGateways(cp, cf, ("gateway-b1", "gateway-b2"), "b"),
        WaitReady(NEW, ("gateway-b1", "gateway-b2"), 60.0),
        CutOver("reload", cp, cf, "b", 8300, ()),
        MakeCurrent(NEW),
        Drain(tuple(c.id for c in live), tuple(c.name for c in live), 300.0),
    ]
    assert steps[1].argv() == [
        *SCRUB,
        "docker",
        "compose",
        "-p",
        cp,
        "-f",
        cf,
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "gateway-b1",
        "gateway-b2",
    ]


def test_a_rebuild_builds_the_new_slots_image_first(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(
        changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")),
        "staging",
    )
    host = host_with(old, "b")
    steps = steps_of(new, plan_of(new, host, old, image=False), host)
    assert steps[0] == BuildImages(
        new.compose_project, compose_file(new), ("gateway-a1",), (new.manifest.to_json()["image"],)
    )
    assert [type(s) for s in steps] == [
        BuildImages,
        StageProxyConfig,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
        Drain,
    ]
    assert steps[0].describe() == (
        f"build {new.manifest.to_json()['image']}: docker compose -p hello-gateway-staging "
        f"-f {compose_file(new)} build gateway-a1"
    )


def test_a_proxy_only_change_reloads_the_proxy_and_starts_no_gateway(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(proxy_change(client_idle_timeout_s=30)), "production")
    cp, cf, m = new.compose_project, compose_file(new), new.manifest.to_json()
    host = host_with(old, "b")
    assert steps_of(new, plan_of(new, host, old), host) == [
        StageProxyConfig(NEW, "b", proxy_config(new, "b"), m["proxy_image"], proxy(old).id),
        CutOver("reload", cp, cf, "b", 8300, ()),
        MakeCurrent(NEW),
    ]


def test_a_proxy_recreate_checks_the_config_in_a_throwaway_proxy_and_drains_nothing(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c["environments"]["production"].update(port=8301)), "production"
    )
    cp, cf, m = new.compose_project, compose_file(new), new.manifest.to_json()
    host = host_with(old)
    assert steps_of(new, plan_of(new, host, old), host) == [
        StageProxyConfig(NEW, "a", proxy_config(new, "a"), m["proxy_image"], None),
        CutOver("create", cp, cf, "a", 8301, ()),
        MakeCurrent(NEW),
    ]


def test_a_plan_with_nothing_to_change_only_points_current(compile_env: Compile) -> None:
    """(A deploy stops before this; a rollback to a release the same as the live one gets here.)"""
    old = compile_env(base_config(), "staging")
    host = host_with(old)
    plan = plan_of(old, host, old)
    assert plan.noop and steps_of(old, plan, host) == [MakeCurrent(NEW)]


def test_gateways_left_by_an_interrupted_deploy_are_removed_before_anything_starts(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    left = gateways(old, "b", NEW, state="exited")
    removal = RemoveGateways(tuple(c.id for c in left), tuple(c.name for c in left), 300.0)
    host = host_with(old, "a", [*gateways(old, "a"), *left, proxy(old)])
    assert steps_of(old, plan_of(old, host, old), host) == [removal, MakeCurrent(NEW)]

    new = compile_env(changed(route_change), "production")
    steps = steps_of(new, plan_of(new, host, old), host)
    assert [type(s) for s in steps] == [
        StageProxyConfig,
        RemoveGateways,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
        Drain,
    ]
    assert steps[1] == removal and steps[2].services == ("gateway-b1", "gateway-b2")
    assert steps[6].ids == tuple(c.id for c in gateways(old, "a"))


def test_the_layout_before_the_proxy_gives_its_port_to_the_new_proxy(compile_env: Compile) -> None:
    staging = compile_env(base_config(), "staging")
    earlier = legacy(staging, "edge", "gateway")
    host = HostState(
        Paths("/srv/switchyard", staging.compose_project),
        exists=True,
        current=OLD,
        releases=[OLD],
        containers=earlier,
        manifests={},
    )
    steps = steps_of(staging, plan_of(staging, host), host)
    assert [type(s) for s in steps] == [
        StageProxyConfig,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
    ]
    # The old containers hold the port: removed by the cut-over, right before the proxy is created.
    assert steps[3] == CutOver(
        "create",
        staging.compose_project,
        compose_file(staging),
        "a",
        8200,
        tuple(c.id for c in earlier),
    )


def test_an_earlier_service_beside_the_new_layout_is_removed_after_current(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    edge = legacy(old, "edge")
    host = host_with(old, containers=[*gateways(old), proxy(old), *edge])
    assert steps_of(old, plan_of(old, host, old), host) == [
        MakeCurrent(NEW),
        RemoveServices(("edge",), (edge[0].id,)),
    ]


def test_every_step_describes_itself_in_one_line() -> None:
    release = f"/srv/switchyard/hello-gateway-production/releases/{NEW}"
    cf = f"{release}/compose.yaml"
    steps: list[Step] = [
        UploadRelease(NEW, release, 78_848),
        WriteSecrets("/srv/switchyard/hello-gateway-production/secrets.env", ("VENDOR_API_KEY",)),
        WriteSecrets("/srv/switchyard/hello-gateway-production/secrets.env", ()),
        CheckCompose("hello-gateway-production", cf),
        BuildImages(
            "hello-gateway-production", cf, ("gateway-b1", "proxy"), ("p/gateway:1", "p/proxy:2")
        ),
        StageProxyConfig(NEW, "b", "sha256:1", "p/proxy:2", "c" * 64),
        StageProxyConfig(NEW, "b", "sha256:1", "p/proxy:2", None),
        RemoveGateways(("a" * 64,), ("hello-gateway-production-gateway-b1-1",), 300.0),
        StartGateways("hello-gateway-production", cf, ("gateway-b1", "gateway-b2"), "b"),
        WaitReady(NEW, ("gateway-b1", "gateway-b2"), 60.0),
        CutOver("reload", "hello-gateway-production", cf, "b", 8300),
        CutOver("create", "hello-gateway-production", cf, "a", 8300),
        MakeCurrent(NEW),
        Drain(
            ("a" * 64, "b" * 64),
            ("hello-gateway-production-gateway-a1-1", "hello-gateway-production-gateway-a2-1"),
            300.0,
        ),
        RemoveServices(("edge",), ("a" * 64,)),
        Prune(5),
        RecordHistory({"action": "deploy", "release": NEW}),
    ]
    for step in steps:
        text = step.describe()
        assert text.strip() == text and text and "\n" not in text, step
    assert [s.describe() for s in steps[:4]] == [
        f"upload release {NEW} (77 KiB) to {release}",
        "write /srv/switchyard/hello-gateway-production/secrets.env (0600): VENDOR_API_KEY (values from the operator's sources, not shown)",
        "write /srv/switchyard/hello-gateway-production/secrets.env (0600): no values (values from the operator's sources, not shown)",
        f"validate the compose file on the host: docker compose -p hello-gateway-production -f {cf} config --quiet",
    ]
    assert [s.describe() for s in steps[5:15]] == [
        "stage the proxy config for slot b and check it with `haproxy -c` in the running proxy",
        "stage the proxy config for slot b and check it with `haproxy -c` in a throwaway p/proxy:2 container",
        "remove gateways the proxy does not serve (hello-gateway-production-gateway-b1-1), once no connection can reach them",
        f"start the new gateways in slot b beside the live ones: docker compose -p hello-gateway-production -f {cf} "
        "up --detach --no-deps --no-build gateway-b1 gateway-b2",
        "wait up to 60 s for gateway-b1, gateway-b2 to answer /readyz with 200",
        "cut over: make slot b's config live and reload the proxy (in-flight connections keep going)",
        f"cut over: (re)create the proxy on 127.0.0.1:8300 with slot a's config: docker compose -p hello-gateway-production "
        f"-f {cf} up --detach --no-deps --no-build proxy",
        f"point current -> releases/{NEW}",
        "drain the old gateways (hello-gateway-production-gateway-a1-1, hello-gateway-production-gateway-a2-1): their "
        "requests and streams finish (at most 300 s), then stop and remove them",
        "remove our containers of services no longer in the config: edge (1 containers)",
    ]


# =======================================================================================
# claims


class CannedDocker(LocalHost):
    """This machine for files and flock; `docker` answers with a canned `docker ps` output."""

    def __init__(self, ps: str = "") -> None:
        self.ps = ps
        self.docker_calls: list[list[str]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
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
    assert claims.published_ports(host) == {
        8200: "neighbour",
        9000: "container bbb",
        9100: "v4v6",
        9101: "v4v6",
        9102: "v4v6",
    }
    assert host.docker_calls == [cmd.published_containers()]
    assert cmd.published_containers() == [
        "docker",
        "ps",
        "--format",
        '{{.ID}}\t{{.Label "com.docker.compose.project"}}\t{{.Ports}}',
    ]


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
    published = claims.published_ports(
        CannedDocker("aaa\tneighbour\t127.0.0.1:8200->8000/tcp, [::1]:8200->8000/tcp\n")
    )
    assert claims.conflicts(staging, {}, published) == [
        "port 8200 is already published on this host by 'neighbour'; pick another environments.staging.port"
    ]
    published = claims.published_ports(CannedDocker("0123456789ab\t\t0.0.0.0:8200->8200/tcp\n"))
    assert claims.conflicts(staging, {}, published) == [
        "port 8200 is already published on this host by 'container 0123456789ab'; pick another environments.staging.port"
    ]


def test_our_own_claim_and_our_own_containers_are_no_conflict(staging: Bundle) -> None:
    ours = {
        "hello-gateway-staging": claims.Claim("hello-gateway", "staging", 8200),
        "hello-gateway-production": claims.Claim("hello-gateway", "production", 8300),
    }
    assert (
        claims.conflicts(
            staging, ours, {8200: "hello-gateway-staging", 8300: "hello-gateway-production"}
        )
        == []
    )


def test_claims_render_and_parse_round_trip() -> None:
    theirs = {
        "b-prod": claims.Claim("b", "prod", 8301),
        "a-staging": claims.Claim("a", "staging", 8200),
    }
    data = claims.render(theirs, "alice@laptop", "2026-01-01T00:00:00Z")
    assert claims.parse(data) == theirs
    doc = json.loads(data)
    assert (doc["version"], doc["updated_by"], doc["updated"], list(doc["projects"])) == (
        1,
        "alice@laptop",
        "2026-01-01T00:00:00Z",
        ["a-staging", "b-prod"],
    )
    assert claims.parse(None) == {} and claims.parse(b"") == {}


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[1, 2]",
        b'{"projects": {"x": {"project": "a"}}}',
        b'{"projects": {"x": {"project": "a", "environment": "e", "port": "eighty"}}}',
        b'{"projects": {"x": "a"}}',
    ],
)
def test_an_unreadable_claims_file_stops_the_deploy_naming_the_fix(data: bytes) -> None:
    with pytest.raises(
        DeployError,
        match=r"^.*claims\.json on the host is not a valid claims file \(.*\); fix it by hand, or remove it and deploy every environment on this host again$",
    ):
        claims.parse(data)


def test_claim_records_ours_and_refuses_a_second_project_on_our_port(
    staging: Bundle, compile_env: Compile, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    host = CannedDocker()
    claims.claim(
        host,
        Paths(str(root), staging.compose_project),
        staging,
        "alice@laptop",
        "2026-01-01T00:00:00Z",
    )
    written = (root / "claims.json").read_bytes()
    assert claims.parse(written) == {
        "hello-gateway-staging": claims.Claim("hello-gateway", "staging", 8200)
    }

    other = compile_env(changed(lambda c: c.update(project="other-gateway")), "staging")
    with pytest.raises(DeployError) as err:
        claims.claim(
            host, Paths(str(root), other.compose_project), other, "bob@desk", "2026-01-02T00:00:00Z"
        )
    assert str(err.value) == (
        "refusing to deploy: port 8200 is claimed on this host by 'hello-gateway-staging' "
        "(project 'hello-gateway', environment 'staging'); pick another environments.staging.port"
    )
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
        "environments.staging.secrets.VENDOR_API_KEY: the environment variable SY_UNIT_STAGING_VENDOR_KEY is not set; "
        "export it before deploying (or mark the secret `optional: true`)"
    )


def test_an_empty_variable_counts_as_missing(
    staging: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SY_UNIT_STAGING_BACKUP_KEY", "")
    monkeypatch.setenv("SY_UNIT_STAGING_VENDOR_KEY", "v")
    with pytest.raises(
        DeployError,
        match=r"^environments\.staging\.secrets\.BACKUP_API_KEY: the environment variable SY_UNIT_STAGING_BACKUP_KEY ",
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
        "environments.production.secrets.VENDOR_API_KEY: ~/nowhere/vendor.key does not exist; create it (mode 0600) "
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
        "environments.staging.secrets.VENDOR_API_KEY: the value from $SY_UNIT_STAGING_VENDOR_KEY has a line break, "
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


# =======================================================================================
# bundle


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


# =======================================================================================
# output


def test_progress_redacts_the_secret_values_and_known_key_formats() -> None:
    stream = io.StringIO()
    out = Progress("staging", stream=stream, secrets=("vendor-value-123",))
    out.say(
        "upstream said vendor-value-123 and sk-proj-abcdefghijklmnopqrstuvwx and https://u:pw@db.example/x"
    )
    assert (
        stream.getvalue() == "upstream said <redacted> and <redacted> and <redacted>db.example/x\n"
    )


def test_progress_records_steps_with_their_status() -> None:
    stream = io.StringIO()
    out = Progress("staging", stream=stream, secrets=("vendor-value-123",))
    with out.step("first"):
        pass
    with pytest.raises(DeployError), out.step("second vendor-value-123"):
        raise DeployError("it broke: vendor-value-123\nmore")
    out.skipped("third", "nothing to do")
    assert [(s["step"], s["status"]) for s in out.steps] == [
        ("first", "ok"),
        ("second <redacted>", "failed"),
        ("third", "skipped"),
    ]
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
    doc = {
        "ok": False,
        "environment": "staging",
        "action": "deploy",
        "release": None,
        "previous": None,
        "url": "http://127.0.0.1:8200",
        "health": "unknown",
        "services": {},
        "error": "boom vendor-value-123",
    }
    out.finish(doc, "staging: deploy refused: boom")
    captured = capsys.readouterr()
    parsed = json.loads(captured.out)
    assert set(parsed) == {
        "ok",
        "environment",
        "action",
        "release",
        "previous",
        "url",
        "health",
        "services",
        "steps",
        "error",
        "seconds",
    }
    assert parsed["error"] == "boom <redacted>"
    assert [s["step"] for s in parsed["steps"]] == ["validate"]
    assert "staging: deploy refused" not in captured.out


def test_text_mode_prints_the_final_line_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    out = Progress("staging", stream=io.StringIO(), secrets=("vendor-value-123",))
    out.finish({}, "staging: release R is live at http://127.0.0.1:8200 (healthy) vendor-value-123")
    assert (
        capsys.readouterr().out
        == "staging: release R is live at http://127.0.0.1:8200 (healthy) <redacted>\n"
    )


def test_json_mode_redacts_values_that_json_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    value = 'pa\\ss"w\u00f6rd-1'
    out = Progress("staging", json_mode=True, secrets=(value,))
    out.finish({"error": f"upstream echoed {value}"}, "line")
    assert value not in json.loads(capsys.readouterr().out)["error"]


# =======================================================================================
# the command line (a subprocess, as an operator runs it)


def deploy_py(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    run_env = {
        k: v
        for k, v in os.environ.items()
        if k not in SECRET_VARS and k != "SWITCHYARD_SSH_IDENTITY"
    }
    run_env["PYTHONDONTWRITEBYTECODE"] = "1"
    run_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(DEPLOY), *args],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


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
        "python deploy.py: error: unknown environment 'qa' in gateway.yaml (environments: staging, production)"
    )
    assert "Traceback" not in proc.stderr


def test_a_missing_config_exits_2(tmp_path: Path) -> None:
    proc = deploy_py("staging", "--config", "nope.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.splitlines()[-1] == (
        "python deploy.py: error: nope.yaml: no such file (run from your repository root, or pass --config)"
    )


def local_config(deploy_dir: Path, port: int) -> dict[str, Any]:
    return {
        "version": 1,
        "project": "hello-gateway",
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
        "SY_UNIT_STAGING_VENDOR_KEY is not set; export it before deploying (or mark the secret `optional: true`)\n"
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
        rf"docker compose -p hello-gateway-dev -f {re.escape(str(deploy_dir))}/hello-gateway-dev/releases/"
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
    assert differing(old.manifest, new.manifest, "gateway") == set()
    plan = plan_of(new, host_with(old), old)
    assert (actions(plan)["gateway"], plan.build) == ((UNCHANGED, ()), ())
    # (The proxy is reloaded, though: its haproxy.cfg names the file in its header comment.)


# =======================================================================================
# the command line against this machine with a stand-in `docker` on PATH
#
# A `target: local` environment whose deploy_dir is laid out as a deploy leaves it, and a
# `docker` executable that answers `ps`, `inspect`, `image inspect` and `compose version` from
# a JSON file (and logs every call). Nothing else is answered: a command that would change
# something fails. Nothing listens on the environment's port: no gateway answers there.

FAKE_DOCKER = r"""#!{python}
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
elif args[:2] == ["compose", "version"]:
    print("2.29.7")
else:
    sys.exit("fake docker: not answered: " + " ".join(args))
"""
READ_ONLY_DOCKER = {("ps",), ("inspect",), ("image", "inspect"), ("compose", "version")}


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
        self.state_file.write_text(
            json.dumps({"containers": self.containers, "images": self.images})
        )

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
            (env_dir / "releases" / release / name).parent.mkdir(parents=True, exist_ok=True)
            (env_dir / "releases" / release / name).write_text(text)
        (env_dir / "current").symlink_to(f"releases/{release}")
        (env_dir / "proxy").mkdir(mode=0o755)
        live = ProxyHeader(release, "a", bundle.manifest.services.proxy.config["a"])
        (env_dir / "proxy" / "haproxy.cfg").write_text(
            live.line() + "\n" + bundle.files["proxy/haproxy-a.cfg"]
        )
        (env_dir / "secrets.env").write_bytes(secrets_file(bundle).content)
        (env_dir / "history.jsonl").write_text(
            json.dumps(
                {
                    "action": "deploy",
                    "release": release,
                    "result": "ok",
                    "who": "alice@laptop",
                    "when": "2026-01-01T00:00:00Z",
                }
            )
            + "\n"
        )
        self.containers.append(self.container(bundle, release, "gateway", "gateway-a1", slot="a"))
        self.containers.append(
            self.container(
                bundle, release, "proxy", "proxy", ports=f"127.0.0.1:{self.port}->8080/tcp"
            )
        )
        self.images += list(bundle.manifest.images)
        self.save()
        return bundle

    def container(
        self,
        bundle: Bundle,
        release: str,
        role: str,
        service: str,
        *,
        slot: str | None = None,
        ports: str = "",
    ) -> dict[str, Any]:
        cp = bundle.compose_project
        return {
            "Id": f"{service}-{release}".encode().hex().ljust(64, "0")[:64],
            "Name": f"/{cp}-{service}-1",
            "Image": "sha256:" + "9" * 64,
            "Ports": ports,
            "State": {
                "Status": "running",
                "StartedAt": "2026-01-01T00:00:00.000000000Z",
                "ExitCode": 0,
                "Health": {"Status": "healthy", "Log": []},
            },
            "Config": {
                "Labels": {
                    "dev.switchyard.managed-by": "switchyard",
                    "dev.switchyard.project": bundle.config.project,
                    "dev.switchyard.environment": bundle.env,
                    "dev.switchyard.service": role,
                    **({"dev.switchyard.slot": slot} if slot else {}),
                    "com.docker.compose.project": cp,
                    "com.docker.compose.service": service,
                    "com.docker.compose.project.config_files": str(
                        self.env_dir(bundle) / "releases" / release / "compose.yaml"
                    ),
                }
            },
        }

    def foreign(
        self, project: str, *, ports: str = "", labels: dict[str, str] | None = None
    ) -> None:
        self.containers.append(
            {
                "Id": project.encode().hex().ljust(64, "f")[:64],
                "Name": f"/{project}-web-1",
                "Image": "sha256:" + "8" * 64,
                "Ports": ports,
                "State": {"Status": "running", "StartedAt": "2026-01-01T00:00:00Z", "ExitCode": 0},
                "Config": {
                    "Labels": {
                        "com.docker.compose.project": project,
                        "com.docker.compose.service": "web",
                        **(labels or {}),
                    }
                },
            }
        )
        self.save()

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return deploy_py(
            *args,
            cwd=self.repo,
            env={
                "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                "SY_FAKE_DOCKER_STATE": str(self.state_file),
                "SY_FAKE_DOCKER_LOG": str(self.log),
            },
        )

    def docker_calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def snapshot(self) -> dict[str, tuple[int, bytes | str]]:
        """Every path under deploy_dir with its mode and content (or link target)."""
        out: dict[str, tuple[int, bytes | str]] = {}
        for p in sorted(self.deploy_dir.rglob("*")):
            st = p.lstat()
            body: bytes | str = (
                os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else b""
            )
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
        "  proxy    unchanged  -",
        "dev: plan only, nothing would change",
    ]
    assert local.snapshot() == before
    assert local.docker_calls() and read_only(local.docker_calls()), local.docker_calls()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"schema_version": 3}, "schema_version: 3 is not supported by this Switchyard"),
        ({"port": "8080"}, "port: should be an integer, not '8080'"),
        ({"services": {"gateway": {}, "proxy": {}}}, "services.gateway.slots: is missing"),
    ],
)
def test_a_live_release_manifest_this_switchyard_cannot_read_is_refused_naming_the_field(
    local: LocalHostSetup, change: dict[str, Any], named: str
) -> None:
    bundle = local.deployed(OLD)
    path = local.env_dir(bundle) / "releases" / OLD / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    before = local.snapshot()
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"dev: plan refused: {path} on localhost: {named}"), proc
    assert "cannot read that release's manifest" in last
    assert local.snapshot() == before


def test_a_json_plan_with_nothing_changed_is_one_json_document(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--plan", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["action"], doc["release"], doc["services"]) == (
        "plan",
        OLD,
        {
            "gateway": {"action": "unchanged", "reasons": []},
            "proxy": {"action": "unchanged", "reasons": []},
        },
    )


def test_a_plan_for_a_routing_change_replaces_the_gateways_in_the_other_slot_without_a_build(
    local: LocalHostSetup,
) -> None:
    local.deployed(OLD)
    before = local.snapshot()
    local.config["routes"]["chat"]["fallback"] = {"max_attempts": 2}
    write_config(local.repo, local.config)

    proc = local.deploy("dev", "--plan", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], doc["previous"], doc["error"]) == (True, "plan", OLD, None)
    assert doc["services"] == {
        "gateway": {"action": "replace", "reasons": ["runtime.json changed (routes.chat)"]},
        "proxy": {"action": "reload", "reasons": ["the gateways move to slot b"]},
    }
    release = f"{local.env_dir(local.bundle())}/releases/{doc['release']}"
    expected = [
        f"upload release {doc['release']} (",
        "validate the compose file on the host:",
        "stage the proxy config for slot b and check it with `haproxy -c` in the running proxy",
        "start the new gateways in slot b beside the live ones:",
        "wait up to 60 s for gateway-b1 to answer /readyz with 200",
        "cut over: make slot b's config live and reload the proxy",
        "point current -> releases/" + doc["release"],
        "drain the old gateways (hello-gateway-dev-gateway-a1-1)",
    ]
    assert len(doc["plan"]) == len(expected), doc["plan"]
    assert all(
        step.startswith(prefix) for step, prefix in zip(doc["plan"], expected, strict=True)
    ), doc["plan"]
    assert doc["plan"][3].endswith(
        f": docker compose -p hello-gateway-dev -f {release}/compose.yaml "
        "up --detach --no-deps --no-build gateway-b1"
    )
    # Nothing to build (the images are there); the secrets did not change.
    assert not any(s.startswith(("build ", "write ")) for s in doc["plan"]), doc["plan"]
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
        f"by 'neighbour'; pick another environments.dev.port"
    )


def test_a_plan_refuses_a_compose_project_used_by_containers_we_do_not_own(
    local: LocalHostSetup,
) -> None:
    local.foreign("hello-gateway-dev")  # compose's label, none of ours
    local.deploy_dir.mkdir()
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 1, proc
    assert proc.stdout.startswith(
        "dev: plan refused: the compose project 'hello-gateway-dev' on this host is already used by containers "
        "that Switchyard does not own for this environment: hello-gateway-dev-web-1 ("
    )
    assert local.docker_calls() and read_only(local.docker_calls())


def test_status_reports_the_live_release_and_its_containers(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--status", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], doc["release"], doc["current"], doc["url"]) == (
        True,
        "status",
        OLD,
        OLD,
        f"http://127.0.0.1:{local.port}",
    )
    assert (doc["serving"], doc["health"], doc["unfinished"]) == (None, "not answering", [])
    [gateway] = doc["containers"]["gateway"]
    assert (
        gateway["service"],
        gateway["slot"],
        gateway["state"],
        gateway["health"],
        gateway["release"],
        gateway["owned"],
        gateway["serving"],
    ) == ("gateway-a1", "a", "running", "healthy", OLD, True, False)
    assert {"id", "state", "health", "started_at", "release"} <= set(gateway)
    [proxy_doc] = doc["containers"]["proxy"]
    assert (proxy_doc["service"], proxy_doc["slot"], proxy_doc["release"]) == ("proxy", None, OLD)
    assert doc["services"] == {
        "gateway": {"running": 1, "releases": [OLD]},
        "proxy": {"running": 1, "releases": [OLD]},
    }
    assert doc["last"]["who"] == "alice@laptop"


@contextlib.contextmanager
def answering(port: int, instance: str) -> Iterator[None]:
    """127.0.0.1:`port` answers /readyz with 200 from `instance`, as a gateway behind the proxy would."""

    class Readyz(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ready", "instance": instance}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_status_names_the_serving_gateway_and_what_an_interrupted_deploy_left(
    local: LocalHostSetup,
) -> None:
    bundle = local.deployed(OLD)
    (local.env_dir(bundle) / "releases" / NEW).mkdir()
    local.containers.append(local.container(bundle, NEW, "gateway", "gateway-b1", slot="b"))
    local.save()
    serving = local.containers[0]
    assert serving["Config"]["Labels"]["com.docker.compose.service"] == "gateway-a1"
    with answering(local.port, serving["Id"][:12]):
        proc = local.deploy("dev", "--status", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert doc["serving"] == {
        "release": OLD,
        "slot": "a",
        "container": "hello-gateway-dev-gateway-a1-1",
        "status": 200,
    }
    assert doc["health"] == "healthy"
    assert {c["service"]: c["serving"] for c in doc["containers"]["gateway"]} == {
        "gateway-a1": True,
        "gateway-b1": False,
    }
    assert doc["unfinished"] == [
        "gateways the proxy does not serve are still there (hello-gateway-dev-gateway-b1-1); "
        "the next deploy removes them"
    ]


def test_history_lists_the_recorded_deploys(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--history", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], [e["release"] for e in doc["entries"]]) == (
        True,
        "history",
        [OLD],
    )


def test_one_probe_reads_releases_current_images_secrets_proxy_lock_and_containers(
    local: LocalHostSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = local.deployed(OLD)
    env_dir = local.env_dir(bundle)
    (env_dir / "releases" / NEW).mkdir()
    (env_dir / "releases" / NEW / "FAILED").write_text("x\n")
    (env_dir / "releases" / "stray-file").write_text("not a release")
    (env_dir / "releases" / f".{NEW}.tar.gz").write_bytes(b"half an upload")
    (env_dir / "lock.json").write_text(
        '{"who": "bob@desk", "action": "deploy", "since": "2026-01-02T00:00:00Z", "pid": 7}'
    )
    (env_dir.parent / "claims.json").write_text(
        '{"projects": {}}'
    )  # edited by hand: no newline at the end
    monkeypatch.setenv("PATH", f"{local.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SY_FAKE_DOCKER_STATE", str(local.state_file))
    monkeypatch.setenv("SY_FAKE_DOCKER_LOG", str(local.log))
    root = str(env_dir.parent)
    content = secrets_file(bundle).content
    image, proxy_image = bundle.manifest.images

    state = read_state(
        LocalHost(),
        root,
        bundle.compose_project,
        bundle.config.project,
        "dev",
        images=(image, proxy_image, "nope/gateway:0"),
        secrets=content,
        claims=True,
    )
    assert (state.releases, state.failed, state.current, state.exists) == (
        [OLD, NEW],
        {NEW},
        OLD,
        True,
    )
    assert state.images == {image: True, proxy_image: True, "nope/gateway:0": False}
    assert state.secrets_same is True
    assert [
        (c.service, c.compose_service, c.slot, c.release, c.owned) for c in state.containers
    ] == [("gateway", "gateway-a1", "a", OLD, True), ("proxy", "proxy", None, OLD, True)]
    assert [c.compose_service for c in state.gateways("a")] == ["gateway-a1"] and state.gateways(
        "b"
    ) == []
    found = state.proxy()
    assert found is not None and found.compose_service == "proxy"
    assert state.manifests == {OLD: bundle.manifest}
    assert state.proxy_live == ProxyHeader(OLD, "a", bundle.manifest.services.proxy.config["a"])
    assert (state.compose, state.leftovers, state.claims) == (
        "2.29.7",
        [f".{NEW}.tar.gz"],
        '{"projects": {}}',
    )
    assert claims.parse(state.claims) == {}
    assert (
        state.lock_holder.startswith('{"who": "bob@desk"') and state.lock_free is True
    )  # left by a deploy that died
    assert f"127.0.0.1:{local.port}->8080/tcp" in state.published

    other = read_state(
        LocalHost(),
        root,
        bundle.compose_project,
        bundle.config.project,
        "dev",
        images=("nope/gateway:0",),
        secrets=content + b"B='2'\n",
    )
    assert (
        other.images == {"nope/gateway:0": False}
        and other.secrets_same is False
        and other.claims is None
    )
    plain = read_state(LocalHost(), root, bundle.compose_project, bundle.config.project, "dev")
    assert plain.images == {} and plain.secrets_same is None
    # Only read-only docker commands ran.
    assert read_only(local.docker_calls())

    never = read_state(LocalHost(), root, "never-deployed", bundle.config.project, "dev")
    assert (never.releases, never.current, never.containers, never.exists, never.proxy_live) == (
        [],
        None,
        [],
        False,
        None,
    )


def test_a_plan_without_the_secrets_still_plans_and_says_a_deploy_would_refuse(
    local: LocalHostSetup,
) -> None:
    local.config["providers"]["vendor"] = {
        "adapter": "openai-compatible",
        "base_url": "http://127.0.0.1:9/v1",
        "credentials": {"api_key": "VENDOR_API_KEY"},
        "models": {"small": {"context_window": 8192}},
    }
    local.config["routes"]["chat"]["candidates"] = ["mock/echo", "vendor/small"]
    local.config["environments"]["dev"]["secrets"] = {
        "VENDOR_API_KEY": {"env": "SYTEST_UNSET_SECRET_VAR"}
    }
    write_config(local.repo, local.config)
    before = local.snapshot()
    plan = local.deploy("dev", "--plan")
    assert plan.returncode == 0, plan
    assert "gateway  create  not running yet" in plan.stdout
    assert (
        "note: environments.dev.secrets.VENDOR_API_KEY: the environment variable SYTEST_UNSET_SECRET_VAR is not set"
        in plan.stderr
    ), plan.stderr
    assert "a deploy would refuse" in plan.stderr
    assert "write " not in plan.stdout  # no secrets step planned without the values
    assert local.snapshot() == before and read_only(local.docker_calls())
    real = local.deploy("dev", "--yes")
    assert real.returncode == 1 and "SYTEST_UNSET_SECRET_VAR is not set" in real.stdout, real
    assert "-> connect" not in real.stderr


def test_after_a_proxy_only_deploy_the_live_release_is_the_one_that_made_the_proxy_config(
    compile_env: Compile,
) -> None:
    """A deploy that changed only the proxy (release NEW) leaves the gateways of OLD: NEW is live,
    so a later plan names NEW as the previous release and a rollback goes back from NEW, not OLD."""
    old = compile_env(base_config(), "staging")
    host = host_with(old)
    host.proxy_live = header(old, "a", NEW)
    host.releases = [OLD, NEW]
    host.current = NEW
    plan = plan_of(old, host, old)
    assert plan.live_slot == "a" and plan.live_release == NEW
    assert plan.noop
    # Another slot's header (an interrupted cut-over) does not count.
    host.proxy_live = header(old, "b", NEW)
    assert plan_of(old, host, old).live_release == OLD
