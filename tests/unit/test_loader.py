"""Hostile and odd input: `check` refuses it with a clear message, fast, and never crashes.

The CLI tests run `python -m compiler check FILE` in a subprocess, as a user would; the unit
tests below them pin the loader's YAML 1.2 reading and its position index.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.loader import MAX_BYTES, MAX_DEPTH, load, resolve_scalar
from compiler.validate import check_bytes

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = (ROOT / "schema" / "examples" / "valid" / "minimal.yaml").read_bytes()
DUPLICATE = ROOT / "schema" / "examples" / "invalid" / "002-duplicate-key.yaml"

BILLION_LAUGHS = (
    'lol0: &lol0 "lol"\n'
    + "".join(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 9) + "]\n" for i in range(1, 10))
).encode()


def check_file(
    tmp_path: Path, content: bytes, *args: str, name: str = "gateway.yaml"
) -> tuple[subprocess.CompletedProcess[str], float]:
    target = tmp_path / name
    target.write_bytes(content)
    env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_DEBUG"}
    env["PYTHONIOENCODING"] = "utf-8"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "compiler", "check", str(target), "--format", "json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
    )
    return result, time.monotonic() - start


def refused(tmp_path: Path, content: bytes, *, limit_s: float = 10.0) -> list[dict[str, object]]:
    """Run check on `content`; assert a clean refusal and return the diagnostics."""
    result, elapsed = check_file(tmp_path, content)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1, result.stderr
    assert elapsed < limit_s
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    diagnostics: list[dict[str, object]] = doc["diagnostics"]
    assert diagnostics
    for d in diagnostics:
        assert d["severity"] == "error" or d["severity"] == "warning"
        assert isinstance(d["line"], int) and d["line"] >= 1
        assert isinstance(d["column"], int) and d["column"] >= 1
        assert isinstance(d["message"], str) and len(d["message"]) > 10
    return diagnostics


def codes(diagnostics: list[dict[str, object]]) -> set[object]:
    return {d["code"] for d in diagnostics}


# ---------------------------------------------------------------------------------------
# hostile input through the CLI


def test_empty_file(tmp_path: Path) -> None:
    [d] = refused(tmp_path, b"")
    assert (d["code"], d["message"]) == ("E006", "the file is empty")


def test_only_comments_and_blank_lines(tmp_path: Path) -> None:
    [d] = refused(tmp_path, b"# gateway.yaml\n\n   # nothing here yet\n")
    assert (d["code"], d["message"]) == ("E006", "the file is empty")


def test_binary_garbage(tmp_path: Path) -> None:
    garbage = random.Random(20240601).randbytes(64 * 1024)
    diagnostics = refused(tmp_path, garbage)
    assert codes(diagnostics) == {"E007"}
    assert "binary" in str(diagnostics[0]["message"])


def test_binary_garbage_without_nul_bytes(tmp_path: Path) -> None:
    garbage = bytes(b for b in random.Random(7).randbytes(64 * 1024) if b)
    [d] = refused(tmp_path, garbage)
    assert d["code"] == "E007"
    assert "not valid UTF-8" in str(d["message"])


def test_invalid_utf8_names_the_byte_and_its_position(tmp_path: Path) -> None:
    [d] = refused(tmp_path, b"version: 1\nproject: caf\xe9\n")
    assert (d["code"], d["line"], d["column"]) == ("E007", 2, 13)
    assert "0xe9" in str(d["message"])


def test_utf16_is_named(tmp_path: Path) -> None:
    [d] = refused(tmp_path, MINIMAL.decode().encode("utf-16"))
    assert d["code"] == "E007"
    assert "UTF-16" in str(d["message"])


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    in_process = check_bytes(BILLION_LAUGHS)
    assert time.monotonic() - start < 2.0
    assert not in_process.ok
    diagnostics = refused(tmp_path, BILLION_LAUGHS, limit_s=2.0 + 3.0)  # plus interpreter start
    assert "E003" in codes(diagnostics)
    aliases = [d for d in diagnostics if "alias" in str(d["message"])]
    assert len(aliases) == 81  # every alias named, none expanded
    assert {(d["line"], d["column"]) for d in aliases if d["path"] == "lol1[0]"} == {(2, 14)}


def test_top_level_list(tmp_path: Path) -> None:
    [d] = refused(tmp_path, b"- version: 1\n- project: acme\n")
    assert d["code"] == "E006"
    assert d["message"] == "the top level must be a mapping of sections, not a list"


def test_top_level_scalar(tmp_path: Path) -> None:
    [d] = refused(tmp_path, b"gateway\n")
    assert d["code"] == "E006"
    assert (
        d["message"]
        == "the top level must be a mapping of sections, not a single value ('gateway')"
    )


@pytest.mark.parametrize("content", [b"~\n", b"---\n", b"null\n", b"--- # nothing\n...\n"])
def test_an_empty_document_is_not_a_valid_config(tmp_path: Path, content: bytes) -> None:
    [d] = refused(tmp_path, content)
    assert d["code"] == "E006"
    assert "not an empty document" in str(d["message"])


def test_ten_megabytes_is_refused_without_parsing(tmp_path: Path) -> None:
    big = b"description: " + b"x" * (10 * 1024 * 1024) + b"\n"
    assert len(big) > MAX_BYTES
    [d] = refused(tmp_path, big, limit_s=5.0)
    assert d["code"] == "E005"
    assert "10.0 MiB" in str(d["message"])


def test_many_unknown_keys_are_reported_in_bounded_time_and_output(tmp_path: Path) -> None:
    many = b"".join(b"key%d: value\n" % i for i in range(50_000))
    diagnostics = refused(tmp_path, many, limit_s=10.0)
    assert len(diagnostics) <= 250
    assert any(
        d["code"] == "E005" and "too many problems" in str(d["message"]) for d in diagnostics
    )


@pytest.mark.parametrize("style", ["block", "flow"])
def test_200_deep_nesting_is_refused(tmp_path: Path, style: str) -> None:
    if style == "block":
        deep = "".join(" " * (2 * i) + "a:\n" for i in range(200)) + " " * 400 + "a: 1\n"
    else:
        deep = "a: " + "[" * 200 + "]" * 200 + "\n"
    [d] = refused(tmp_path, deep.encode())
    assert d["code"] == "E005"
    assert f"deeper than {MAX_DEPTH}" in str(d["message"])


def test_multiple_documents(tmp_path: Path) -> None:
    [d] = refused(tmp_path, MINIMAL + b"---\nversion: 1\n")
    assert d["code"] == "E001"
    assert "more than one YAML document" in str(d["message"])
    assert d["line"] == MINIMAL.count(b"\n") + 1


def test_nul_byte_near_the_start_means_binary(tmp_path: Path) -> None:
    [d] = refused(tmp_path, MINIMAL.replace(b"project:", b"\x00project:"))
    assert d["code"] == "E007"


def test_nul_byte_late_in_a_text_file_is_located(tmp_path: Path) -> None:
    padding = b"# " + b"-" * 9000 + b"\n"
    [d] = refused(tmp_path, padding + b"version: 1\x00\n")
    assert (d["code"], d["line"], d["column"]) == ("E001", 2, 11)
    assert "U+0000" in str(d["message"])


def test_crlf_line_endings_are_fine(tmp_path: Path) -> None:
    result, _ = check_file(tmp_path, MINIMAL.replace(b"\n", b"\r\n"))
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["diagnostics"] == []


def test_crlf_keeps_positions(tmp_path: Path) -> None:
    lf = refused(tmp_path, DUPLICATE.read_bytes())
    crlf = refused(tmp_path, DUPLICATE.read_bytes().replace(b"\n", b"\r\n"))
    assert [(d["code"], d["line"], d["column"]) for d in crlf] == [("E002", 25, 3)]
    assert crlf == lf


def test_utf8_bom_is_fine_and_keeps_positions(tmp_path: Path) -> None:
    result, _ = check_file(tmp_path, b"\xef\xbb\xbf" + MINIMAL)
    assert result.returncode == 0, result.stdout
    bom = refused(tmp_path, b"\xef\xbb\xbf" + DUPLICATE.read_bytes())
    assert [(d["code"], d["line"], d["column"]) for d in bom] == [("E002", 25, 3)]


def test_tab_indentation_gets_the_tab_hint(tmp_path: Path) -> None:
    [d] = refused(tmp_path, b"version: 1\nproviders:\n\tmock: {}\n")
    assert (d["code"], d["line"], d["column"]) == ("E001", 3, 1)
    assert "tab" in str(d["hint"])


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-m", "compiler", "check", str(tmp_path / "nope.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------
# compiler.loader: YAML 1.2 scalars


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("on", "on"),
        ("off", "off"),
        ("yes", "yes"),
        ("no", "no"),
        ("y", "y"),
        ("n", "n"),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("0x1F", 31),
        ("0o17", 15),
        ("017", 17),
        ("-42", -42),
        ("+7", 7),
        ("1e3", 1000.0),
        ("1.5", 1.5),
        ("-.5", -0.5),
        (".inf", float("inf")),
        ("-.Inf", float("-inf")),
        ("1_000", "1_000"),
        ("0b101", "0b101"),
        ("12:30", "12:30"),
        ("2024-01-01", "2024-01-01"),
        ("openai/gpt-4o", "openai/gpt-4o"),
    ],
)
def test_yaml_1_2_core_scalars(text: str, value: object) -> None:
    got = resolve_scalar(text)
    assert got == value
    assert type(got) is type(value)


def test_nan_is_a_float() -> None:
    got = resolve_scalar(".nan")
    assert isinstance(got, float) and got != got


def test_the_norway_problem_keys_and_values_stay_strings() -> None:
    loaded = load("on: yes\nno: off\ncountry: NO\nquoted: '8080'\nport: 8080\n")
    assert loaded.data == {
        "on": "yes",
        "no": "off",
        "country": "NO",
        "quoted": "8080",
        "port": 8080,
    }
    assert loaded.diagnostics == []


def test_numbers_as_keys_stay_strings() -> None:
    assert load("8080: a\n1.5: b\n").data == {"8080": "a", "1.5": "b"}


# ---------------------------------------------------------------------------------------
# compiler.loader: positions


def test_key_and_value_positions() -> None:
    loaded = load("version: 1\nroutes:\n  chat:\n    candidates: [mock/echo, other/x]\n")
    assert loaded.keys[("routes",)] == (2, 1)
    assert loaded.keys[("routes", "chat")] == (3, 3)
    assert loaded.keys[("routes", "chat", "candidates")] == (4, 5)
    assert loaded.values[("version",)] == (1, 10)
    assert loaded.values[("routes", "chat", "candidates")] == (4, 17)
    assert loaded.values[("routes", "chat", "candidates", 1)] == (4, 29)


def test_position_walks_up_to_the_closest_known_parent() -> None:
    loaded = load("routes:\n  chat:\n    candidates: []\n")
    assert loaded.position(("routes", "chat", "strategy")) == (3, 5)
    assert loaded.position(("routes", "chat"), at_key=True) == (2, 3)
    assert loaded.position(("nothing", "here")) == (1, 1)


def test_duplicate_key_is_reported_at_the_second_occurrence() -> None:
    loaded = load("project: a\nroutes:\n  chat: {}\n  other: {}\n  chat: {x: 1}\n")
    [d] = loaded.diagnostics
    assert (d.code, d.path, d.line, d.column) == ("E002", ("routes", "chat"), 5, 3)
    assert "first defined on line 3" in d.message
    assert loaded.data["routes"]["chat"] == {}  # the first one stands; the second is refused


def test_duplicate_key_in_a_flow_mapping() -> None:
    [d] = load("a: {k: 1, k: 2}\n").diagnostics
    assert (d.code, d.line, d.column) == ("E002", 1, 11)


def test_anchor_alias_and_tag_are_located_and_not_expanded() -> None:
    loaded = load("a: &x [1, 2]\nb: *x\nc: !!str 5\nd:\n  <<: *x\n")
    found = sorted((d.code, d.line, d.column, d.message) for d in loaded.diagnostics)
    assert found == [
        ("E003", 1, 4, "YAML anchor '&x' is not allowed"),
        ("E003", 2, 4, "YAML alias '*x' is not allowed"),
        ("E003", 5, 7, "YAML merge '<<: *x' is not allowed"),
        ("E004", 3, 4, "YAML tag '!!str' is not allowed"),
    ]
    assert loaded.data["b"] is None


def test_python_tags_are_named_in_full_and_never_constructed() -> None:
    loaded = load("a: !!python/object/apply:os.system [echo hi]\n")
    [d] = loaded.diagnostics
    assert d.code == "E004"
    assert "'!!python/object/apply:os.system'" in d.message
    assert loaded.data == {"a": ["echo hi"]}  # a plain list: nothing was constructed


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("a: [x, y\n\nb: 1\n", 1, 4, "not closed"),
        ("a: {x: 1\nb: 1\n", 1, 4, "not closed"),
        ('a: "open\nb: 1\n', 1, 4, "never closed"),
        ("a: Note: hi\n", 1, 8, "':'"),
        ("a:\n    b: 1\n  c: 2\n", 3, 3, "line up"),
        ("a: @x\n", 1, 4, "'@'"),
    ],
)
def test_syntax_errors_point_at_the_mistake(text: str, line: int, column: int, words: str) -> None:
    [d] = load(text).diagnostics
    assert (d.code, d.line, d.column) == ("E001", line, column)
    assert words in d.message
    assert d.hint


def test_str_input_has_the_same_size_limit() -> None:
    [d] = load("a: " + "x" * (MAX_BYTES + 1)).diagnostics
    assert d.code == "E005"


# ---------------------------------------------------------------------------------------
# property: no input makes check_bytes raise

_FRAGMENTS = [
    "version: 1\n",
    "project: acme\n",
    "providers:\n",
    "  mock:\n",
    "    adapter: mock\n",
    "    models:\n",
    "      echo: {context_window: 8192}\n",
    "routes:\n",
    "  chat:\n",
    "    candidates: [mock/echo]\n",
    "environments:\n",
    "  dev: {target: local, port: 8080}\n",
    "- ",
    ": ",
    "&a ",
    "*a ",
    "!!str ",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    '"',
    "#",
    "\t",
    "\n",
    "  ",
    "---\n",
    "...\n",
    "<<: *a\n",
    "%YAML 1.2\n",
    "|\n",
    ">-\n",
    "\\",
    "\x00",
    "\ufeff",
    "é",
    "sk-ant-api03-FAKE-example-key-not-real",
    "0x1F",
    ".inf",
    "~",
    "on",
    "no",
]

if importlib.util.find_spec("hypothesis") is None:

    def test_property_tests_need_hypothesis() -> None:
        pytest.skip("hypothesis is not installed: pip install -e '.[dev]'")

else:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40))
    def test_yamlish_text_never_raises(parts: list[str]) -> None:
        text = "".join(parts)
        for raw in (text, text.encode("utf-8")):
            result = check_bytes(raw)
            for d in result.diagnostics:
                assert d.line >= 1 and d.column >= 1

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.binary(max_size=512))
    def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
        check_bytes(raw)

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.data())
    def test_mutated_valid_configs_never_raise(data: st.DataObject) -> None:
        lines = MINIMAL.decode().splitlines(keepends=True)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(lines) - 1))
            action = data.draw(st.sampled_from(["drop", "dup", "indent", "dedent", "fragment"]))
            if action == "drop" and len(lines) > 1:
                del lines[i]
            elif action == "dup":
                lines.insert(i, lines[i])
            elif action == "indent":
                lines[i] = "  " + lines[i]
            elif action == "dedent":
                lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i]
            else:
                lines.insert(i, data.draw(st.sampled_from(_FRAGMENTS)))
        check_bytes("".join(lines))
