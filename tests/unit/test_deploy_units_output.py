"""Deploy unit tests, without a Docker engine or an sshd: output.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import io
import json
import re

import pytest

from deployer.bundle import DeployError
from deployer.output import Progress
from tests import deploy_units_support as support

# pytest finds fixtures among a module's names: the shared ones this file uses.
no_secret_sources = support.no_secret_sources


def test_progress_redacts_the_secret_values_and_known_key_formats() -> None:
    stream = io.StringIO()
    out = Progress("staging", stream=stream, secrets=("vendor-value-123",))
    out.say(
        "upstream said vendor-value-123 and sk-proj-abcdefghijklmnopqrstuvwx and https://u:pw@db.example/x"
    )
    assert (
        stream.getvalue() == "upstream said <redacted> and <redacted> and <redacted>db.example/x\n"
    )


def test_progress_records_steps_with_their_status() -> None:
    stream = io.StringIO()
    out = Progress("staging", stream=stream, secrets=("vendor-value-123",))
    with out.step("first"):
        pass
    with pytest.raises(DeployError), out.step("second vendor-value-123"):
        raise DeployError("it broke: vendor-value-123\nmore")
    out.skipped("third", "nothing to do")
    assert [(s["step"], s["status"]) for s in out.steps] == [
        ("first", "ok"),
        ("second <redacted>", "failed"),
        ("third", "skipped"),
    ]
    assert all(isinstance(s["seconds"], float) and s["seconds"] >= 0 for s in out.steps)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "-> first" and re.fullmatch(r"   ok \(\d+\.\d\d s\)", lines[1])
    assert lines[2] == "-> second <redacted>"
    assert re.fullmatch(r"   failed after \d+\.\d\d s: it broke: <redacted>", lines[3])
    assert lines[4] == "-- third: skipped (nothing to do)"
    assert "vendor-value-123" not in stream.getvalue()


def test_json_mode_prints_one_document_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    out = Progress("staging", json_mode=True, secrets=("vendor-value-123",))
    with out.step("validate"):
        pass
    doc = {
        "ok": False,
        "environment": "staging",
        "action": "deploy",
        "release": None,
        "previous": None,
        "url": "http://127.0.0.1:8200",
        "health": "unknown",
        "services": {},
        "error": "boom vendor-value-123",
    }
    out.finish(doc, "staging: deploy refused: boom")
    captured = capsys.readouterr()
    parsed = json.loads(captured.out)
    assert set(parsed) == {
        "ok",
        "environment",
        "action",
        "release",
        "previous",
        "url",
        "health",
        "services",
        "steps",
        "error",
        "seconds",
    }
    assert parsed["error"] == "boom <redacted>"
    assert [s["step"] for s in parsed["steps"]] == ["validate"]
    assert "staging: deploy refused" not in captured.out


def test_text_mode_prints_the_final_line_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    out = Progress("staging", stream=io.StringIO(), secrets=("vendor-value-123",))
    out.finish({}, "staging: release R is live at http://127.0.0.1:8200 (healthy) vendor-value-123")
    assert (
        capsys.readouterr().out
        == "staging: release R is live at http://127.0.0.1:8200 (healthy) <redacted>\n"
    )


def test_json_mode_redacts_values_that_json_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    value = 'pa\\ss"w\u00f6rd-1'
    out = Progress("staging", json_mode=True, secrets=(value,))
    out.finish({"error": f"upstream echoed {value}"}, "line")
    assert value not in json.loads(capsys.readouterr().out)["error"]
