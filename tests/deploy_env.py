"""Real parts for the deploy end-to-end tests (tests/e2e/test_deploy_e2e.py).

- `require_docker()`: a Docker engine, Compose v2 and the locally built base image, or a skip
  (locally) / a failure (in CI, where these tests may never skip).
- `Sshd`: a real OpenSSH server on 127.0.0.1 with its own config and a generated key pair;
  `drop_sessions()` cuts every live connection the way a network failure would.
- `Neighbour`: somebody else's compose project already running on the same Docker host, plus
  canaries a `prune` would delete (an exited container, an unused volume, a dangling image).
- `snapshot(project)`: {container name: (id, StartedAt)} — what "not restarted" means.
- `DeployProject`: a copy of the repository (git repo of its own) with a test gateway.yaml
  whose environments deploy over SSH to the sshd above, and `deploy(...)` running deploy.py.
- `make_key` / `chat`: a key of an environment, made inside its gateway container, and a chat
  completion through the environment's loopback port with the official openai SDK.

Everything a test creates carries a random name (`sytest-<hex>`, `neighbour-<hex>`) and is
removed at the end by that name; nothing else on the Docker host is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gateway_env import free_port

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "switchyard-test/base:bookworm"
SSHD = "/usr/sbin/sshd"
ORG = "acme"
ROUTE = "chat"
# What deploy needs from the repository: the CLI, the deployer, the compiler (and the
# templates and schema it reads) and the runtime package the image is built from.
PROJECT_PARTS = (
    "deploy.py",
    "deployer",
    "compiler",
    "runtime",
    "templates",
    "schema",
    "pyproject.toml",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip locally; fail in CI, where the deploy tests must run."""
    if in_ci():
        pytest.fail(f"deploy e2e tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def run(
    args: Sequence[str], *, timeout: float = 120, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell); on failure with check=True, raise with its output."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: "
            f"{proc.stderr}"
        )
    return proc


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def compose_env() -> dict[str, str]:
    """This process's environment minus COMPOSE_* (a stray COMPOSE_PROJECT_NAME must not leak
    in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}


# ---------------------------------------------------------------------------------------
# Docker


def require_docker() -> None:
    """Docker engine + Compose v2 + the test base image (built here if missing), else skip/fail."""
    if shutil.which("docker") is None:
        unavailable("the docker CLI is not installed")
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30)
    if info.returncode != 0:
        unavailable(
            f"the Docker engine does not answer (`docker info`): {info.stderr.strip()[:300]}"
        )
    version = run(["docker", "compose", "version", "--short"], check=False, timeout=30)
    if version.returncode != 0 or not version.stdout.strip().lstrip("v").startswith("2."):
        unavailable(
            "Docker Compose v2 is not installed (`docker compose version`: "
            f"{(version.stdout + version.stderr).strip()[:200]})"
        )
    if run(["docker", "image", "inspect", BASE_IMAGE], check=False, timeout=30).returncode != 0:
        built = run(
            ["bash", "scripts/test-base-image.sh", BASE_IMAGE], cwd=ROOT, check=False, timeout=900
        )
        if built.returncode != 0:
            unavailable(
                f"the test base image {BASE_IMAGE} is missing and scripts/test-base-image.sh "
                "failed: "
                f"{(built.stdout + built.stderr).strip()[-600:]}"
            )


def snapshot(project: str) -> dict[str, tuple[str, str]]:
    """{container name: (id, State.StartedAt)} of every container of compose project `project`."""
    ids = run(
        [
            "docker",
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={project}",
        ]
    ).stdout.split()
    if not ids:
        return {}
    docs = json.loads(run(["docker", "inspect", *ids]).stdout)
    return {d["Name"].lstrip("/"): (d["Id"], d["State"]["StartedAt"]) for d in docs}


def containers(project: str, service: str | None = None) -> list[dict[str, Any]]:
    """`docker inspect` documents of the project's containers (of one service), by name."""
    filters = ["--filter", f"label=com.docker.compose.project={project}"]
    if service:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    ids = run(["docker", "ps", "-aq", "--no-trunc", *filters]).stdout.split()
    if not ids:
        return []
    docs: list[dict[str, Any]] = json.loads(run(["docker", "inspect", *ids]).stdout)
    return sorted(docs, key=lambda d: d["Name"])


def remove_project_resources(project: str, image_refs: Sequence[str] = ()) -> None:
    """Test teardown: remove what the tests created under compose project `project`, by label."""
    label = f"label=com.docker.compose.project={project}"
    ids = run(["docker", "ps", "-aq", "--filter", label], check=False).stdout.split()
    if ids:
        run(["docker", "rm", "-f", "-v", *ids], check=False, timeout=120)
    vols = run(["docker", "volume", "ls", "-q", "--filter", label], check=False).stdout.split()
    if vols:
        run(["docker", "volume", "rm", "-f", *vols], check=False)
    nets = run(["docker", "network", "ls", "-q", "--filter", label], check=False).stdout.split()
    if nets:
        run(["docker", "network", "rm", *nets], check=False)
    for ref in image_refs:
        imgs = run(
            ["docker", "images", "-q", "--filter", f"reference={ref}"], check=False
        ).stdout.split()
        if imgs:
            run(["docker", "rmi", "-f", *sorted(set(imgs))], check=False, timeout=120)


# ---------------------------------------------------------------------------------------
# sshd on 127.0.0.1


@dataclass
class Sshd:
    """A real OpenSSH server on 127.0.0.1:<port>, root login with a generated ed25519 key."""

    dir: Path
    port: int = 0
    user: str = "root"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def identity(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    def start(self) -> Sshd:
        if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
            unavailable(
                f"OpenSSH server is not installed ({SSHD}; apt-get install -y openssh-server)"
            )
        if os.geteuid() != 0:
            unavailable("the sshd fixture logs in as root and must run as root")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "sytest-host",
                "-f",
                str(self.dir / "host_ed25519"),
            ]
        )
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "sytest-client",
                "-f",
                str(self.identity),
            ]
        )
        shutil.copyfile(self.identity.with_suffix(".pub"), self.dir / "authorized_keys")
        os.chmod(self.dir / "authorized_keys", 0o600)
        self.port = free_port()
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.dir / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "MaxStartups 50\n"
            "MaxSessions 50\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
        )
        run([SSHD, "-t", "-f", str(cfg)])
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_port(self.port)
        except OSError:
            self.stop()
            raise AssertionError(
                f"sshd did not listen on 127.0.0.1:{self.port}: {self.log.read_text()[-2000:]}"
            ) from None
        return self

    def ssh(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `command` on the server with the OpenSSH client (a check that the fixture works)."""
        return run(
            [
                "ssh",
                "-i",
                str(self.identity),
                "-p",
                str(self.port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                f"UserKnownHostsFile={self.dir / 'known_hosts'}",
                "-o",
                "IdentitiesOnly=yes",
                f"{self.user}@127.0.0.1",
                *command,
            ],
            check=False,
            timeout=timeout,
        )

    def _descendants(self) -> list[int]:
        assert self.proc is not None
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        found: list[int] = []
        todo = list(children.get(self.proc.pid, []))
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def session_pids(self) -> list[int]:
        """The sshd processes serving live connections: sshd descendants of the listener."""
        found = []
        for pid in self._descendants():
            try:
                if os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("sshd"):
                    found.append(pid)
            except OSError:
                continue
        return found

    def session_commands(self) -> list[list[str]]:
        """The argv of every command running in an SSH session now."""
        found = []
        for pid in self._descendants():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            found.append([a.decode(errors="replace") for a in argv if a])
        return found

    def drop_sessions(self) -> list[int]:
        """Cut every live SSH connection (SIGKILL its sshd processes), keep the listener.

        The commands those sessions were running are left to notice the broken pipe on their
        own, as after a real network failure. Returns the pids killed.
        """
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


# ---------------------------------------------------------------------------------------
# A neighbour: another team's compose project on the same host


NEIGHBOUR_COMPOSE = """\
services:
  web:
    image: {image}
    command: [python3, -m, http.server, "8000", --bind, 0.0.0.0, --directory, /srv]
    ports: ["127.0.0.1:{port}:8000"]
    volumes: [site:/srv]
    restart: unless-stopped
    labels: {{org.example.team: neighbours}}
  worker:
    image: {image}
    command: [python3, -c, "import time; time.sleep(10**9)"]
    restart: unless-stopped
    stop_grace_period: 1s
  job:
    image: {image}
    command: ["true"]
    restart: "no"
volumes:
  site: {{}}
"""


@dataclass
class Neighbour:
    """A compose project (`neighbour-<hex>`) that is not ours, already running on the host.

    Besides its running services it keeps things a prune would delete: an exited one-shot
    container (`job`), a volume no container uses, and a dangling (untagged) image.
    """

    dir: Path
    project: str = field(default_factory=lambda: f"neighbour-{secrets.token_hex(4)}")
    port: int = 0
    image: str = ""
    canary_volume: str = ""
    dangling_image: str = ""

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run(
            ["docker", "compose", "-p", self.project, "-f", str(self.dir / "compose.yaml"), *args],
            timeout=timeout,
            env=compose_env(),
        )

    def start(self) -> Neighbour:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # Its own image, built from the base image (a prune of "unused" images must spare it).
        self.image = f"{self.project}/web:1"
        (self.dir / "image").mkdir()
        (self.dir / "image" / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nLABEL org.example.team=neighbours\n"
        )
        run(["docker", "build", "-q", "-t", self.image, str(self.dir / "image")], timeout=300)
        (self.dir / "dangling").mkdir()
        (self.dir / "dangling" / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nLABEL org.example.canary={self.project}\n"
        )
        self.dangling_image = run(
            ["docker", "build", "-q", str(self.dir / "dangling")], timeout=300
        ).stdout.strip()
        self.canary_volume = f"{self.project}-canary"
        run(
            [
                "docker",
                "volume",
                "create",
                "--label",
                "org.example.team=neighbours",
                self.canary_volume,
            ]
        )
        (self.dir / "compose.yaml").write_text(
            NEIGHBOUR_COMPOSE.format(image=self.image, port=self.port)
        )
        self.compose("up", "-d")
        deadline = time.monotonic() + 30
        while not self.answers():
            if time.monotonic() > deadline:
                raise AssertionError(f"neighbour web on 127.0.0.1:{self.port} does not answer")
            time.sleep(0.2)
        # The one-shot job has run and exited.
        deadline = time.monotonic() + 30
        while containers(self.project, "job")[0]["State"]["Status"] != "exited":
            if time.monotonic() > deadline:
                raise AssertionError("neighbour job did not exit")
            time.sleep(0.2)
        return self

    def answers(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def intact(self) -> list[str]:
        """What is missing of the neighbour's things a `down` or a prune would remove."""
        missing = []
        checks = {
            f"image {self.image}": ["docker", "image", "inspect", self.image],
            f"dangling image {self.dangling_image}": [
                "docker",
                "image",
                "inspect",
                self.dangling_image,
            ],
            f"volume {self.canary_volume}": ["docker", "volume", "inspect", self.canary_volume],
            f"volume {self.project}_site": ["docker", "volume", "inspect", f"{self.project}_site"],
            f"network {self.project}_default": [
                "docker",
                "network",
                "inspect",
                f"{self.project}_default",
            ],
        }
        for what, cmd in checks.items():
            if run(cmd, check=False).returncode != 0:
                missing.append(what)
        if not self.answers():
            missing.append(f"web answering on 127.0.0.1:{self.port}")
        return missing

    def stop(self) -> None:
        remove_project_resources(self.project, [f"{self.project}/*"])
        run(["docker", "volume", "rm", "-f", self.canary_volume], check=False)
        if self.dangling_image:
            run(["docker", "rmi", "-f", self.dangling_image], check=False)


# ---------------------------------------------------------------------------------------
# The project being deployed


@dataclass
class DeployResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"--json did not print one JSON document ({exc}):\n{self}"
            ) from None
        return doc

    def __str__(self) -> str:
        return (
            f"$ deploy.py {' '.join(self.args)}  -> exit {self.returncode} in {self.seconds:.1f}s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


@dataclass
class DeployProject:
    """A copy of this repository with a test gateway.yaml, deployed with its own deploy.py."""

    dir: Path
    sshd: Sshd
    name: str = field(default_factory=lambda: f"sytest-{secrets.token_hex(4)}")
    ports: dict[str, int] = field(default_factory=dict)
    secret_values: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    outputs: list[DeployResult] = field(default_factory=list)

    @property
    def repo(self) -> Path:
        return self.dir / "repo"

    @property
    def deploy_dir(self) -> Path:
        return self.dir / "host" / "srv"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "operator" / "known_hosts"

    @property
    def secret_file(self) -> Path:
        return self.dir / "operator" / "production-vendor.key"

    def compose_project(self, env: str) -> str:
        return f"{self.name}-{env}"

    def env_dir(self, env: str) -> Path:
        return self.deploy_dir / self.compose_project(env)

    def releases(self, env: str) -> list[str]:
        d = self.env_dir(env) / "releases"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def current(self, env: str) -> str | None:
        link = self.env_dir(env) / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def history_lines(self, env: str) -> list[dict[str, Any]]:
        f = self.env_dir(env) / "history.jsonl"
        return (
            [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            if f.exists()
            else []
        )

    def create(self) -> DeployProject:
        self.repo.mkdir(parents=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache")
        for part in PROJECT_PARTS:
            src = ROOT / part
            if src.is_dir():
                shutil.copytree(src, self.repo / part, ignore=ignore)
            elif src.is_file():
                shutil.copy2(src, self.repo / part)
        self.deploy_dir.mkdir(parents=True)
        self.secret_file.parent.mkdir(parents=True)
        self.secret_values = {
            "staging": f"sytest-staging-vendor-{secrets.token_hex(16)}",
            "production": f"sytest-production-vendor-{secrets.token_hex(16)}",
        }
        self.secret_file.write_text(self.secret_values["production"] + "\n")
        os.chmod(self.secret_file, 0o600)
        self.ports = {"staging": free_port(), "production": free_port()}
        self.config = self.base_config()
        self.write_config()
        self.git("init", "-q", "-b", "main")
        self.commit("the project under test")
        return self

    def base_config(self) -> dict[str, Any]:
        def env(name: str, replicas: int, secret: dict[str, str]) -> dict[str, Any]:
            return {
                "description": f"e2e {name}",
                "target": "ssh",
                "host": "127.0.0.1",
                "ssh_port": self.sshd.port,
                "ssh_user": self.sshd.user,
                "port": self.ports[name],
                "replicas": replicas,
                "health_timeout_s": 30,
                "keep_releases": 5,
                "deploy_dir": str(self.deploy_dir),
                "secrets": {"VENDOR_API_KEY": secret},
            }

        return {
            "version": 1,
            "project": self.name,
            "description": "Switchyard deploy end-to-end test",
            "providers": {
                "mock": {
                    "adapter": "mock",
                    "models": {"echo": {"context_window": 8192, "capabilities": ["streaming"]}},
                },
                # Never reached (mock answers first); it makes VENDOR_API_KEY a REQUIRED secret,
                # so the gateway becomes ready only if deploy wrote the secrets file.
                "vendor": {
                    "adapter": "openai-compatible",
                    "base_url": "http://127.0.0.1:9/v1",
                    "credentials": {"api_key": "VENDOR_API_KEY"},
                    "models": {"small": {"context_window": 8192, "capabilities": ["streaming"]}},
                },
            },
            "routes": {ROUTE: {"candidates": ["mock/echo", "vendor/small"]}},
            "orgs": {ORG: {"description": "the tests' org"}},
            "runtime": {"base_image": BASE_IMAGE, "proxy": {"base_image": BASE_IMAGE}},
            "environments": {
                "staging": env("staging", 1, {"env": "SYTEST_STAGING_VENDOR_KEY"}),
                "production": env("production", 2, {"file": str(self.secret_file)}),
            },
        }

    def write_config(self) -> None:
        (self.repo / "gateway.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))

    def git(self, *args: str) -> str:
        return run(
            [
                "git",
                "-c",
                "user.name=sytest",
                "-c",
                "user.email=sytest@example.invalid",
                "-c",
                "init.defaultBranch=main",
                *args,
            ],
            cwd=self.repo,
        ).stdout

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    def deploy_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = compose_env()
        env["SWITCHYARD_SSH_IDENTITY"] = str(self.sshd.identity)
        # The test sshd's host key is remembered here, not in the operator's ~/.ssh/known_hosts.
        env["SWITCHYARD_SSH_KNOWN_HOSTS"] = str(self.known_hosts)
        env["SYTEST_STAGING_VENDOR_KEY"] = self.secret_values["staging"]
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the copy's runtime/
        env.pop("PYTHONPATH", None)
        env.update(extra or {})
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "deploy.py", *args]

    def deploy(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> DeployResult:
        """Run `deploy.py ARGS` in the copy and record its output (for the secret-leak check)."""
        start = time.monotonic()
        proc = self.popen(*args, env=env)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung = DeployResult(list(args), proc.returncode, out, err, time.monotonic() - start)
            self.outputs.append(hung)
            raise AssertionError(
                f"deploy.py did not finish within {timeout:.0f} s; killed\n{hung}"
            ) from None
        return self.record(args, proc, out, err, time.monotonic() - start)

    def deploy_watching(
        self,
        *args: str,
        on_line: Callable[[str, subprocess.Popen[str]], object],
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> DeployResult:
        """`deploy.py ARGS`, calling `on_line(line, proc)` for each stderr line as it arrives (to
        time its steps, or to interrupt it at one); killed after `timeout`. Recorded like
        `deploy`."""
        started = time.monotonic()
        proc = self.popen(*args, env=env)
        out: list[str] = []
        err: list[str] = []

        def read_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                err.append(line)
                on_line(line, proc)

        def read_out() -> None:
            assert proc.stdout is not None
            out.extend(proc.stdout)

        readers = [
            threading.Thread(target=read_err, daemon=True),
            threading.Thread(target=read_out, daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - started
        for t in readers:
            t.join(timeout=10)
        return self.record(args, proc, "".join(out), "".join(err), seconds)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.repo,
            env=self.deploy_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            bufsize=1,
        )

    def record(
        self,
        args: Sequence[str],
        proc: subprocess.Popen[str],
        stdout: str,
        stderr: str,
        seconds: float,
    ) -> DeployResult:
        result = DeployResult(list(args), proc.returncode, stdout, stderr, seconds)
        self.outputs.append(result)
        return result

    def gateway_exec(
        self, env: str, *command: str, index: int = 0, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` in the `index`-th running gateway container of `env` (by name)."""
        running = [
            c
            for c in containers(self.compose_project(env))
            if c["State"]["Status"] == "running"
            and c["Config"]["Labels"].get("dev.switchyard.service") == "gateway"
        ]
        assert len(running) > index, (
            f"{env}: no running gateway #{index}: {[c['Name'] for c in running]}"
        )
        return run(["docker", "exec", running[index]["Id"], *command], timeout=timeout)

    def cleanup(self) -> None:
        for env in ("staging", "production"):
            cp = self.compose_project(env)
            remove_project_resources(cp, [f"{cp}/*"])


# ---------------------------------------------------------------------------------------
# Talking to a deployed gateway


def make_key(project: DeployProject, env: str, *, index: int = 0) -> str:
    """A new gateway key of `env` (org acme), made inside a gateway container of `env`."""
    proc = project.gateway_exec(
        env,
        "python",
        "-m",
        "runtime",
        "keys",
        "create",
        "--env",
        env,
        "--org",
        ORG,
        "--name",
        f"t{secrets.token_hex(2)}",
        index=index,
    )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"keys create printed nothing: {proc.stderr}"
    return lines[-1]


def chat(
    port: int, key: str, *, model: str = ROUTE, text: str = "Hello!", retry_s: float = 15.0
) -> str:
    """One chat completion through 127.0.0.1:<port> with the openai SDK; its reply text.

    A new key reaches the gateway within about a second (it reloads its key store), and a
    just-restarted gateway may still be starting, so 401s and connection errors are retried
    for up to `retry_s`.
    """
    import openai

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=20
    )
    deadline = time.monotonic() + retry_s
    while True:
        try:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}]
            )
            break
        except (openai.AuthenticationError, openai.APIConnectionError, openai.InternalServerError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    content = reply.choices[0].message.content
    assert content, f"empty completion from 127.0.0.1:{port}: {reply}"
    return content


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def iter_files(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            yield p
