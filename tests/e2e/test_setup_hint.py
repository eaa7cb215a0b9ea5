"""A command run with a Python that lacks Switchyard's dependencies (outside the virtualenv)
says how to set up — never a traceback, never "a bug in Switchyard" (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compiler import cli
from runtime.setup_hint import EXIT_SETUP

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv with nothing installed (not even pip): the same Python, no packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "compiler", "check", "gateway.yaml"],
        ["-m", "compiler", "build", "dev", "--out", "build-never"],
        ["deploy.py", "staging"],
        ["-m", "runtime", "serve", "--config", "build/dev/runtime.json"],
        ["-m", "runtime", "keys", "list", "--env", "dev"],
    ],
)
def test_a_missing_dependency_says_how_to_set_up(bare_python: str, command: list[str]) -> None:
    proc = subprocess.run(
        [bare_python, *command], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == EXIT_SETUP, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "bug in Switchyard" not in proc.stderr
    assert "is missing" in proc.stderr
    assert "bash scripts/dev.sh" in proc.stderr and ".venv/bin/activate" in proc.stderr
    assert not (ROOT / "build-never").exists()


def test_a_dependency_imported_late_is_not_called_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `build` imports Jinja2 only when it renders: missing there, it is the same message.
    def build(_: object) -> int:
        raise ModuleNotFoundError("No module named 'jinja2'", name="jinja2")

    monkeypatch.delenv("SWITCHYARD_DEBUG", raising=False)
    monkeypatch.setattr(cli, "cmd_build", build)  # build_parser() reads it when called
    assert cli.main(["build", "dev"]) == EXIT_SETUP
    err = capsys.readouterr().err
    assert "'jinja2' is missing" in err and "bug" not in err
