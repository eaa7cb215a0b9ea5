"""Shared pieces of the deploy unit tests, tests/unit/test_deploy_units_*.py: a small gateway.yaml
and its bundles, what runs on a host built by hand for the plan, deploy.py in a subprocess,
and a `target: local` host whose `docker` is a stand-in (LocalHostSetup).

The unit tests, one file per part:

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
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.manifest import Manifest
from deployer.bundle import Bundle, load_bundle
from deployer.plan import (
    DeployPlan,
    Inputs,
    make_plan,
    parse_compose,
)
from deployer.secrets_env import secrets_file
from deployer.state import (
    Container,
    HostState,
    Paths,
    ProxyHeader,
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
    """What deploy writes at the top of the live haproxy.cfg when `bundle`'s `slot` config goes
    live."""
    return ProxyHeader(release, slot, bundle.manifest.services.proxy.config[slot])


def host_with(
    old: Bundle,
    slot: str = "a",
    containers: list[Container] | None = None,
    *,
    live_config: bool = True,
) -> HostState:
    """A host where `old` was deployed as release OLD: its gateways in `slot`, the proxy serving
    them."""
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
    """make_plan for `new` on `host`; `image` / `proxy_image`: whether its images are on the
    host."""
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


def runtime_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of runtime/ that load_bundle compiles from (so a test may edit it)."""
    copy_dir = tmp_path / "runtime-copy" / "runtime"
    shutil.copytree(RUNTIME, copy_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    monkeypatch.setattr("deployer.bundle.RUNTIME_DIR", copy_dir)
    return copy_dir


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


# =======================================================================================
# plan: the proxy


def proxy_change(**settings: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.setdefault("runtime", {}).setdefault("proxy", {}).update(settings)


@pytest.fixture
def staging(compile_env: Compile) -> Bundle:
    return compile_env(base_config(), "staging")


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


def local_config(deploy_dir: Path, port: int) -> dict[str, Any]:
    return {
        "version": 1,
        "project": "hello-gateway",
        "providers": {"mock": {"adapter": "mock", "models": {"echo": {"context_window": 8192}}}},
        "routes": {"chat": {"candidates": ["mock/echo"]}},
        "environments": {"dev": {"target": "local", "port": port, "deploy_dir": str(deploy_dir)}},
    }
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


@contextlib.contextmanager
def answering(port: int, instance: str) -> Iterator[None]:
    """127.0.0.1:`port` answers /readyz with 200 from `instance`, as a gateway behind the proxy
    would."""

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
