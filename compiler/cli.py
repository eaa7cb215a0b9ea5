"""`python -m compiler`: check, build, schema, docs, explain, diff. The only module that does I/O.

Exit codes: 0 ok, 1 invalid input (the config has errors), 2 usage or internal error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from compiler.diagnostics import did_you_mean
from compiler.reporters import REPORTERS
from runtime.setup_hint import exit_missing

if TYPE_CHECKING:  # imported where used, so `check` does not load the renderer
    from compiler.models import GatewayConfig
    from compiler.render import ImageInputs
    from compiler.validate import CheckResult

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "schema" / "gateway.schema.json"
RUNTIME_DIR = REPO_ROOT / "runtime"

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


def _read_config(path: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise UsageError(
            f"{path}: no such file (run from your repository root, or pass the config path)"
        )
    if p.is_dir():
        raise UsageError(f"{path}: is a directory, not a config file")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc


def _check(path: str) -> tuple[bytes, CheckResult]:
    from compiler.validate import check_bytes

    raw = _read_config(path)
    return raw, check_bytes(raw, source_dir=Path(path).resolve().parent)


# ---------------------------------------------------------------------------------------
# check


def cmd_check(args: argparse.Namespace) -> int:
    """Check every file given; the exit code is the worst of them (2 > 1 > 0)."""
    files: list[str] = list(dict.fromkeys(args.files)) or ["gateway.yaml"]
    worst = EXIT_OK
    reports: list[str] = []
    for path in files:
        try:
            _raw, result = _check(path)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            worst = max(worst, EXIT_USAGE)
            continue
        diagnostics = result.diagnostics
        reports.append(REPORTERS[args.format](path, diagnostics))
        if not result.ok or (args.strict and diagnostics):
            worst = max(worst, EXIT_INVALID)
    if args.format == "json" and len(files) > 1:
        # One JSON document for several files: the list of the per-file reports.
        sys.stdout.write(
            json.dumps([json.loads(r) for r in reports], indent=2, ensure_ascii=False) + "\n"
        )
    else:
        sys.stdout.write("".join(reports))
    return worst


# ---------------------------------------------------------------------------------------
# build


def image_inputs(runtime_dir: Path = RUNTIME_DIR) -> ImageInputs:
    """Digest of the runtime package the image is built from, and its requirements."""
    from compiler.render import ImageInputs

    h = hashlib.sha256()
    if runtime_dir.is_dir():
        for f in sorted(runtime_dir.rglob("*")):
            if not f.is_file() or "__pycache__" in f.parts or f.suffix in (".pyc", ".pyo"):
                continue
            rel = f.relative_to(runtime_dir).as_posix()
            # requirements.txt is hashed on its own, so a plan can tell code from dependencies.
            if rel == "requirements.txt":
                continue
            h.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    req = runtime_dir / "requirements.txt"
    return ImageInputs(
        runtime_digest=h.hexdigest(), requirements=req.read_text() if req.is_file() else ""
    )


def _pick_envs(config: GatewayConfig, names: Sequence[str], all_envs: bool) -> list[str]:
    known = list(config.environments)
    if all_envs:
        if names:
            raise UsageError("give environment names or --all, not both")
        return known
    if not names:
        raise UsageError(
            f"name the environments to build, or pass --all (environments: {', '.join(known)})"
        )
    for n in names:
        if n not in config.environments:
            hint = did_you_mean(n, known)
            raise UsageError(
                f"unknown environment '{n}'"
                + (f"; {hint}" if hint else f" (environments: {', '.join(known)})")
            )
    return list(dict.fromkeys(names))


def _stage(out_dir: Path, name: str, files: dict[str, str]) -> Path:
    """Write `files` into a new hidden temporary directory next to `out_dir/name`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_dir))
    try:
        for rel, text in sorted(files.items()):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def write_trees_atomically(out_dir: Path, trees: dict[str, dict[str, str]]) -> None:
    """Replace each `out_dir/<name>` with exactly its files, or leave ALL previous output intact.

    Every tree is written to a temporary directory first (where a full disk or a permission
    problem shows up); only then are the directories swapped in by rename. When a swap
    fails, the swaps already made are undone. No temporary directory is left behind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    backup: Path | None = None
    swapped: list[str] = []
    try:
        for name, files in trees.items():
            staged[name] = _stage(out_dir, name, files)
        backup = Path(tempfile.mkdtemp(prefix=".previous-", dir=out_dir))
        for name, tmp in staged.items():
            final = out_dir / name
            if final.exists():
                os.rename(final, backup / name)
            try:
                os.rename(tmp, final)
            except BaseException:
                if (backup / name).exists():
                    os.rename(backup / name, final)
                raise
            swapped.append(name)
    except BaseException:
        for name in reversed(swapped):
            final = out_dir / name
            shutil.rmtree(final, ignore_errors=True)
            if backup is not None and (backup / name).exists():
                os.rename(backup / name, final)
        raise
    finally:
        for tmp in staged.values():
            shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


def write_tree_atomically(out_dir: Path, name: str, files: dict[str, str]) -> None:
    """Replace `out_dir/name` with exactly `files`, or leave the previous output intact."""
    write_trees_atomically(out_dir, {name: files})


def cmd_build(args: argparse.Namespace) -> int:
    from compiler.render import render_all
    from compiler.reporters import text

    raw, result = _check(args.config)
    if not result.ok or result.config is None:
        sys.stderr.write(text(args.config, result.diagnostics))
        sys.stderr.write(f"refusing to build: {args.config} has errors (nothing was written)\n")
        return EXIT_INVALID
    envs = _pick_envs(result.config, args.envs, args.all)
    rendered = render_all(
        result.config,
        envs,
        image_inputs(),
        resolved=result.resolved,
        source_name=Path(args.config).name,
        source_sha256=hashlib.sha256(raw).hexdigest(),
    )
    out = Path(args.out)
    try:
        write_trees_atomically(out, rendered)
    except OSError as exc:
        raise UsageError(
            f"cannot write {out}: {exc.strerror or exc} (the previous output is unchanged)"
        ) from exc
    if not args.quiet:
        for env, files in rendered.items():
            print(f"built {env}: {', '.join(sorted(files))} -> {out / env}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# schema


def cmd_schema(args: argparse.Namespace) -> int:
    from compiler.schema import schema_text

    path = Path(args.out) if args.out else SCHEMA_PATH
    expected = schema_text()
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != expected:
            print(
                f"{path}: out of date with compiler/models.py; run `python -m compiler schema`",
                file=sys.stderr,
            )
            return EXIT_INVALID
        print(f"{path}: up to date")
        return EXIT_OK
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(expected)
    os.replace(tmp, path)
    print(f"wrote {path}")
    if args.out:  # a copy for an editor: the modeline that uses it, from gateway.yaml's folder
        print(f"use it in gateway.yaml: # yaml-language-server: $schema=./{_relative(path)}")
    return EXIT_OK


def _relative(path: Path) -> str:
    """`path` relative to the working directory when it is inside it, else as given."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def cmd_docs(args: argparse.Namespace) -> int:
    from compiler.docgen import REFERENCE_PATH, reference_markdown

    expected = reference_markdown()
    path = REFERENCE_PATH
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != expected:
            print(
                f"{path.name} is out of date with compiler/models.py; "
                "run `python -m compiler docs`",
                file=sys.stderr,
            )
            return EXIT_INVALID
        print(f"{path.name}: up to date")
        return EXIT_OK
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(expected)
    os.replace(tmp, path)
    print(f"wrote {path}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# explain, diff


def _valid_config(path: str) -> GatewayConfig:
    from compiler.reporters import text

    _raw, result = _check(path)
    if result.config is None:
        sys.stderr.write(text(path, result.diagnostics))
        sys.stderr.write(f"{path} has errors; fix them first\n")
        raise SystemExit(EXIT_INVALID)
    return result.config


def cmd_explain(args: argparse.Namespace) -> int:
    from compiler.explain import explain_route, explain_text

    config = _valid_config(args.config)
    if args.route not in config.routes:
        hint = did_you_mean(args.route, config.routes)
        raise UsageError(
            f"unknown route '{args.route}'"
            + (f"; {hint}" if hint else f" (routes: {', '.join(config.routes)})")
        )
    _pick_envs(config, [args.env], False)
    doc = explain_route(config, args.route, args.env)
    sys.stdout.write(
        json.dumps(doc, indent=2) + "\n" if args.format == "json" else explain_text(doc)
    )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from compiler.explain import diff_environments, diff_text

    config = _valid_config(args.config)
    _pick_envs(config, [args.env_a, args.env_b], False)
    changes = diff_environments(config, args.env_a, args.env_b)
    sys.stdout.write(
        json.dumps(changes, indent=2) + "\n"
        if args.format == "json"
        else diff_text(args.env_a, args.env_b, changes)
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m compiler", description="Validate and compile a Switchyard gateway.yaml."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("check", help="validate a config; report every problem")
    p.add_argument("files", nargs="*", metavar="FILE", help="config files (default: gateway.yaml)")
    p.add_argument(
        "--format",
        choices=sorted(REPORTERS),
        default="text",
        help="json: one report object, or a list of them for several files",
    )
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("build", help="compile environments into DIR/<env>/")
    p.add_argument("envs", nargs="*", metavar="ENV")
    p.add_argument("--all", action="store_true", help="every environment")
    p.add_argument("--config", default="gateway.yaml")
    p.add_argument("--out", default="build")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("schema", help="write (or --check) schema/gateway.schema.json")
    p.add_argument(
        "--check", action="store_true", help="fail if the checked-in schema is out of date"
    )
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--write",
        metavar="PATH",
        dest="out",
        help="write the schema to PATH instead: a local copy in your repository for editors "
        "that work offline (point gateway.yaml's yaml-language-server modeline at it)",
    )
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("docs", help="write (or --check) docs/reference.md from the models")
    p.add_argument(
        "--check", action="store_true", help="fail if the checked-in reference is out of date"
    )
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("explain", help="a route's resolved candidate chain in an environment")
    p.add_argument("route")
    p.add_argument("--env", required=True)
    p.add_argument("--config", default="gateway.yaml")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("diff", help="what differs between two environments")
    p.add_argument("env_a", metavar="ENV_A")
    p.add_argument("env_b", metavar="ENV_B")
    p.add_argument("--config", default="gateway.yaml")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_diff)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except ModuleNotFoundError as exc:  # imported late (Jinja2 for build): how to set up
        if os.environ.get("SWITCHYARD_DEBUG"):
            raise
        return exit_missing(exc)
    except Exception as exc:  # the last line of defence: never a traceback for users
        if os.environ.get("SWITCHYARD_DEBUG"):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "this is a bug in Switchyard; rerun with SWITCHYARD_DEBUG=1 for details",
            file=sys.stderr,
        )
        return EXIT_USAGE
