"""The docs are derived from, and kept in step with, the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compiler import docgen

ROOT = Path(__file__).resolve().parents[2]
CODE = re.compile(r'"([EW]0\d\d)"')


def _emitted_codes() -> set[str]:
    codes: set[str] = set()
    for f in (ROOT / "compiler").glob("*.py"):
        codes |= set(CODE.findall(f.read_text()))
    return codes


def test_reference_is_generated_from_the_models() -> None:
    expected = docgen.reference_markdown()
    assert docgen.REFERENCE_PATH.read_text() == expected, (
        "docs/reference.md is out of date; run `python -m compiler docs`"
    )


def test_reference_covers_every_section() -> None:
    text = docgen.reference_markdown()
    for section in (
        "Provider",
        "ModelSpec",
        "Route",
        "Fallback",
        "Org",
        "Byok",
        "Limits",
        "Logging",
        "Runtime",
        "Environment",
        "SecretSource",
    ):
        assert f"## {section}\n" in text


def test_every_emitted_code_is_documented() -> None:
    documented = set(
        re.findall(r"\| ([EW]0\d\d) \|", (ROOT / "docs" / "diagnostics.md").read_text())
    )
    missing = _emitted_codes() - documented
    assert not missing, f"codes emitted but not in docs/diagnostics.md: {sorted(missing)}"


def test_every_error_code_has_an_example_or_a_loader_test() -> None:
    expected_outputs = "".join(
        p.read_text() for p in (ROOT / "schema" / "examples").rglob("*.expected")
    )
    shown = set(re.findall(r"\[([EW]0\d\d)\]", expected_outputs))
    # Size and encoding refusals need files too big or too binary to keep as examples;
    # tests/unit/test_loader.py covers them.
    covered_elsewhere = {"E005", "E007"}
    errors = {c for c in _emitted_codes() if c.startswith("E")}
    missing = errors - shown - covered_elsewhere
    assert not missing, f"error codes without an invalid example: {sorted(missing)}"


def test_readme_names_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/dev.sh" in readme
    assert "bash scripts/test.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci, ".ci/run must run the README's test command"


def test_example_config_points_editors_at_the_schema() -> None:
    first = (ROOT / "gateway.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./schema/gateway.schema.json"


def test_docs_command_writes_and_checks_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from compiler import cli

    target = tmp_path / "reference.md"
    monkeypatch.setattr(docgen, "REFERENCE_PATH", target)
    assert cli.main(["docs", "--check"]) == 1
    assert "reference.md is out of date" in capsys.readouterr().err
    assert cli.main(["docs"]) == 0
    assert target.read_text() == docgen.reference_markdown()
    assert cli.main(["docs", "--check"]) == 0
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
