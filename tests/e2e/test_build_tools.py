"""The compiled artifacts against the real tools: Docker Compose v2 (`docker compose config`) and
HAProxy (`haproxy -c`).

Split from tests/unit/test_build.py, whose renderers and fixtures it uses. Without the tools the
tests are skipped locally and fail in CI (when the CI variable is set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler import cli
from compiler.models import GatewayConfig
from compiler.proxy import SLOTS, gateway_services
from compiler.render import render_environment
from tests.unit.test_build import (
    CONFIG,
    ENVS,
    FIXED_INPUTS,
    GATEWAY,
    GATEWAY_TEXT,
    PROXY_CONFIGS,
    VALID_EXAMPLES,
    _all_configs,
    _changed_config,
    _example_envs,
    load_config,
    render,
    replace_once,
)

# ---------------------------------------------------------------------------------------
# compose with the real Docker Compose v2 binary


def _compose_binary() -> list[str] | None:
    def is_v2(cmd: list[str]) -> bool:
        try:
            proc = subprocess.run(
                [*cmd, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return proc.returncode == 0 and proc.stdout.strip().lstrip("v").startswith("2.")

    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    candidates.append(["/usr/local/lib/docker/cli-plugins/docker-compose"])
    return next((cmd for cmd in candidates if is_v2(cmd)), None)


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    cmd = _compose_binary()
    if cmd is None:
        message = (
            "Docker Compose v2 not found (docker compose, docker-compose v2 or the CLI plugin)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return cmd


def _compose(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    # The host's COMPOSE_* variables (COMPOSE_PROJECT_NAME, COMPOSE_FILE, ...) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env)


def _write(out: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return out / "compose.yaml"


@pytest.mark.docker
@pytest.mark.parametrize("env", ENVS)
def test_compose_config_accepts_every_compiled_file(
    compose_cmd: list[str], tmp_path: Path, env: str
) -> None:
    compose_file = _write(tmp_path / env, render(GATEWAY_TEXT, env))
    proc = _compose(compose_cmd, "-f", str(compose_file), "config", "-q")
    assert proc.returncode == 0, proc.stderr
    proc = _compose(compose_cmd, "-f", str(compose_file), "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    assert resolved["name"] == f"{CONFIG.project}-{env}"
    for svc in resolved["services"].values():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1"


@pytest.mark.docker
@pytest.mark.skipif(not VALID_EXAMPLES, reason="no configs in schema/examples/valid/")
def test_compose_config_accepts_the_valid_examples(compose_cmd: list[str], tmp_path: Path) -> None:
    for example, config, env in _example_envs():
        files = render_environment(
            config, env, FIXED_INPUTS, source_name=example, source_sha256="0" * 64
        )
        compose_file = _write(tmp_path / example / env, files)
        proc = _compose(compose_cmd, "-f", str(compose_file), "config", "-q")
        assert proc.returncode == 0, f"{example} ({env}): {proc.stderr}"


def _services(env: str) -> list[str]:
    replicas = CONFIG.environments[env].replicas
    return ["proxy", *(name for slot in SLOTS for name in gateway_services(replicas, slot))]


def _config_hashes(compose_cmd: list[str], out: Path, env: str) -> dict[str, str]:
    """`docker compose config --hash` of every service: what compose compares to recreate one."""
    proc = _compose(
        compose_cmd,
        "-f",
        str(out / env / "compose.yaml"),
        "config",
        "--hash",
        ",".join(_services(env)),
    )
    assert proc.returncode == 0, proc.stderr
    hashes = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert sorted(hashes) == sorted(_services(env))
    assert all(len(digest) == 64 for digest in hashes.values())
    return hashes


@pytest.mark.docker
def test_compose_config_hash_tracks_the_runtime_config(
    compose_cmd: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "build"
    build = ["build", "--all", "--out", str(out), "-q", "--config"]
    assert cli.main([*build, str(GATEWAY)]) == 0
    first = {env: _config_hashes(compose_cmd, out, env) for env in ENVS}
    assert cli.main([*build, str(GATEWAY)]) == 0
    assert {env: _config_hashes(compose_cmd, out, env) for env in ENVS} == first
    assert cli.main([*build, str(_changed_config(tmp_path))]) == 0
    changed = {env: _config_hashes(compose_cmd, out, env) for env in ENVS}
    for env in ENVS:
        for service, digest in first[env].items():
            if service == "proxy":
                assert changed[env][service] == digest, (
                    "a routing change must not recreate the proxy"
                )
            else:
                assert changed[env][service] != digest, f"a routing change must recreate {service}"


# ---------------------------------------------------------------------------------------
# haproxy.cfg with the real HAProxy binary (`haproxy -c`)


@pytest.fixture(scope="module")
def haproxy_cmd() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "HAProxy not found (apt-get install haproxy)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


# Settings far from the defaults: fractional timeouts (rendered in ms), the largest head.
PROXY_EXTREMES = (
    "  workers: 1\n",
    "  workers: 1\n  proxy:\n    request_head_timeout_s: 0.25\n"
    "    request_head_max_bytes: 1048576\n    request_body_timeout_s: 3600\n"
    "    client_idle_timeout_s: 1.5\n    keep_alive_timeout_s: 600\n    max_connections: 16\n",
)


def _haproxy_configs() -> Iterator[tuple[str, GatewayConfig, str]]:
    yield from _all_configs()
    extremes = load_config(replace_once(GATEWAY_TEXT, *PROXY_EXTREMES))
    for env in ENVS:
        yield "proxy-extremes", extremes, env


def _haproxy_check(haproxy: str, path: Path) -> list[str]:
    """Run `haproxy -c -f path`; its warnings other than unresolved gateway names.

    The gateways' names resolve only on the environment's Docker network (`init-addr
    libc,none` starts such a server disabled), so outside it each server earns one warning.
    """
    proc = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Configuration file is valid" in output, output
    return [
        line
        for line in output.splitlines()
        if ("[WARNING]" in line or "[ALERT]" in line)
        and "could not resolve address 'gateway-" not in line
    ]


@pytest.mark.parametrize(
    ("source", "config", "env"),
    list(_haproxy_configs()),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_haproxy_accepts_every_proxy_config(
    haproxy_cmd: str, tmp_path: Path, source: str, config: GatewayConfig, env: str
) -> None:
    files = render_environment(config, env, FIXED_INPUTS, source_name=source)
    for name in PROXY_CONFIGS:
        path = tmp_path / name.replace("/", "-")
        path.write_text(files[name])
        assert _haproxy_check(haproxy_cmd, path) == [], f"{source} ({env}) {name}"
