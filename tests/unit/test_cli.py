"""`python -m compiler` as a person runs it: explain, diff, schema, check — exit codes and output.

Every command runs in a subprocess, the way users and CI call it; none may print a traceback.
Exit codes: 0 ok, 1 invalid input, 2 usage or internal error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.schema import schema_text

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway.yaml"
GATEWAY_TEXT = GATEWAY.read_text()


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def write_variant(tmp_path: Path, old: str, new: str, name: str = "gateway.yaml") -> Path:
    assert GATEWAY_TEXT.count(old) == 1, f"expected exactly one {old!r} in gateway.yaml"
    path = tmp_path / name
    path.write_text(GATEWAY_TEXT.replace(old, new))
    return path


# ---------------------------------------------------------------------------------------
# explain


def test_explain_text_shows_kept_candidates_in_order_and_why_others_were_dropped() -> None:
    proc = run("explain", "chat", "--env", "production")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(
        "route chat in production: strategy priority, requires [streaming, tools] (declared)\n"
    )
    table, _, dropped = out.partition("\n  dropped:\n")
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [
        ("1", "openai/gpt-4o"),
        ("2", "anthropic/claude-sonnet-4"),
    ]
    assert "gemini" not in table.split("\n\n", 1)[1] and "mock/echo" not in table
    assert [line.split()[:2] for line in dropped.splitlines()] == [
        ["gemini/gemini-2.5-pro", "environment_policy:"],
        ["mock/echo", "environment_policy:"],
    ]
    assert "provider 'gemini' is not in allowed_providers" in dropped
    assert "min_context_window 128,000" in out
    assert "max 3 attempts; first byte within 10s" in out


def test_explain_shows_cache_rates_and_long_prompt_tiers() -> None:
    proc = run("explain", "chat", "--env", "dev")
    assert proc.returncode == 0, proc.stderr
    assert "$3 / $15 (cached $0.3, cache write $3.75, 1h write $6)" in proc.stdout
    assert "$1.25 / $10 (cached $0.125); above 200,000: $2.5 / $15 (cached $0.25)" in proc.stdout
    doc = json.loads(run("explain", "chat", "--env", "dev", "--format", "json").stdout)
    gemini = next(c for c in doc["candidates"] if c["ref"] == "gemini/gemini-2.5-pro")
    assert gemini["price"]["tiers"] == [
        {
            "above_input_tokens": 200000,
            "input": 2.5,
            "output": 15.0,
            "cached_input": 0.25,
            "cache_write": None,
            "cache_write_1h": None,
        }
    ]


def test_explain_json_is_the_same_answer_for_machines() -> None:
    proc = run("explain", "chat", "--env", "production", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["route"] == "chat" and doc["environment"] == "production"
    assert [c["ref"] for c in doc["candidates"]] == ["openai/gpt-4o", "anthropic/claude-sonnet-4"]
    assert doc["candidates"][0]["upstream"] == "gpt-4o-2024-11-20"
    assert doc["candidates"][0]["reference_cost_usd"] == pytest.approx(0.0125)
    assert doc["dropped"] == [
        {
            "ref": "gemini/gemini-2.5-pro",
            "kind": "environment_policy",
            "reason": "provider 'gemini' is not in allowed_providers",
        },
        {
            "ref": "mock/echo",
            "kind": "environment_policy",
            "reason": "provider 'mock' is not in allowed_providers",
        },
    ]


def test_explain_shows_a_candidate_dropped_by_the_cost_cap(tmp_path: Path) -> None:
    config = write_variant(
        tmp_path, "max_cost_per_request_usd: 0.02", "max_cost_per_request_usd: 0.01"
    )
    proc = run("explain", "extract", "--env", "production", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "cost cap $0.01/request" in proc.stdout
    dropped = proc.stdout.partition("\n  dropped:\n")[2]
    line = next(line for line in dropped.splitlines() if "openai/gpt-4o" in line)
    assert line.split(None, 1) == [
        "openai/gpt-4o",
        "cost_cap: a typical request (1,000 input + 1,000 output tokens) costs $0.0125, over the "
        "$0.01 cap",
    ]
    doc = json.loads(
        run(
            "explain", "extract", "--env", "production", "--config", str(config), "--format", "json"
        ).stdout
    )
    assert [c["ref"] for c in doc["candidates"]] == ["openai/gpt-4.1-mini"]
    assert {
        "ref": "openai/gpt-4o",
        "kind": "cost_cap",
        "reason": "a typical request (1,000 input + 1,000 output tokens) costs $0.0125, "
        "over the $0.01 cap",
    } in doc["dropped"]


def test_explain_weighted_route_shows_weights_and_order() -> None:
    proc = run("explain", "assist", "--env", "dev")
    assert proc.returncode == 0
    assert "order: the first pick is random by weight" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if "(weight " in line]
    assert len(rows) == 3
    # the context column lines up however long a candidate's name is
    ends = set()
    for line in rows:
        match = re.search(r"[\d,]{7,}(?=  \$)", line)
        assert match is not None, line
        ends.add(match.end())
    assert len(ends) == 1


def test_explain_unknown_route_suggests_the_right_one() -> None:
    proc = run("explain", "chta", "--env", "production")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "unknown route 'chta'" in proc.stderr and "did you mean 'chat'" in proc.stderr


def test_explain_unknown_environment_suggests_the_right_one() -> None:
    proc = run("explain", "chat", "--env", "prod")
    assert proc.returncode == 2
    assert (
        "unknown environment 'prod'" in proc.stderr and "did you mean 'production'" in proc.stderr
    )


def test_explain_on_an_invalid_config_exits_1(tmp_path: Path) -> None:
    config = write_variant(tmp_path, "    port: 8200\n", "    port: 80\n")
    proc = run("explain", "chat", "--env", "staging", "--config", str(config))
    assert proc.returncode == 1
    assert "E052" in proc.stderr and "fix them first" in proc.stderr


# ---------------------------------------------------------------------------------------
# diff


def test_diff_staging_production_shows_what_promotion_changes() -> None:
    proc = run("diff", "staging", "production")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("18 differences from staging to production:\n")
    for block in (
        "  replicas\n    - staging: 1\n    + production: 2\n",
        "  port\n    - staging: 8200\n    + production: 8300\n",
        "  chat.chain\n    - staging: openai/gpt-4o -> anthropic/claude-sonnet-4 -> "
        "gemini/gemini-2.5-pro\n"
        "    + production: openai/gpt-4o -> anthropic/claude-sonnet-4\n",
        "  embed.chain\n    - staging: openai/text-embedding-3-small -> "
        "gemini/gemini-embedding-001\n    + production: openai/text-embedding-3-small\n",
        "  allowed_providers\n    - staging: anthropic, gemini, openai\n    + production: "
        "anthropic, openai\n",
        "  per_key.requests_per_minute\n    - staging: 120\n    + production: 600\n",
        "  GEMINI_API_KEY\n    - staging: required\n    + production: (absent)\n",
        "  PRODUCTION_REDIS_URL\n    - staging: (absent)\n    + production: required\n",
        "state:\n  keys\n    - staging: sqlite\n    + production: postgres\n"
        "  limits\n    - staging: memory\n    + production: redis\n"
        "  records\n    - staging: sqlite\n    + production: postgres\n",
    ):
        assert block in out
    providers = out.partition("\nproviders:\n")[2].partition("\n\n")[0]
    assert providers.startswith(
        "  gemini\n    - staging: models: gemini-2.0-flash, gemini-2.5-flash, gemini-2.5-pro, "
        "gemini-embedding-001;"
    )
    assert providers.endswith("    + production: (absent)")
    assert "assist.chain" not in out, "routes that resolve the same are not listed"


def test_diff_json_lists_each_changed_key() -> None:
    proc = run("diff", "staging", "production", "--format", "json")
    assert proc.returncode == 0
    changes = {c["key"]: (c["staging"], c["production"]) for c in json.loads(proc.stdout)}
    assert changes["deployment.replicas"] == (1, 2)
    assert changes["deployment.port"] == (8200, 8300)
    assert changes["routes.summarize.chain"] == (
        "openai/gpt-4o-mini -> gemini/gemini-2.0-flash -> anthropic/claude-3-5-haiku",
        "openai/gpt-4o-mini -> anthropic/claude-3-5-haiku",
    )
    assert changes["providers.gemini"][1] == "<absent>"
    assert "deployment.host" not in changes, "both live on the same host"


def test_diff_of_an_environment_with_itself() -> None:
    proc = run("diff", "staging", "staging")
    assert proc.returncode == 0
    assert proc.stdout == "staging and staging resolve to the same routes, providers and limits\n"
    assert json.loads(run("diff", "staging", "staging", "--format", "json").stdout) == []


def test_diff_unknown_environment() -> None:
    proc = run("diff", "staging", "prodution")
    assert proc.returncode == 2
    assert "did you mean 'production'" in proc.stderr


# ---------------------------------------------------------------------------------------
# schema


def test_schema_check_passes_on_the_checked_in_schema() -> None:
    proc = run("schema", "--check")
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout


def test_schema_check_fails_on_a_modified_copy(tmp_path: Path) -> None:
    copy = tmp_path / "gateway.schema.json"
    proc = run("schema", "--out", str(copy))
    assert proc.returncode == 0 and copy.read_text() == schema_text()
    assert run("schema", "--check", "--out", str(copy)).returncode == 0
    doc = json.loads(copy.read_text())
    doc["properties"]["project"]["description"] = "hand-edited"
    copy.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    proc = run("schema", "--check", "--out", str(copy))
    assert proc.returncode == 1
    assert "out of date" in proc.stderr and "python -m compiler schema" in proc.stderr
    missing = run("schema", "--check", "--out", str(tmp_path / "absent.json"))
    assert missing.returncode == 1


# ---------------------------------------------------------------------------------------
# check: exit codes


def test_check_valid_config_exits_0() -> None:
    proc = run("check", "gateway.yaml")
    assert proc.returncode == 0
    assert proc.stdout == "gateway.yaml: ok\n"
    assert run("check").returncode == 0, "gateway.yaml is the default"


def test_check_invalid_config_exits_1(tmp_path: Path) -> None:
    config = write_variant(tmp_path, "    port: 8200\n", "    prot: 8200\n")
    proc = run("check", str(config))
    assert proc.returncode == 1
    assert "error[E010]" in proc.stdout and "did you mean 'port'" in proc.stdout


def test_check_warnings_fail_only_with_strict(tmp_path: Path) -> None:
    config = write_variant(
        tmp_path, "max_cost_per_request_usd: 0.02", "max_cost_per_request_usd: 0.01"
    )
    assert run("check", str(config)).returncode == 0
    assert run("check", str(config), "--strict").returncode == 1


def test_check_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run("check", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "no such file" in proc.stderr


def test_check_bad_flag_exits_2() -> None:
    proc = run("check", "--bogus")
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr
    assert run("check", "--format", "xml").returncode == 2
    assert run("frobnicate").returncode == 2
    assert run().returncode == 2


def test_check_several_files_reports_each_and_exits_with_the_worst(tmp_path: Path) -> None:
    bad = write_variant(tmp_path, "    port: 8200\n", "    prot: 8200\n", name="bad.yaml")
    proc = run("check", "gateway.yaml", str(bad))
    assert proc.returncode == 1
    assert "gateway.yaml: ok\n" in proc.stdout and f"{bad}: 1 error" in proc.stdout
    proc = run("check", "gateway.yaml", str(tmp_path / "nope.yaml"), str(bad))
    assert proc.returncode == 2, "a missing file is a usage error, and the others are still checked"
    assert "gateway.yaml: ok" in proc.stdout and f"{bad}: 1 error" in proc.stdout
    proc = run("check", "gateway.yaml", str(bad), "--format", "json")
    reports = json.loads(proc.stdout)
    assert [r["valid"] for r in reports] == [True, False]


def test_check_json_for_one_file_is_one_document() -> None:
    doc = json.loads(run("check", "--format", "json").stdout)
    assert doc["file"] == "gateway.yaml" and doc["valid"] is True


def test_build_without_environments_is_a_usage_error(tmp_path: Path) -> None:
    proc = run("build", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "--all" in proc.stderr
    proc = run("build", "staging", "--all", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert not (tmp_path / "out").exists()
