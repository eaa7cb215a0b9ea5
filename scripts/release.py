#!/usr/bin/env python3
"""Cut a release users can pin: the package version, the CHANGELOG and the tag must agree.

    python scripts/release.py check            # versions, CHANGELOG and snippets agree
    python scripts/release.py check --tag v0.2.0
    python scripts/release.py tag              # check, then `git tag -a v<version>` on HEAD

The version lives in pyproject.toml (`project.version`) and compiler/__init__.py
(`__version__`); CHANGELOG.md's newest release heading (`## [X.Y.Z] - YYYY-MM-DD`) must be
that version, and the README's pre-commit snippet and the workflow's install comment must pin
`vX.Y.Z`. `tag` refuses a dirty tree and an existing tag. Push the tag with the branch:
`git push origin main vX.Y.Z`. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", re.M)


def versions(root: Path) -> dict[str, str | None]:
    """Where the version is written, and what each place says (None: not found)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    init = re.search(
        r'^__version__ = "([^"]+)"$', (root / "compiler/__init__.py").read_text(), re.M
    )
    changelog = HEADING.search((root / "CHANGELOG.md").read_text())
    readme = re.search(r"^\s+rev: v(\S+)$", (root / "README.md").read_text(), re.M)
    workflow = re.search(
        r"switchyard@v(\d+\.\d+\.\d+)", (root / ".github/workflows/gateway.yml").read_text()
    )
    return {
        "pyproject.toml project.version": project,
        "compiler/__init__.py __version__": init.group(1) if init else None,
        "CHANGELOG.md newest release": changelog.group(1) if changelog else None,
        "README.md pre-commit rev": readme.group(1) if readme else None,
        ".github/workflows/gateway.yml install pin": workflow.group(1) if workflow else None,
    }


def problems(root: Path, tag: str | None = None) -> list[str]:
    """What disagrees, one line each; empty when the release is consistent."""
    found = versions(root)
    version = found["pyproject.toml project.version"]
    out = [
        f"{where} is {said or 'missing'}, not {version}"
        for where, said in found.items()
        if said != version
    ]
    if tag is not None and tag != f"v{version}":
        out.append(f"the tag {tag} is not v{version} (the package's version)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("check", "tag"))
    parser.add_argument("--tag", help="the tag to check against the version (check only)")
    args = parser.parse_args(argv)
    wrong = problems(ROOT, args.tag)
    if wrong:
        print("release check failed:", *(f"  - {w}" for w in wrong), sep="\n", file=sys.stderr)
        return 1
    version = versions(ROOT)["pyproject.toml project.version"]
    if args.command == "check":
        print(f"release v{version}: versions, CHANGELOG and snippets agree")
        return 0
    git = ["git", "-C", str(ROOT)]
    if subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout:
        print("release: the working tree has changes; commit them first", file=sys.stderr)
        return 1
    exists = subprocess.run([*git, "rev-parse", "-q", "--verify", f"refs/tags/v{version}"])
    if exists.returncode == 0:
        print(f"release: the tag v{version} exists already; bump the version", file=sys.stderr)
        return 1
    subprocess.run([*git, "tag", "-a", f"v{version}", "-m", f"Switchyard {version}"], check=True)
    print(f"tagged v{version}; push it: git push origin main v{version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
