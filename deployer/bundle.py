"""Validate and compile one environment in memory, and pack it as a release.

The release is what a host runs: the compiled files, `requirements.txt` and the `runtime/`
package the image is built from. It never holds a secret value (those go to the secrets
file, `secrets_env.py`).
"""

from __future__ import annotations

import getpass
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from compiler.cli import RUNTIME_DIR, image_inputs
from compiler.diagnostics import did_you_mean
from compiler.manifest import Manifest
from compiler.models import Environment, GatewayConfig
from compiler.render import render_all
from compiler.reporters import text as diagnostics_text
from compiler.validate import check_bytes


class DeployError(Exception):
    """A deploy cannot go on. The message names the place and the fix (exit 1)."""


class UsageError(Exception):
    """The command was called wrongly (exit 2)."""


@dataclass(frozen=True)
class Bundle:
    """One environment, validated and compiled, ready to become a release."""

    env: str
    config: GatewayConfig
    environment: Environment
    manifest: Manifest
    files: dict[str, str]  # compose.yaml, runtime.json, Dockerfile, manifest.json
    runtime_dir: Path
    config_path: Path
    git_commit: str | None

    @property
    def compose_project(self) -> str:
        return self.manifest.compose_project

    @property
    def port(self) -> int:
        return self.manifest.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release_id(self, now: datetime) -> str:
        """`20261126T071500Z-1a2b3c4d`: sortable by time, tagged with the inputs it carries."""
        digest = hashlib.sha256(
            json.dumps(self.manifest.services.to_json(), sort_keys=True).encode()
        ).hexdigest()[:8]
        return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest}"

    def tarball(self) -> bytes:
        """The release directory as a deterministic .tar.gz (Fabric's put takes files, not
        folders)."""
        members: list[tuple[str, bytes, int]] = [
            (name, text.encode(), 0o644) for name, text in sorted(self.files.items())
        ]
        requirements = self.runtime_dir / "requirements.txt"
        members.append(
            (
                "requirements.txt",
                requirements.read_bytes() if requirements.is_file() else b"",
                0o644,
            )
        )
        for f in sorted(self.runtime_dir.rglob("*")):
            if not f.is_file() or "__pycache__" in f.parts or f.suffix in (".pyc", ".pyo"):
                continue
            members.append(
                ("runtime/" + f.relative_to(self.runtime_dir).as_posix(), f.read_bytes(), 0o644)
            )
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data, mode in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                tar.addfile(info, io.BytesIO(data))
        return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def load_bundle(config_path: str, env: str) -> Bundle:
    """Validate `config_path` and compile `env`; raise DeployError with the diagnostics if
    invalid."""
    path = Path(config_path)
    if not path.is_file():
        raise UsageError(
            f"{config_path}: no such file (run from your repository root, or pass --config)"
        )
    raw = path.read_bytes()
    result = check_bytes(raw, source_dir=path.resolve().parent)
    if not result.ok or result.config is None:
        raise DeployError(
            diagnostics_text(config_path, result.diagnostics).rstrip()
            + f"\nrefusing to deploy: {config_path} has errors (run `python -m compiler check "
            f"{config_path}`)"
        )
    config = result.config
    if env not in config.environments:
        known = ", ".join(config.environments)
        hint = did_you_mean(env, list(config.environments))
        raise UsageError(
            f"unknown environment '{env}' in {config_path}"
            + (f"; {hint}" if hint else "")
            + f" (environments: {known})"
        )
    files = render_all(
        config,
        [env],
        image_inputs(RUNTIME_DIR),
        resolved=result.resolved,
        source_name=path.name,
        source_sha256=hashlib.sha256(raw).hexdigest(),
    )[env]
    return Bundle(
        env=env,
        config=config,
        environment=config.environments[env],
        manifest=Manifest.parse(files["manifest.json"]),
        files=files,
        runtime_dir=RUNTIME_DIR,
        config_path=path,
        git_commit=git_commit(path.resolve().parent),
    )


def git_commit(directory: Path) -> str | None:
    """HEAD of the repository holding the config, `+dirty` when it has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def operator() -> str:
    """Who is deploying: $SWITCHYARD_DEPLOY_USER, else user@machine."""
    if who := os.environ.get("SWITCHYARD_DEPLOY_USER"):
        return who
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def utcnow() -> datetime:
    return datetime.now(UTC)
