"""`python -m runtime keys ...` and `requests ...`: what an operator types and sees.

Most tests drive `runtime.cli.main` in process; one runs the real
`python -m runtime keys create` in a subprocess.
Exit codes: 0 ok, 1 refused or invalid input, 2 usage.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import cli
from runtime.keys import Authenticator, parse_key
from runtime.records import RecordWriter
from tests.unit.test_records import make_record

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path: Path) -> str:
    return str(tmp_path / "data")


def create(capsys: pytest.CaptureFixture[str], data: str, *extra: str) -> str:
    code, out, err = run(
        capsys,
        "keys",
        "create",
        "--env",
        "dev",
        "--org",
        "acme",
        "--name",
        "ci",
        "--data-dir",
        data,
        *extra,
    )
    assert code == 0, err
    return out.strip()


# --- keys ----------------------------------------------------------------------------------


def test_create_prints_the_key_alone_on_stdout_and_details_on_stderr(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    code, out, err = run(
        capsys,
        "keys",
        "create",
        "--env",
        "dev",
        "--org",
        "acme",
        "--name",
        "ci",
        "--data-dir",
        data,
    )
    assert code == 0
    key = out.strip()
    assert out == key + "\n"
    parsed = parse_key(key)
    assert parsed is not None and parsed[0] == "dev"
    assert parsed[1] in err and "'acme'" in err and "expires never" in err
    assert "only time the key is shown" in err
    assert key not in err


def test_created_key_verifies_against_the_store(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    key = create(capsys, data)
    auth = Authenticator(Path(data) / "keys.db", "dev", "sy_dev_")
    try:
        assert auth.verify(key).org == "acme"
    finally:
        auth.stop()


@pytest.mark.parametrize(
    ("expires", "seconds"), [("30d", 30 * 86400), ("12h", 12 * 3600), ("2h", 7200)]
)
def test_expiry_as_a_duration(
    capsys: pytest.CaptureFixture[str], data: str, expires: str, seconds: int
) -> None:
    before = time.time()
    create(capsys, data, "--expires", expires)
    _, out, _ = run(capsys, "keys", "list", "--env", "dev", "--data-dir", data, "--json")
    (item,) = json.loads(out)
    assert before + seconds <= item["expires_at"] <= time.time() + seconds


def test_expiry_as_a_date_is_its_first_second_utc(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    create(capsys, data, "--expires", "2999-01-31")
    _, out, _ = run(capsys, "keys", "list", "--env", "dev", "--data-dir", data)
    assert "2999-01-31 00:00:00Z" in out


@pytest.mark.parametrize("expires", ["2001-01-01", "soon", "-3d", "0d"])
def test_an_unusable_expiry_is_refused(
    capsys: pytest.CaptureFixture[str], data: str, expires: str
) -> None:
    code, out, err = run(
        capsys,
        "keys",
        "create",
        "--env",
        "dev",
        "--org",
        "acme",
        "--name",
        "ci",
        "--data-dir",
        data,
        f"--expires={expires}",
    )
    assert code == 1 and out == ""
    assert err.startswith("error: --expires")


def test_list_shows_id_org_name_and_status(capsys: pytest.CaptureFixture[str], data: str) -> None:
    first = parse_key(create(capsys, data))
    second = parse_key(create(capsys, data))
    assert first and second
    run(capsys, "keys", "revoke", "--env", "dev", "--data-dir", data, first[1])
    code, out, _ = run(capsys, "keys", "list", "--env", "dev", "--data-dir", data)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "org", "name", "created", "expires", "status"]
    by_id = {line.split()[0]: line.split() for line in lines[1:]}
    assert by_id[first[1]][-1] == "revoked"
    assert by_id[second[1]][-1] == "active"
    assert first[2] not in out and second[2] not in out  # never a secret


def test_rotation_is_documented_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "--help")
    assert code == 0
    assert "Rotation" in out and "both keys are" in out


def test_revoke_twice_says_already_revoked(capsys: pytest.CaptureFixture[str], data: str) -> None:
    key_id = (parse_key(create(capsys, data)) or ("", "", ""))[1]
    code, out, _ = run(capsys, "keys", "revoke", "--env", "dev", "--data-dir", data, key_id)
    assert code == 0 and out.startswith(f"revoked key {key_id}")
    code, out, _ = run(capsys, "keys", "revoke", "--env", "dev", "--data-dir", data, key_id)
    assert code == 0 and out.startswith(f"key {key_id} was already revoked at ")


def test_revoke_unknown_key_id_is_refused(capsys: pytest.CaptureFixture[str], data: str) -> None:
    create(capsys, data)
    code, _, err = run(capsys, "keys", "revoke", "--env", "dev", "--data-dir", data, "nosuchkey000")
    assert code == 1 and "no key with id 'nosuchkey000'" in err


def test_revoke_given_a_full_key_refuses_without_echoing_it(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    key = create(capsys, data)
    code, out, err = run(capsys, "keys", "revoke", "--env", "dev", "--data-dir", data, key)
    assert code == 1 and "key id" in err
    assert key not in out + err


def test_a_store_of_another_environment_is_refused(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    create(capsys, data)
    code, out, err = run(
        capsys,
        "keys",
        "create",
        "--env",
        "prod",
        "--org",
        "acme",
        "--name",
        "ci",
        "--data-dir",
        data,
    )
    assert code == 1 and out == ""
    assert "belongs to environment 'dev', not 'prod'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "create", "--env", "Dev_1", "--org", "acme", "--name", "ci"),
        ("keys", "create", "--env", "dev", "--org", "Acme!", "--name", "ci"),
        ("keys", "create", "--env", "dev", "--name", "ci"),
        ("keys", "list"),
        ("requests", "--env", "dev", "--since", "yesterday"),
        ("requests", "--env", "dev", "--by", "colour"),
        ("requests", "--env", "dev", "--last", "0"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], data: str, argv: tuple[str, ...]
) -> None:
    code, out, _ = run(capsys, *argv, "--data-dir", data)
    assert code == 2 and out == ""


# --- requests ------------------------------------------------------------------------------


def seed(data: str) -> None:
    now = time.time()
    w = RecordWriter(
        Path(data) / "requests.db", batch_size=50, flush_interval_ms=10, retention_days=30
    )
    w.start()
    w.submit(make_record(1, ts=now - 7200, latency_ms=100.0, ttfb_ms=10.0, cost_usd=0.5))
    w.submit(make_record(2, ts=now - 60, latency_ms=200.0, ttfb_ms=20.0, cost_usd=0.25))
    w.submit(
        make_record(
            3, ts=now - 30, provider="anthropic", upstream_model="claude-3-5-haiku", status=429,
            error_code="upstream_rate_limited", latency_ms=50.0, ttfb_ms=None, cost_usd=None,
            input_tokens=7, output_tokens=None, usage_estimated=True, fell_back=True,
            attempts=[
                {"provider": "openai", "model": "gpt-4o-mini", "outcome": "timeout",
                 "latency_ms": 30.0},
                {"provider": "anthropic", "model": "claude-3-5-haiku", "outcome": "rate_limited",
                 "latency_ms": 20.0},
            ],
        )
    )  # fmt: skip
    w.close()


def test_requests_without_a_database_says_so(capsys: pytest.CaptureFixture[str], data: str) -> None:
    code, out, err = run(capsys, "requests", "--env", "dev", "--data-dir", data)
    assert code == 1 and out == ""
    assert f"no requests recorded yet in {data}; is --data-dir right?" in err


def test_requests_lists_the_last_records(capsys: pytest.CaptureFixture[str], data: str) -> None:
    seed(data)
    code, out, _ = run(capsys, "requests", "--env", "dev", "--data-dir", data)
    assert code == 0
    header, *rows = out.splitlines()
    columns = (
        "time", "request id", "key", "route", "provider", "upstream model", "status",
        "error", "latency ms", "ttfb ms", "in", "out", "cost usd", "fell back", "attempts",
    )  # fmt: skip
    for column in columns:
        assert column in header
    assert [re.search(r"req-\d", row).group() for row in rows] == ["req-1", "req-2", "req-3"]  # type: ignore[union-attr]
    failed = rows[2]
    assert "upstream_rate_limited" in failed and "429" in failed and "~7" in failed
    assert "openai:timeout,anthropic:rate_limited" in failed
    assert "0.500000" in rows[0]


def test_requests_last_and_since(capsys: pytest.CaptureFixture[str], data: str) -> None:
    seed(data)
    _, out, _ = run(capsys, "requests", "--env", "dev", "--data-dir", data, "--last", "1", "--json")
    assert [r["request_id"] for r in json.loads(out)] == ["req-3"]
    _, out, _ = run(
        capsys, "requests", "--env", "dev", "--data-dir", data, "--since", "1h", "--json"
    )
    assert [r["request_id"] for r in json.loads(out)] == ["req-2", "req-3"]


def test_requests_json_keeps_unknown_cost_null(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    seed(data)
    _, out, _ = run(capsys, "requests", "--env", "dev", "--data-dir", data, "--json")
    records = {r["request_id"]: r for r in json.loads(out)}
    assert records["req-3"]["cost_usd"] is None
    assert records["req-3"]["attempts"][0]["outcome"] == "timeout"


def test_requests_by_model_groups_with_error_rate_percentiles_and_cost(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    seed(data)
    code, out, _ = run(
        capsys, "requests", "--env", "dev", "--data-dir", data, "--by", "model", "--json"
    )
    assert code == 0
    groups = {g["model"]: g for g in json.loads(out)}
    openai = groups["openai/gpt-4o-mini"]
    assert (openai["count"], openai["errors"], openai["error_rate"]) == (2, 0, 0.0)
    assert openai["latency_p50_ms"] == 150.0 and openai["latency_p95_ms"] == pytest.approx(195.0)
    assert openai["cost_usd"] == 0.75 and openai["cost_unknown"] == 0
    anthropic = groups["anthropic/claude-3-5-haiku"]
    assert (anthropic["errors"], anthropic["error_rate"]) == (1, 1.0)
    assert anthropic["cost_usd"] is None and anthropic["cost_unknown"] == 1
    assert anthropic["ttfb_p50_ms"] is None


def test_requests_by_provider_table_notes_unknown_cost(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    seed(data)
    code, out, _ = run(capsys, "requests", "--env", "dev", "--data-dir", data, "--by", "provider")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["provider", "count", "errors", "error"]
    assert lines[1].split()[:4] == ["openai", "2", "0", "0.0"]
    assert lines[2].split()[:4] == ["anthropic", "1", "1", "100.0"]
    assert "- (+1 unknown)" in lines[2]
    assert any(line.startswith("cost usd: sum of the known costs") for line in lines)


@pytest.mark.parametrize(
    ("by", "expected"),
    [("status", {"200", "429"}), ("key", {"abcdefghijkl"}), ("org", {"acme"}), ("route", {"chat"})],
)
def test_requests_by_other_dimensions(
    capsys: pytest.CaptureFixture[str], data: str, by: str, expected: set[str]
) -> None:
    seed(data)
    _, out, _ = run(capsys, "requests", "--env", "dev", "--data-dir", data, "--by", by, "--json")
    assert {g[by] for g in json.loads(out)} == expected


# --- the real command ----------------------------------------------------------------------


def test_python_m_runtime_keys_create_in_a_subprocess(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "keys", "create", "--env", "dev", "--org", "acme",
         "--name", "ci", "--data-dir", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    assert proc.stdout == key + "\n" and key.startswith("sy_dev_")
    assert "Traceback" not in proc.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "runtime", "keys", "list", "--env", "dev", "--data-dir", str(data),
         "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [k["id"] for k in json.loads(listed.stdout)] == [key.split("_")[2]]
