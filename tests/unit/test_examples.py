"""The example corpus is the spec of `check`: each example's exact output, in every format.

Examples are found by glob: adding `schema/examples/{valid,invalid}/NAME.yaml` with its
`NAME.expected` (the exact stdout of `python -m compiler check schema/examples/.../NAME.yaml`,
run from the repository root) is all it takes to add a test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest

from compiler import cli
from compiler.loader import load
from compiler.validate import check_bytes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "schema" / "examples"
VALID = sorted((EXAMPLES / "valid").glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))
ALL = [*VALID, *INVALID]

# Codes of the shape rules, which the published JSON Schema must enforce as well.
SHAPE_CODES = {"E010", "E011", "E012", "E013", "E014", "E015", "E016", "E052"}
# Shape codes a JSON Schema cannot express: they compare two fields of the file.
CROSS_FIELD = re.compile(r"exceeds context_window")

TEXT_LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): "
    r"(?P<severity>error|warning)\[(?P<code>[EW]\d{3})\] "
)
GITHUB_LINE = re.compile(r"^::(error|warning) file=[^,]+,line=(\d+),col=(\d+),title=([EW]\d{3})")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.stem}" for p in paths]


def _expected(path: Path) -> str:
    expected = path.with_suffix(".expected")
    assert expected.is_file(), (
        f"{_rel(expected)} is missing; write it with "
        f"`python -m compiler check {_rel(path)} > {_rel(expected)}` and read it"
    )
    return expected.read_text(encoding="utf-8")


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_DEBUG"}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compiler", "check", _rel(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_child_env(),
        timeout=60,
    )


def _in_process(
    path: Path, fmt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.chdir(ROOT)
    code = cli.main(["check", _rel(path), "--format", fmt])
    return code, capsys.readouterr().out


def _text_diagnostics(output: str) -> list[tuple[str, str, int, int]]:
    found = []
    for line in output.splitlines():
        m = TEXT_LINE.match(line)
        if m:
            found.append((m["code"], m["severity"], int(m["line"]), int(m["col"])))
    return found


def test_the_corpus_is_there() -> None:
    assert len(INVALID) >= 36
    assert {"minimal", "full"} <= {p.stem for p in VALID}


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_check_prints_exactly_the_expected_output(path: Path) -> None:
    expected = _expected(path)
    result = run_check(path)
    assert result.stdout == expected
    assert "Traceback" not in result.stderr
    assert result.returncode == (0 if path in VALID else 1), result.stderr


@pytest.mark.parametrize("path", INVALID, ids=_ids(INVALID))
def test_an_invalid_example_has_errors(path: Path) -> None:
    found = _text_diagnostics(_expected(path))
    assert any(severity == "error" for _code, severity, _l, _c in found)
    for _code, _severity, line, col in found:
        assert line >= 1 and col >= 1


@pytest.mark.parametrize("path", VALID, ids=_ids(VALID))
def test_a_valid_example_has_at_most_warnings(path: Path) -> None:
    assert all(
        severity == "warning" for _c, severity, _l, _col in _text_diagnostics(_expected(path))
    )


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_json_format_reports_the_same_diagnostics(
    path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out = _in_process(path, "json", capsys, monkeypatch)
    doc = json.loads(out)
    expected = _text_diagnostics(_expected(path))
    got = [(d["code"], d["severity"], d["line"], d["column"]) for d in doc["diagnostics"]]
    assert got == expected
    assert doc["file"] == _rel(path)
    assert doc["valid"] is (path in VALID)
    assert doc["errors"] == sum(s == "error" for _c, s, _l, _col in expected)
    assert doc["warnings"] == sum(s == "warning" for _c, s, _l, _col in expected)
    assert code == (0 if path in VALID else 1)
    for d in doc["diagnostics"]:
        assert d["message"] and d["path"]


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_github_format_annotates_every_diagnostic(
    path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out = _in_process(path, "github", capsys, monkeypatch)
    lines = out.splitlines()
    expected = _text_diagnostics(_expected(path))
    annotations = lines[:-1]
    assert len(annotations) == len(expected)
    for line, (want_code, severity, want_line, want_col) in zip(annotations, expected, strict=True):
        assert line.startswith(f"::{severity} file=")
        m = GITHUB_LINE.match(line)
        assert m is not None, line
        assert (int(m[2]), int(m[3]), m[4]) == (want_line, want_col, want_code)
    assert lines[-1] == _expected(path).splitlines()[-1]  # the same summary line
    assert code == (0 if path in VALID else 1)


# ---------------------------------------------------------------------------------------
# the published JSON Schema agrees with the compiler on shape


@pytest.fixture(scope="module")
def schema_validator() -> Any:
    schema = json.loads((ROOT / "schema" / "gateway.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _is_pure_shape(path: Path) -> bool:
    text = _expected(path)
    codes = {c for c, _s, _l, _col in _text_diagnostics(text)}
    return bool(codes) and codes <= SHAPE_CODES and not CROSS_FIELD.search(text)


PURE_SHAPE = [p for p in INVALID if _is_pure_shape(p)]


def test_there_are_shape_examples_to_hold_the_schema_to() -> None:
    assert len(PURE_SHAPE) >= 15


@pytest.mark.parametrize("path", PURE_SHAPE, ids=_ids(PURE_SHAPE))
def test_the_schema_rejects_every_shape_error(path: Path, schema_validator: Any) -> None:
    loaded = load(path.read_bytes())
    assert loaded.data is not None
    assert not schema_validator.is_valid(loaded.data), (
        f"{_rel(path)} passes schema/gateway.schema.json"
    )


@pytest.mark.parametrize("path", VALID, ids=_ids(VALID))
def test_the_schema_accepts_every_valid_example(path: Path, schema_validator: Any) -> None:
    loaded = load(path.read_bytes())
    errors = [e.message for e in schema_validator.iter_errors(loaded.data)]
    assert errors == []


# ---------------------------------------------------------------------------------------
# the README of the invalid examples


def test_the_readme_lists_every_invalid_example() -> None:
    readme = (EXAMPLES / "invalid" / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| \[([^\]]+\.yaml)\]\([^)]*\) \| ([^|]*) \|", readme, re.M))
    assert sorted(rows) == [p.name for p in INVALID]
    for p in INVALID:
        codes = sorted({c for c, _s, _l, _col in _text_diagnostics(_expected(p))})
        assert rows[p.name].strip() == ", ".join(codes), p.name


# ---------------------------------------------------------------------------------------
# rules whose example would need a path of this machine


def test_a_secret_file_inside_the_repository_is_refused() -> None:
    raw = (EXAMPLES / "valid" / "minimal.yaml").read_text(encoding="utf-8")
    raw = raw.replace(
        "    port: 8080\n",
        "    port: 8080\n    secrets:\n      K: {file: /srv/acme/gateway/secrets/k.txt}\n",
    )
    result = check_bytes(raw, source_dir=PurePosixPath("/srv/acme/gateway"))
    inside = [d for d in result.diagnostics if d.code == "E043"]
    assert [(d.dotted_path, d.line) for d in inside] == [("environments.dev.secrets.K.file", 18)]
    assert "inside the repository" in inside[0].message
    outside = check_bytes(raw, source_dir=PurePosixPath("/srv/other"))
    assert not [d for d in outside.diagnostics if d.code == "E043"]
