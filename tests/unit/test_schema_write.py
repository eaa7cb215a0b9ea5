"""`python -m compiler schema --write PATH`: a local copy of the schema in a user's own
repository for offline editors, and the modeline that uses it (issue 14)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from compiler import cli
from compiler.schema import schema_text


def test_write_puts_the_schema_where_asked_and_says_how_to_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    checked_in = cli.SCHEMA_PATH.read_text()
    assert cli.main(["schema", "--write", "schema/gateway.schema.json"]) == 0
    written = tmp_path / "schema" / "gateway.schema.json"
    assert written.read_text() == schema_text()
    assert json.loads(written.read_text())["$schema"].startswith("http")
    out = capsys.readouterr().out
    assert "# yaml-language-server: $schema=./schema/gateway.schema.json" in out
    assert cli.SCHEMA_PATH.read_text() == checked_in  # the package's own copy untouched
    assert not any(p.suffix == ".tmp" for p in written.parent.iterdir())
    assert os.stat(written).st_size > 1000
