"""The import direction between the packages, read from the source (nothing is imported).

    compiler ──▶ runtime's light contract modules only (RUNTIME_CONTRACT)
    deployer ──▶ compiler
    runtime  ──▶ nothing of compiler or deployer

The gateway image carries runtime/ alone, so the runtime can never need the compiler or the
deployer; the compiler reads and writes runtime.json through the runtime's own typed classes,
but must not pull in the gateway (FastAPI, uvicorn, the adapters); the deployer works from the
compiler's artifacts and never runs the gateway's code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("compiler", "deployer", "runtime")

# The runtime modules the compiler may import: standard library only, no gateway code.
# runtime.setup_hint: what every command says when a dependency is missing.
RUNTIME_CONTRACT = frozenset({"runtime.config", "runtime.vocabulary", "runtime.setup_hint"})


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module `path` imports, anywhere in it (functions included), as dotted names.

    `from a import b` counts as `a.b` too, since b may be a module (`from runtime import
    config`); relative imports are resolved against `package`, the file's package.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _in_contract(module: str) -> bool:
    """A runtime module the compiler may import (bare `runtime`: `from runtime import x`
    also names `runtime.x`, which is judged on its own)."""
    return module == "runtime" or any(
        module == c or module.startswith(c + ".") for c in RUNTIME_CONTRACT
    )


def violations(top_package: str, path: Path, package: str | None = None) -> list[str]:
    """The imports of `path`, a module under `top_package`, that go against the direction."""
    if package is None:
        package = ".".join(path.relative_to(ROOT).parent.parts)
    bad = []
    for module in sorted(imported_modules(path, package)):
        top = _top(module)
        if top == top_package or top not in PACKAGES:
            continue
        forbidden = (
            top_package == "runtime"  # the runtime imports neither
            or (top_package, top) == ("deployer", "runtime")
            or (top_package == "compiler" and (top == "deployer" or not _in_contract(module)))
        )
        if forbidden:
            bad.append(module)
    return bad


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_direction(package: str) -> None:
    assert _modules(package), f"no modules found under {package}/"
    found = {
        str(path.relative_to(ROOT)): bad
        for path in _modules(package)
        if (bad := violations(package, path))
    }
    assert found == {}, f"imports against the direction (see this file's docstring): {found}"


def test_the_contract_modules_exist_and_import_only_the_standard_library() -> None:
    for module in RUNTIME_CONTRACT:
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), module
        imports = imported_modules(path, "runtime")
        ours = {m for m in imports if _top(m) in PACKAGES}
        assert all(_in_contract(m) for m in ours), (module, ours)
        third_party = {_top(m) for m in imports if _top(m) in ("fastapi", "uvicorn", "orjson")}
        assert not third_party, (module, third_party)


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import compiler.models\n"
        "from deployer import flow\n"
        "from . import config\n"
        "def late():\n"
        "    from compiler.render import render_all\n"
    )
    found = imported_modules(sample, "runtime")
    assert {"compiler.models", "deployer.flow", "runtime.config"} <= found
    assert violations("runtime", sample, package="runtime") == [
        "compiler.models",
        "compiler.render",
        "compiler.render.render_all",
        "deployer",
        "deployer.flow",
    ]


def test_the_compiler_may_import_the_contract_and_nothing_else(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from runtime.config import RuntimeConfig\n"
        "from runtime import vocabulary, app\n"
        "import runtime.router\n"
        "from deployer.flow import deploy\n"
    )
    assert violations("compiler", sample, package="compiler") == [
        "deployer.flow",
        "deployer.flow.deploy",
        "runtime.app",
        "runtime.router",
    ]
