"""The dev command stays light (issue 14): `scripts/bootstrap.sh` without `--test` installs
the gateway and the openai SDK its printed example uses — not the test tools, the other
provider SDKs or the Docker Compose plugin; `--test` adds them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.gateway_env import ROOT


def _copy_repo(dest: Path) -> Path:
    """The checkout's tracked files (what a fresh clone has), without .venv or build output."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def test_the_dev_bootstrap_installs_only_what_the_dev_gateway_needs(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    home = tmp_path / "home"  # where the Compose plugin would go: it must stay empty
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    run = subprocess.run(
        ["bash", "scripts/bootstrap.sh"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    py = repo / ".venv" / "bin" / "python"
    have = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util as u; print(' '.join(m for m in "
            "('fastapi', 'uvicorn', 'openai', 'jinja2', 'mypy', 'pytest', 'anthropic', "
            "'google.genai', 'agents', 'ruff') if u.find_spec(m.split('.')[0]) is not None))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"fastapi", "uvicorn", "openai", "jinja2"} <= set(have)
    assert not {"mypy", "pytest", "anthropic", "agents", "ruff"} & set(have), have
    assert not (home / ".docker").exists()
    # The dev gateway's own commands work from that venv.
    check = subprocess.run(
        [str(py), "-m", "compiler", "check", "gateway.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    # A second run has nothing to do.
    again = subprocess.run(
        ["bash", "scripts/bootstrap.sh"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "installing" not in again.stderr
