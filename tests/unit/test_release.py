"""Releases users can pin (issue 14): the package version, CHANGELOG.md, the README's
pre-commit snippet and the workflow's pin agree (scripts/release.py), and a disagreement is
named."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import release  # noqa: E402


def _copy(tmp_path: Path) -> Path:
    for name in (
        "pyproject.toml",
        "CHANGELOG.md",
        "README.md",
        "compiler/__init__.py",
        ".github/workflows/gateway.yml",
    ):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return tmp_path


def test_this_checkout_is_a_consistent_release() -> None:
    assert release.problems(ROOT) == []
    version = release.versions(ROOT)["pyproject.toml project.version"]
    assert release.problems(ROOT, f"v{version}") == []
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/release.py"), "check", "--tag", f"v{version}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and f"v{version}" in done.stdout


@pytest.mark.parametrize(
    ("path", "old", "new", "named"),
    [
        ("compiler/__init__.py", '__version__ = "', '__version__ = "9', "compiler/__init__.py"),
        ("CHANGELOG.md", "## [", "## [9", "CHANGELOG.md"),
        ("README.md", "rev: v", "rev: v9", "README.md pre-commit rev"),
        (".github/workflows/gateway.yml", "switchyard@v", "switchyard@v9", "gateway.yml"),
    ],
)
def test_a_place_that_disagrees_is_named(
    tmp_path: Path, path: str, old: str, new: str, named: str
) -> None:
    root = _copy(tmp_path)
    text = (root / path).read_text()
    assert old in text
    (root / path).write_text(text.replace(old, new, 1))
    wrong = release.problems(root)
    assert len(wrong) == 1 and named in wrong[0], wrong


def test_a_tag_that_is_not_the_version_is_refused() -> None:
    (problem,) = release.problems(ROOT, "v0.0.1")
    assert "v0.0.1" in problem
