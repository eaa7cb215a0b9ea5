"""The README's dev command: `bash scripts/dev.sh` brings the dev gateway up with the mock
provider when no provider keys are set, and the examples it prints work as printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.gateway_env import ROOT, free_port

PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")


@pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "python").exists() and not os.environ.get("CI"),
    reason="needs the bootstrap's .venv (scripts/test.sh creates it; in CI this never skips)",
)
def test_dev_command_serves_the_mock_and_its_examples_work(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_KEYS}
    env.update(SWITCHYARD_DEV_PORT=str(free_port()), SWITCHYARD_DEV_DATA=str(tmp_path / "dev"))
    up = subprocess.run(
        ["bash", "scripts/dev.sh", "--background"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        url = re.search(r"gateway is up: (http://127\.0\.0\.1:\d+)", out)
        key = re.search(r"key:\s+(sy_dev_\S+)", out)
        assert url and key, out
        assert "mock" in out and "openai (no credentials: skipped)" in out
        # The curl example, exactly as printed.
        curl = out[out.index("curl -s") : out.index("}]}'") + len("}]}'")]
        reply = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        doc = json.loads(reply.stdout)
        assert doc["choices"][0]["message"]["content"] == "echo: Hello!"
        # The openai SDK example, exactly as printed.
        snippet = out[out.index(".venv/bin/python - <<'PY'") : out.index("\nPY\n") + 4]
        ran = subprocess.run(
            ["bash", "-c", snippet], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "echo: Hello!"
        # A second run is refused while the first is up, with the way out.
        again = subprocess.run(
            ["bash", "scripts/dev.sh", "--background"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 1 and "--stop" in again.stderr
    finally:
        stop = subprocess.run(
            ["bash", "scripts/dev.sh", "--stop"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "stopped the dev gateway" in stop.stdout
