"""The request path imports no command-line code.

runtime/cli.py owns every parser and print of `python -m runtime`; the gateway's modules
(router, chat, app) and everything they import must reach neither it nor argparse, so a
change to a command cannot slow or break a request. Read from the source with `ast`, so
imports inside functions and under TYPE_CHECKING count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUEST_PATH = ("runtime.router", "runtime.chat", "runtime.app")
CLI_MODULES = {"runtime.cli", "runtime.__main__", "argparse", "getpass"}


def module_file(name: str) -> Path | None:
    """The source file of a module of this repository, or None for anything else."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `path` (the module `name`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            # `from runtime import paths` imports the module runtime.paths
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] != "runtime" or module_file(m) is not None}


def reached_from(roots: tuple[str, ...]) -> dict[str, str]:
    """Every module reached from `roots`, mapped to a module that imports it."""
    seen: dict[str, str] = {root: "(root)" for root in roots}
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None:
            continue
        for imported in sorted(imports_of(name, path)):
            parents = [".".join(imported.split(".")[:i]) for i in range(1, imported.count("."))]
            for module in (*parents, imported):
                if module not in seen:
                    seen[module] = name
                    todo.append(module)
    return seen


def test_the_request_path_reaches_no_cli_module() -> None:
    reached = reached_from(REQUEST_PATH)
    assert "runtime.sqlite" in reached  # the walk follows imports beyond the roots
    offending = {m: reached[m] for m in CLI_MODULES if m in reached}
    assert offending == {}, f"imported (module: by whom): {offending}"


def test_importing_the_request_path_loads_no_cli_module() -> None:
    code = (
        f"import sys, {', '.join(REQUEST_PATH)}; "
        f"print(sorted(m for m in sys.modules if m in {sorted(CLI_MODULES)!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_walk_finds_a_cli_import() -> None:
    # The check above would pass vacuously if the walk missed imports: the CLI itself must
    # be seen reaching argparse.
    assert "argparse" in reached_from(("runtime.cli",))
