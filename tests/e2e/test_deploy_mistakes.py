"""Operator mistakes: `python deploy.py ENV` says what is wrong in one line and leaves nothing
half-done.

Each case runs deploy.py in a subprocess, as an operator does, and checks that it exits 1 with
one clear line naming the setting or the fix, that no Python traceback (and no SSH library's
log) reaches stdout or stderr, and that the host is as it was: no release, no FAILED marker,
no history entry for a refusal, no container touched.

- Docker Compose v2 missing on the host (`docker compose version` fails, or says v1);
- `deploy_dir` that is a file, that cannot be created, or that is not writable;
- a secrets file that is not UTF-8 text (or starts with a byte-order mark);
- a rejected SSH key, a key file that does not exist (real sshd on 127.0.0.1; skipped locally
  without one, failed in CI);
- a port that does not speak SSH (a small TCP server here);
- an upload that fails (a stand-in `tar` that fails half-way): the live release is untouched.

None of them needs Docker: `target: local` environments run against the stand-in `docker` of
tests/deploy_units_support.py (LocalHostSetup), which logs every call.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_env import Sshd, run, tmpdir
from tests.deploy_units_support import OLD, LocalHostSetup, local_config
from tests.gateway_env import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy.py"

# docker subcommands that only read (what a refused deploy may have run).
READS = {("ps",), ("inspect",), ("image", "inspect"), ("compose", "version")}


# ---------------------------------------------------------------------------------------
# helpers


def deploy_py(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """deploy.py ARGS in `cwd`, with a HOME of its own (no ~/.ssh keys or config, no agent)."""
    home = cwd.parent / "operator-home"
    home.mkdir(exist_ok=True)
    run_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SWITCHYARD_", "COMPOSE_", "SSH_")) and k != "PYTHONPATH"
    }
    run_env.update(
        HOME=str(home),
        PYTHONDONTWRITEBYTECODE="1",
        SWITCHYARD_SSH_KNOWN_HOSTS=str(home / "known_hosts"),
    )
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


def write_config(repo: Path, config: dict[str, Any]) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def refused(proc: subprocess.CompletedProcess[str], *said: str) -> str:
    """Exit 1, one line on stdout that says `said`, progress only on stderr; the line."""
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    assert proc.returncode == 1, shown
    no_traceback(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, shown
    for text in said:
        assert text in lines[0], f"{text!r} not in the message\n{shown}"
    return lines[0]


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    """No Python traceback, and nothing on stderr but deploy.py's own progress (and plan) lines."""
    shown = f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in stream and 'File "' not in stream, shown
    for line in proc.stderr.splitlines():
        # Progress: "-> step", "   ok (…)", "   failed after …", "   note: …"; the plan; nothing
        # else (a logging record from paramiko, a warning, a stray print).
        assert line.startswith(("-> ", "   ", "-- ", "  ", "Plan for ", "Steps:")), (
            f"not a progress line: {line!r}\n{shown}"
        )
    assert "paramiko" not in proc.stderr.lower(), shown


def writes(calls: list[list[str]]) -> list[list[str]]:
    """The docker calls that are not reads."""
    return [c for c in calls if tuple(c[:1]) not in READS and tuple(c[:2]) not in READS]


def tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path under `root`: mode and content (or link target)."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for p in sorted(root.rglob("*")) if root.exists() else []:
        st = p.lstat()
        body: bytes | str = (
            os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else b""
        )
        out[str(p.relative_to(root))] = (st.st_mode, body)
    return out


class Local(LocalHostSetup):
    """LocalHostSetup with a directory of more stand-ins ahead of its `docker` on PATH."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.extra = tmp_path / "extra-bin"
        self.extra.mkdir()
        self.env: dict[str, str] = {}

    def stand_in(self, name: str, text: str) -> None:
        (self.extra / name).write_text(text)
        (self.extra / name).chmod(0o755)

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return deploy_py(
            self.repo,
            *args,
            env={
                "PATH": os.pathsep.join(
                    [str(self.extra), str(self.bin), os.environ.get("PATH", "")]
                ),
                "SY_FAKE_DOCKER_STATE": str(self.state_file),
                "SY_FAKE_DOCKER_LOG": str(self.log),
                **self.env,
            },
        )

    def history(self) -> list[dict[str, Any]]:
        f = self.env_dir(self.bundle()) / "history.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


@pytest.fixture
def local(tmp_path: Path) -> Local:
    return Local(tmp_path)


# ---------------------------------------------------------------------------------------
# 1. Docker Compose v2 is not on the host

# In front of the stand-in docker: `docker compose version` answers as SY_COMPOSE says.
COMPOSE_VERSION = r"""#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["compose", "version"]:
    with open(os.environ["SY_FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(args) + "\n")
    answer = os.environ["SY_COMPOSE"]
    if answer == "missing":
        sys.exit("docker: 'compose' is not a docker command.\nSee 'docker --help'")
    print(answer)
    sys.exit(0)
os.execv("{docker}", ["docker", *args])
"""


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        ("missing", "(`docker compose` is not available)"),
        ("1.29.2", "(`docker compose version` printed '1.29.2')"),
    ],
)
@pytest.mark.parametrize("first", [True, False], ids=["first-deploy", "live-release"])
def test_compose_v2_missing_on_the_host_refuses_before_changing_anything(
    local: Local, answer: str, found: str, first: bool
) -> None:
    local.stand_in(
        "docker",
        COMPOSE_VERSION.replace("{python}", sys.executable).replace(
            "{docker}", str(local.bin / "docker")
        ),
    )
    local.env["SY_COMPOSE"] = answer
    if not first:
        local.deployed(OLD)
        local.config["routes"]["other"] = {
            "candidates": ["mock/echo"]
        }  # so the deploy would do something
        write_config(local.repo, local.config)
    before = tree(local.deploy_dir)

    proc = local.deploy("dev", "--yes")

    line = refused(
        proc,
        "Docker Compose v2 is not installed on localhost",
        found,
        "install the Compose plugin",
        "docker-compose-plugin",
        "nothing was changed",
    )
    assert line.startswith("dev: deploy refused: "), line
    calls = local.docker_calls()
    assert ["compose", "version", "--short"] in calls, calls
    assert writes(calls) == [], calls  # no compose up / stop / rm / build, nothing
    env_dir = local.env_dir(local.bundle())
    after = tree(local.deploy_dir)
    if first:
        # The deploy lock made the environment's (empty) directory; nothing else is there:
        # no release, no history, no claim, no lock holder file.
        cp = env_dir.name
        assert sorted(after) == [cp, f"{cp}/deploy.lock", f"{cp}/releases"], sorted(after)
    else:
        added = {k: v for k, v in after.items() if before.get(k) != v}
        assert sorted(added) == [f"{env_dir.name}/deploy.lock"], sorted(
            added
        )  # only the lock's (empty) file
        assert set(before) <= set(after)
        assert [(e["release"], e["result"]) for e in local.history()] == [
            (OLD, "ok")
        ]  # no new entry
        assert os.readlink(env_dir / "current") == f"releases/{OLD}"
    assert not any("FAILED" in k for k in after)
    assert not (env_dir / "lock.json").exists()


# ---------------------------------------------------------------------------------------
# 2. deploy_dir that cannot be used


@contextlib.contextmanager
def unwritable_dir(parent: Path) -> Iterator[Path]:
    """An existing directory this user cannot create files in (for root too: immutable, or
    /proc)."""
    d = parent / "read-only"
    d.mkdir()
    d.chmod(0o555)
    if os.geteuid() != 0:
        try:
            yield d
        finally:
            d.chmod(0o755)
        return
    immutable = (
        shutil.which("chattr") is not None
        and run(["chattr", "+i", str(d)], check=False).returncode == 0
    )
    try:
        # Root writes through any mode bits; an immutable directory (ext4, xfs, btrfs) or a
        # pseudo-filesystem refuses it.
        yield d if immutable else Path("/proc")
    finally:
        if immutable:
            run(["chattr", "-i", str(d)], check=False)
        d.chmod(0o755)


def test_a_deploy_dir_that_is_a_file_is_refused_naming_the_setting(local: Local) -> None:
    local.deploy_dir.write_text("not a directory\n")
    proc = local.deploy("dev", "--yes")
    refused(
        proc,
        f"environments.dev.deploy_dir: {local.deploy_dir} on localhost is a file, not a directory",
        "pick another deploy_dir",
    )
    assert (
        "sh -c" not in proc.stdout and "exited" not in proc.stdout
    )  # not a shell script's failure
    assert local.deploy_dir.read_text() == "not a directory\n"
    assert local.docker_calls() == []


def test_a_deploy_dir_under_a_file_cannot_be_created_naming_the_setting(
    local: Local, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("in the way\n")
    local.config["environments"]["dev"]["deploy_dir"] = str(tmp_path / "a-file" / "srv")
    write_config(local.repo, local.config)
    proc = local.deploy("dev", "--yes")
    line = refused(
        proc,
        f"environments.dev.deploy_dir: {tmp_path / 'a-file' / 'srv'} on localhost cannot be "
        "created",
        "(Not a directory)",
        "or pick another deploy_dir",
    )
    assert "SSH" not in line, line  # target: local has no SSH user
    assert "sh -c" not in proc.stdout and "exited" not in proc.stdout
    assert (tmp_path / "a-file").read_text() == "in the way\n"
    assert local.docker_calls() == []


def test_a_deploy_dir_that_is_not_writable_is_refused_naming_the_setting(
    local: Local, tmp_path: Path
) -> None:
    with unwritable_dir(tmp_path) as d:
        local.config["environments"]["dev"]["deploy_dir"] = str(d)
        write_config(local.repo, local.config)
        proc = local.deploy("dev", "--yes")
        line = refused(
            proc,
            f"environments.dev.deploy_dir: {d} on localhost is not writable",
            "write access",
            "or pick another deploy_dir",
        )
        assert "SSH" not in line, line
        assert "sh -c" not in proc.stdout and "exited" not in proc.stdout
        if d.name == "read-only":
            assert list(d.iterdir()) == []
    assert local.docker_calls() == []


# ---------------------------------------------------------------------------------------
# 3. a secrets file that is not UTF-8 text


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (
            b"\xff\xfes\x00k\x00-\x00",
            "is not UTF-8 text (at byte 0)",
        ),  # UTF-16 (Notepad's "Unicode")
        (b"cl\xe9-secr\xe8te\n", "is not UTF-8 text (at byte 2)"),  # latin-1
        (
            b"\xef\xbb\xbfsk-from-notepad\n",
            "starts with a UTF-8 byte-order mark",
        ),  # Notepad's "UTF-8 with BOM"
    ],
)
def test_a_secrets_file_that_is_not_plain_utf8_text_is_refused_naming_the_secret_and_file(
    local: Local, tmp_path: Path, content: bytes, why: str
) -> None:
    key = tmp_path / "operator" / "vendor.key"
    key.parent.mkdir()
    key.write_bytes(content)
    key.chmod(0o600)
    local.config["providers"]["vendor"] = {
        "adapter": "openai-compatible",
        "base_url": "http://127.0.0.1:9/v1",
        "credentials": {"api_key": "VENDOR_API_KEY"},
        "models": {"small": {"context_window": 8192}},
    }
    local.config["routes"]["chat"]["candidates"] = ["mock/echo", "vendor/small"]
    local.config["environments"]["dev"]["secrets"] = {"VENDOR_API_KEY": {"file": str(key)}}
    write_config(local.repo, local.config)

    proc = local.deploy("dev", "--yes")

    line = refused(
        proc, f"environments.dev.secrets.VENDOR_API_KEY: {key} {why}", "plain UTF-8 text"
    )
    assert line.startswith("dev: deploy refused: "), line
    for byte in content[:12]:  # no byte of the secret in the output
        if byte > 0x7E:
            assert f"\\x{byte:02x}" not in proc.stdout + proc.stderr, (
                "a byte of the secret was printed"
            )
    assert "-> connect" not in proc.stderr  # stopped before anything was contacted
    assert not local.deploy_dir.exists() and local.docker_calls() == []
    assert key.read_bytes() == content


# ---------------------------------------------------------------------------------------
# 4. SSH: a key the host does not accept; 5. a port that does not speak SSH


def ssh_config(deploy_dir: Path, port: int) -> dict[str, Any]:
    config = local_config(deploy_dir, free_port())
    config["environments"] = {
        "staging": {
            "target": "ssh",
            "host": "127.0.0.1",
            "ssh_port": port,
            "ssh_user": "root",
            "port": config["environments"]["dev"]["port"],
            "deploy_dir": str(deploy_dir),
        }
    }
    return config


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    root = tmpdir("sytest-mistakes-")
    try:
        server = Sshd(
            root / "sshd"
        ).start()  # skips locally without sshd (or not as root); fails in CI
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    "kind",
    [["-t", "ed25519"], ["-t", "rsa", "-b", "2048"], ["-t", "ecdsa"]],
    ids=["ed25519", "rsa", "ecdsa"],
)
def test_an_ssh_key_the_host_refuses_names_identity_and_the_variable(
    sshd: Sshd, tmp_path: Path, kind: list[str]
) -> None:
    stranger = tmp_path / "stranger"
    run(["ssh-keygen", "-q", *kind, "-N", "", "-C", "not-authorized", "-f", str(stranger)])
    write_config(tmp_path / "repo", ssh_config(tmp_path / "srv", sshd.port))

    proc = deploy_py(tmp_path / "repo", "staging", "--yes", "--identity", str(stranger))

    line = refused(
        proc,
        f"cannot connect to root@127.0.0.1:{sshd.port}: the host refused our SSH key",
        "--identity",
        "SWITCHYARD_SSH_IDENTITY",
    )
    assert line.startswith("staging: deploy refused: "), line
    assert "Invalid key" not in line, line  # paramiko's last try (the file as another key type)
    assert not (tmp_path / "srv").exists()
    # The same key through the variable: the same message.
    proc = deploy_py(
        tmp_path / "repo", "staging", "--yes", env={"SWITCHYARD_SSH_IDENTITY": str(stranger)}
    )
    refused(proc, "the host refused our SSH key", "--identity", "SWITCHYARD_SSH_IDENTITY")


def test_an_identity_file_that_does_not_exist_is_named(sshd: Sshd, tmp_path: Path) -> None:
    write_config(tmp_path / "repo", ssh_config(tmp_path / "srv", sshd.port))
    missing = tmp_path / "keys" / "id_typo"
    proc = deploy_py(tmp_path / "repo", "staging", "--yes", "--identity", str(missing))
    refused(proc, f"the SSH key {missing} does not exist", "--identity", "SWITCHYARD_SSH_IDENTITY")
    assert "Errno" not in proc.stdout
    assert not (tmp_path / "srv").exists()


def test_an_identity_that_is_the_public_key_is_named(sshd: Sshd, tmp_path: Path) -> None:
    write_config(tmp_path / "repo", ssh_config(tmp_path / "srv", sshd.port))
    public = Path(f"{sshd.identity}.pub")
    proc = deploy_py(tmp_path / "repo", "staging", "--yes", "--identity", str(public))
    refused(proc, f"{public} is not an SSH private key", "--identity", "SWITCHYARD_SSH_IDENTITY")


def test_an_identity_with_a_passphrase_says_to_use_the_agent(sshd: Sshd, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(locked)])
    write_config(tmp_path / "repo", ssh_config(tmp_path / "srv", sshd.port))
    proc = deploy_py(tmp_path / "repo", "staging", "--yes", "--identity", str(locked))
    line = refused(proc, f"the SSH key {locked} is protected by a passphrase", f"ssh-add {locked}")
    assert "host refused" not in line, line  # the host never saw it


@contextlib.contextmanager
def not_ssh(reply: bytes) -> Iterator[int]:
    """A TCP port on 127.0.0.1 that answers every connection with `reply` and closes it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b""],
    ids=["http", "silent-close"],
)
def test_a_port_that_does_not_speak_ssh_names_ssh_port(tmp_path: Path, reply: bytes) -> None:
    with not_ssh(reply) as port:
        write_config(tmp_path / "repo", ssh_config(tmp_path / "srv", port))
        proc = deploy_py(
            tmp_path / "repo", "staging", "--yes", "--identity", str(tmp_path / "unused")
        )
    line = refused(
        proc,
        f"cannot connect to root@127.0.0.1:{port}",
        f"port {port} does not speak SSH",
        "ssh_port",
    )
    assert line.startswith("staging: deploy refused: "), line
    assert not (tmp_path / "srv").exists()


# ---------------------------------------------------------------------------------------
# 6. an upload that fails: the live release is untouched

# A `tar` that unpacks part of the release, then fails the way a full disk does.
FAILING_TAR = """#!/bin/sh
# tar -xzf TARBALL -C DIR
echo "services: {half" > "$4/compose.yaml"
echo "tar: runtime/app.py: Cannot write: No space left on device" >&2
echo "tar: Exiting with failure status due to previous errors" >&2
exit 2
"""


def test_an_upload_that_fails_leaves_the_live_release_untouched(local: Local) -> None:
    bundle = local.deployed(OLD)
    env_dir = local.env_dir(bundle)
    local.config["routes"]["other"] = {
        "candidates": ["mock/echo"]
    }  # a change: new gateways would start
    write_config(local.repo, local.config)
    local.stand_in("tar", FAILING_TAR)
    live = {
        k: v
        for k, v in tree(env_dir).items()
        if not k.startswith(("history.jsonl", "deploy.lock", "lock.json"))
    }

    proc = local.deploy("dev", "--yes")

    shown = f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    assert proc.returncode == 1, shown
    no_traceback(proc)
    first, *rest = proc.stdout.splitlines()
    assert first.startswith("dev: deploy FAILED. release "), shown
    assert (
        "the upload to localhost failed: tar: runtime/app.py: Cannot write: No space left on device"
        in first
    ), shown
    assert rest == [f"release {OLD} keeps serving, untouched"], shown
    failed_id = first.removeprefix("dev: deploy FAILED. release ").split(" ", 1)[0]
    assert failed_id != OLD, shown
    # Nothing that serves was touched: only reads of docker, no compose up / stop / rm / kill.
    assert writes(local.docker_calls()) == [], local.docker_calls()
    assert os.readlink(env_dir / "current") == f"releases/{OLD}"
    after = tree(env_dir)
    assert {k: after.get(k) for k in live} == live  # the live release, proxy config, secrets
    # No release under its final name (nor a FAILED marker for one); the half-unpacked
    # directory stays hidden, for the next deploy to remove.
    releases = sorted(p.name for p in (env_dir / "releases").iterdir())
    assert [r for r in releases if not r.startswith(".")] == [OLD], releases
    assert [r for r in releases if r.startswith(".")] == [
        f".{failed_id}.tar.gz",
        f".{failed_id}.unpack",
    ], releases
    assert (
        env_dir / "releases" / f".{failed_id}.unpack" / "compose.yaml"
    ).read_text() == "services: {half\n"
    assert not any(k.endswith("FAILED") for k in after)
    [ok, failed] = local.history()
    assert ok["release"] == OLD
    assert (failed["action"], failed["result"], failed["previous"]) == ("deploy", "failed", OLD), (
        failed
    )
    assert "No space left on device" in failed["reason"] and failed["release"] == failed_id
    assert not (env_dir / "lock.json").exists()

    # --status says what the attempt left (and that the next deploy removes it).
    status = local.deploy("dev", "--status")
    assert status.returncode == 0, status
    assert "unfinished: half-written uploads in releases/" in status.stdout, status.stdout
