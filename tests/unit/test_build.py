"""The compiled artifacts: golden files, determinism, secrets, atomic writes, compose, manifest.

Golden files live in `tests/golden/<env>/` and are rendered from the repository's
`gateway.yaml` with FIXED image inputs and a fixed source hash, so they change only when the
compiler's output changes (not when runtime code does). After an intended change, regenerate
them and review the diff by eye — they are the product's output:

    SWITCHYARD_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_build.py

The tests marked `docker` run the real Docker Compose v2 binary (`docker compose config`).
Without it they are skipped locally and fail in CI (when the CI variable is set). The same
holds for the HAProxy binary, which checks every compiled proxy config (`haproxy -c`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler import cli
from compiler.canonical import canonical_json, sha256
from compiler.models import GatewayConfig
from compiler.proxy import CONFIG_DIR, HOST_CONFIG_DIR, LISTEN_PORT, SLOTS, gateway_services
from compiler.render import (
    CONFIG_HASH_LABEL,
    CONTAINER_PORT,
    REPLICA_LABEL,
    SLOT_LABEL,
    ImageInputs,
    render_environment,
)
from compiler.validate import check_bytes

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway.yaml"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VALID_EXAMPLES = sorted((ROOT / "schema" / "examples" / "valid").glob("*.yaml"))
ARTIFACTS = (
    "runtime.json",
    "compose.yaml",
    "Dockerfile",
    "manifest.json",
    "proxy/Dockerfile",
    "proxy/haproxy-a.cfg",
    "proxy/haproxy-b.cfg",
)
PROXY_CONFIGS = ("proxy/haproxy-a.cfg", "proxy/haproxy-b.cfg")
FIXED_INPUTS = ImageInputs(runtime_digest="0" * 64, requirements="fastapi==0\n")
MANAGED_BY = "dev.switchyard.managed-by"


def load_config(text: str) -> GatewayConfig:
    result = check_bytes(text.encode())
    assert result.ok and result.config is not None, [d.message for d in result.diagnostics]
    return result.config


def render(
    text: str, env: str, inputs: ImageInputs = FIXED_INPUTS, source_sha256: str = "0" * 64
) -> dict[str, str]:
    return render_environment(
        load_config(text), env, inputs, source_name="gateway.yaml", source_sha256=source_sha256
    )


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected exactly one {old!r} in gateway.yaml"
    return text.replace(old, new)


GATEWAY_TEXT = GATEWAY.read_text()
CONFIG = load_config(GATEWAY_TEXT)
ENVS = list(CONFIG.environments)
# A routing change: chat's first two candidates swap places.
ROUTING_CHANGE = (
    "      - openai/gpt-4o\n      - anthropic/claude-sonnet-4\n      - gemini/gemini-2.5-pro\n",
    "      - anthropic/claude-sonnet-4\n      - openai/gpt-4o\n      - gemini/gemini-2.5-pro\n",
)


def _example_envs() -> Iterator[tuple[str, GatewayConfig, str]]:
    for path in VALID_EXAMPLES:
        config = load_config(path.read_text())
        for env in config.environments:
            yield path.name, config, env


def run_compiler(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under root with its bytes (None for directories) and mtime."""
    return {
        p.relative_to(root).as_posix(): (
            None if p.is_dir() else p.read_bytes(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(root.rglob("*"))
    }


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------
# golden files


@pytest.mark.parametrize("env", ENVS)
def test_golden_files(env: str) -> None:
    files = render(GATEWAY_TEXT, env)
    assert sorted(files) == sorted(ARTIFACTS)
    if os.environ.get("SWITCHYARD_UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN / env, ignore_errors=True)
        for name, text in files.items():
            (GOLDEN / env / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / env / name).write_text(text, encoding="utf-8", newline="\n")
    for name, text in files.items():
        golden = GOLDEN / env / name
        assert golden.exists(), (
            f"{golden.relative_to(ROOT)} is missing; run SWITCHYARD_UPDATE_GOLDEN=1 python -m "
            "pytest tests/unit/test_build.py"
        )
        assert text == golden.read_text(encoding="utf-8"), (
            f"{name} for {env} differs from {golden.relative_to(ROOT)}; if the change is intended, "
            "run SWITCHYARD_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_build.py and review "
            "the diff"
        )
    assert sorted(tree(GOLDEN / env)) == sorted(ARTIFACTS), (
        f"tests/golden/{env} holds a file the compiler no longer writes"
    )


def test_no_stale_golden_environments() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) == sorted(ENVS)


# ---------------------------------------------------------------------------------------
# runtime.json against the contract (DESIGN.md section 4, docs/runtime-config.md)


@pytest.mark.parametrize("env", ENVS)
def test_runtime_json_contract(env: str) -> None:
    files = render(GATEWAY_TEXT, env)
    doc = json.loads(files["runtime.json"])
    assert doc["schema_version"] == 1
    assert doc["environment"] == env
    assert doc["compose_project"] == f"{CONFIG.project}-{env}"
    body = {k: v for k, v in doc.items() if k != "config_hash"}
    assert doc["config_hash"] == "sha256:" + sha256(canonical_json(body))
    assert files["runtime.json"] == canonical_json(doc)

    env_cfg = CONFIG.environments[env]
    blocked = set(env_cfg.blocked_providers)
    allowed = (
        set(env_cfg.allowed_providers)
        if env_cfg.allowed_providers is not None
        else set(CONFIG.providers)
    )
    for name, route in doc["routes"].items():
        written = [c.model for c in CONFIG.routes[name].candidates]
        kept = [f"{c['provider']}/{c['model']}" for c in route["candidates"]]
        assert kept, f"route {name} has no candidate in {env}"
        assert kept == [ref for ref in written if ref in kept], (
            "candidates keep the order as written"
        )
        assert {c["provider"] for c in route["candidates"]} <= allowed - blocked
        dropped = {d["ref"] for d in route["dropped"]}
        assert set(kept) | dropped == set(written) and not set(kept) & dropped
        for c in route["candidates"]:
            model = doc["providers"][c["provider"]]["models"][c["model"]]
            assert set(route["requires"]) <= set(model["capabilities"])
            assert model["price"] is not None and model["context_window"] > 0
    assert set(doc["orgs"]) == set(CONFIG.orgs)
    assert doc["limits"]["per_key"]["requests_per_minute"] == (120 if env == "staging" else 600)
    # Secrets by NAME only: each entry says who needs it and whether it may be absent.
    assert set(doc["secrets"]) <= set(env_cfg.secrets)
    for name, spec in doc["secrets"].items():
        assert set(spec) == {"needed_by", "optional"}
        assert spec["optional"] == env_cfg.secrets[name].optional


def _all_configs() -> Iterator[tuple[str, GatewayConfig, str]]:
    for env in ENVS:
        yield "gateway.yaml", CONFIG, env
    yield from _example_envs()


@pytest.mark.parametrize(
    ("source", "config", "env"), list(_all_configs()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_runtime_json_names_only_secrets_it_lists(
    source: str, config: GatewayConfig, env: str
) -> None:
    doc = json.loads(
        render_environment(config, env, FIXED_INPUTS, source_name=source)["runtime.json"]
    )
    named = {name for p in doc["providers"].values() for name in p["credentials"].values()}
    named |= {o["byok"]["encryption_key"] for o in doc["orgs"].values() if o["byok"]}
    if doc["logging"]["sink"] == "postgres":
        named.add(doc["logging"]["url_secret"])
    for store in ("limits", "keys"):
        if doc["state"][store]["store"] != ("memory" if store == "limits" else "sqlite"):
            named.add(doc["state"][store]["url_secret"])
    assert named == set(doc["secrets"])
    for pid, provider in doc["providers"].items():
        if provider["adapter"] == "mock":
            assert provider["credentials"] == {}, f"{pid}: the mock adapter uses no credentials"


def test_production_policy_is_applied() -> None:
    doc = json.loads(render(GATEWAY_TEXT, "production")["runtime.json"])
    assert sorted(doc["providers"]) == ["anthropic", "openai"]
    chat = doc["routes"]["chat"]
    assert [(c["provider"], c["model"]) for c in chat["candidates"]] == [
        ("openai", "gpt-4o"),
        ("anthropic", "claude-sonnet-4"),
    ]
    assert [(d["ref"], d["kind"]) for d in chat["dropped"]] == [
        ("gemini/gemini-2.5-pro", "environment_policy"),
        ("mock/echo", "environment_policy"),
    ]
    assert sorted(doc["secrets"]) == [
        "ANTHROPIC_API_KEY",
        "GLOBEX_BYOK_ENCRYPTION_KEY",
        "OPENAI_API_KEY",
        "PRODUCTION_DATABASE_URL",
        "PRODUCTION_REDIS_URL",
    ]


# ---------------------------------------------------------------------------------------
# determinism


def test_build_twice_is_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        proc = run_compiler("build", "--all", "--config", str(GATEWAY), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    a, b = tree(first), tree(second)
    assert sorted(a) == sorted(f"{env}/{name}" for env in ENVS for name in ARTIFACTS)
    assert a == b


# ---------------------------------------------------------------------------------------
# secrets never leak


def test_no_secret_value_in_any_artifact_or_output(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "COMPOSE_"))}
    env["HOME"] = str(home)
    planted: dict[str, str] = {}
    for env_name, env_cfg in CONFIG.environments.items():
        for secret, source in env_cfg.secrets.items():
            value = f"sk-planted-{env_name}-{secret.lower()}-{secrets.token_hex(16)}"
            planted[f"{env_name}.{secret}"] = value
            if source.env is not None:
                env[source.env] = value
            else:
                assert source.file is not None and source.file.startswith("~/"), (
                    "the example reads secret files from ~/"
                )
                path = home / source.file[2:]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(value + "\n")
    assert len(planted) == sum(len(e.secrets) for e in CONFIG.environments.values()) > 0

    out = tmp_path / "build"
    outputs = []
    for args in (
        ("build", "--all", "--config", str(GATEWAY), "--out", str(out)),
        ("check", str(GATEWAY), "--format", "json"),
        ("diff", "staging", "production", "--config", str(GATEWAY)),
        ("explain", "chat", "--env", "production", "--config", str(GATEWAY), "--format", "json"),
    ):
        proc = run_compiler(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        outputs += [proc.stdout, proc.stderr]
    artifacts = tree(out)
    assert len(artifacts) == len(ENVS) * len(ARTIFACTS)
    for where, value in planted.items():
        for name, data in artifacts.items():
            assert value.encode() not in data, f"secret {where} leaked into {name}"
        assert all(value not in text for text in outputs), f"secret {where} leaked into CLI output"
    # runtime.json names the secrets it needs.
    runtime = json.loads(artifacts["production/runtime.json"])
    assert sorted(runtime["secrets"]) == [
        "ANTHROPIC_API_KEY",
        "GLOBEX_BYOK_ENCRYPTION_KEY",
        "OPENAI_API_KEY",
        "PRODUCTION_DATABASE_URL",
        "PRODUCTION_REDIS_URL",
    ]
    manifest = json.loads(artifacts["production/manifest.json"])
    assert manifest["secrets"] == sorted(runtime["secrets"])


# ---------------------------------------------------------------------------------------
# atomic build


@pytest.fixture
def built(tmp_path: Path) -> Path:
    out = tmp_path / "build"
    assert cli.main(["build", "--all", "--config", str(GATEWAY), "--out", str(out), "-q"]) == 0
    return out


def test_invalid_config_builds_nothing(built: Path, tmp_path: Path) -> None:
    before = snapshot(built)
    bad = tmp_path / "bad.yaml"
    bad.write_text(replace_once(GATEWAY_TEXT, "    port: 8200\n", "    port: 80\n"))
    proc = run_compiler("build", "--all", "--config", str(bad), "--out", str(built))
    assert proc.returncode == 1
    assert "E052" in proc.stderr and "nothing was written" in proc.stderr
    assert snapshot(built) == before
    assert leftovers(built) == []


def _changed_config(tmp_path: Path) -> Path:
    changed = tmp_path / "changed.yaml"
    changed.write_text(replace_once(GATEWAY_TEXT, *ROUTING_CHANGE))
    return changed


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, name: str, n: int) -> list[int]:
    real = getattr(os, name)
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, flaky)  # the os module compiler.cli calls
    return calls


# Three environments: each swap is two renames (old output aside, new output in).
@pytest.mark.parametrize("n", range(1, 7))
def test_failed_rename_keeps_previous_output(
    built: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    n: int,
) -> None:
    before = snapshot(built)
    changed = _changed_config(tmp_path)
    calls = _fail_on_call(monkeypatch, "rename", n)
    code = cli.main(["build", "--all", "--config", str(changed), "--out", str(built)])
    assert calls[0] >= n, "the failure was injected"
    assert code == 2
    err = capsys.readouterr().err
    assert "previous output is unchanged" in err and "Traceback" not in err
    assert {k: v[0] for k, v in snapshot(built).items()} == {k: v[0] for k, v in before.items()}
    assert leftovers(built) == []


@pytest.mark.parametrize("n", [1, 5, 12])
def test_failed_write_keeps_previous_output(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    before = snapshot(built)
    changed = _changed_config(tmp_path)
    calls = _fail_on_call(monkeypatch, "fsync", n)
    assert cli.main(["build", "--all", "--config", str(changed), "--out", str(built), "-q"]) == 2
    assert calls[0] == n, "writing stops at the first failure"
    assert snapshot(built) == before
    assert leftovers(built) == []


def test_successful_rebuild_replaces_output_and_leaves_no_temp_dirs(
    built: Path, tmp_path: Path
) -> None:
    before = tree(built)
    (built / "production" / "stray.txt").write_text("not ours")
    assert (
        cli.main(
            [
                "build",
                "--all",
                "--config",
                str(_changed_config(tmp_path)),
                "--out",
                str(built),
                "-q",
            ]
        )
        == 0
    )
    after = tree(built)
    assert "production/stray.txt" not in after, (
        "each environment directory holds exactly its artifacts"
    )
    assert after["production/runtime.json"] != before["production/runtime.json"]
    assert leftovers(built) == []


def test_unknown_environment_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "build"
    proc = run_compiler("build", "prod", "--config", str(GATEWAY), "--out", str(out))
    assert proc.returncode == 2
    assert (
        "unknown environment 'prod'" in proc.stderr and "did you mean 'production'" in proc.stderr
    )
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# compose properties (static)


def _published(port: str) -> tuple[str, str, str]:
    host_ip, _, rest = port.partition(":")
    published, _, target = rest.partition(":")
    return host_ip, published, target


@pytest.mark.parametrize("env", ENVS)
def test_compose_is_safe_on_a_shared_host(env: str) -> None:
    text = render(GATEWAY_TEXT, env)["compose.yaml"]
    compose = yaml.safe_load(text)
    env_cfg = CONFIG.environments[env]
    assert compose["name"] == f"{CONFIG.project}-{env}"
    assert "container_name" not in text
    for section in ("volumes", "networks"):
        for name, spec in (compose.get(section) or {}).items():
            assert "name" not in (spec or {}), f"{section}.{name} must not be named host-globally"
            assert "external" not in (spec or {})
    assert "data" in compose["volumes"], "a named volume for the embedded request log"
    gateways = {slot: gateway_services(env_cfg.replicas, slot) for slot in SLOTS}
    assert sorted(compose["services"]) == sorted(["proxy", *gateways["a"], *gateways["b"]])
    published = []
    for name, svc in compose["services"].items():
        assert svc["labels"][MANAGED_BY] == "switchyard", name
        assert svc["labels"]["dev.switchyard.environment"] == env
        assert svc["restart"] == "unless-stopped", name
        assert svc["pull_policy"] == "never", f"{name}: the image is built locally, never pulled"
        assert svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges:true"], (
            name
        )
        assert "network_mode" not in svc and "privileged" not in svc
        for port in svc.get("ports", []):
            host_ip, host_port, _ = _published(port)
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published.append((name, int(host_port)))
    assert published == [("proxy", env_cfg.port)], (
        "the proxy alone publishes the environment's port"
    )

    config_hash = json.loads(render(GATEWAY_TEXT, env)["runtime.json"])["config_hash"]
    for slot, names in gateways.items():
        for replica, name in enumerate(names, 1):
            gateway = compose["services"][name]
            labels = gateway["labels"]
            assert labels["dev.switchyard.service"] == "gateway"
            assert (labels[SLOT_LABEL], labels[REPLICA_LABEL]) == (slot, str(replica))
            assert labels[CONFIG_HASH_LABEL] == config_hash
            # Docker health-checks each gateway; deploy waits for it before the proxy sends it
            # traffic.
            assert gateway["healthcheck"]["test"], name
            assert gateway["env_file"] == [{"path": "../../secrets.env", "required": False}]
            assert "ports" not in gateway and gateway["expose"] == [str(CONTAINER_PORT)], (
                f"{name} publishes nothing"
            )
            assert gateway["volumes"] == compose["services"]["gateway-a1"]["volumes"], (
                "every gateway shares the request log"
            )

    proxy = compose["services"]["proxy"]
    assert proxy["labels"]["dev.switchyard.service"] == "proxy"
    assert "env_file" not in proxy and "environment" not in proxy, "the proxy needs no secrets"
    assert CONFIG_HASH_LABEL not in proxy["labels"], "the proxy does not read runtime.json"
    assert "depends_on" not in proxy, (
        "the proxy starts without gateways (it answers 503 until one is ready)"
    )
    # No healthcheck: the proxy image has nothing to run one with (no curl, no python), and
    # deploy checks the proxy itself, with /readyz through the published port.
    assert proxy["volumes"] == [f"{HOST_CONFIG_DIR}:{CONFIG_DIR}:ro"]
    assert proxy["build"] == {"context": "./proxy", "dockerfile": "Dockerfile"}


def test_production_has_two_replicas_per_slot_behind_the_proxy() -> None:
    assert CONFIG.environments["production"].replicas == 2
    compose = yaml.safe_load(render(GATEWAY_TEXT, "production")["compose.yaml"])
    assert sorted(compose["services"]) == [
        "gateway-a1",
        "gateway-a2",
        "gateway-b1",
        "gateway-b2",
        "proxy",
    ]
    assert compose["services"]["proxy"]["ports"] == [f"127.0.0.1:8300:{LISTEN_PORT}"]
    assert all("ports" not in svc for name, svc in compose["services"].items() if name != "proxy")


@pytest.mark.parametrize("env", ENVS)
def test_each_slot_config_balances_exactly_its_gateways(env: str) -> None:
    files = render(GATEWAY_TEXT, env)
    replicas = CONFIG.environments[env].replicas
    for slot in SLOTS:
        balanced = files[f"proxy/haproxy-{slot}.cfg"].split("\nbackend gateways\n")[1]
        balanced = balanced.split("\nbackend ")[0]  # not replica_metrics (one replica each)
        servers = [
            line.split()[1:] for line in balanced.splitlines() if line.strip().startswith("server ")
        ]
        assert servers == [
            [name, f"{name}:{CONTAINER_PORT}"] for name in gateway_services(replicas, slot)
        ], slot
    a, b = (files[name] for name in PROXY_CONFIGS)
    assert a.replace("gateway-a", "gateway-b").replace("slot a", "slot b") == b, (
        "the slots differ only in their servers"
    )


# ---------------------------------------------------------------------------------------
# manifest.json: per-service inputs change exactly when they should


def _manifest(text: str, env: str, inputs: ImageInputs = FIXED_INPUTS) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        render(text, env, inputs, source_sha256=sha256(text))["manifest.json"]
    )
    return doc


@pytest.mark.parametrize("env", ENVS)
def test_routing_change_changes_only_the_gateway_config(env: str) -> None:
    before = _manifest(GATEWAY_TEXT, env)
    after = _manifest(replace_once(GATEWAY_TEXT, *ROUTING_CHANGE), env)
    assert after["config_hash"] != before["config_hash"]
    for service, inputs in before["services"].items():
        changed = after["services"][service]
        assert changed["image"] == inputs["image"]
        assert changed["definition"] == inputs["definition"]
        if service == "gateway":
            assert (
                changed["config"] != inputs["config"]
                and changed["inputs_hash"] != inputs["inputs_hash"]
            )
        else:
            assert changed == inputs, f"{service} does not read runtime.json"


@pytest.mark.parametrize("env", ENVS)
def test_image_inputs_change_changes_the_gateway_image_only(env: str) -> None:
    before = _manifest(GATEWAY_TEXT, env)
    for other in (
        ImageInputs(runtime_digest="1" * 64, requirements=FIXED_INPUTS.requirements),
        ImageInputs(runtime_digest=FIXED_INPUTS.runtime_digest, requirements="fastapi==1\n"),
    ):
        after = _manifest(GATEWAY_TEXT, env, other)
        assert after["image"] != before["image"]
        assert after["config_hash"] == before["config_hash"]
        gw_before, gw_after = before["services"]["gateway"], after["services"]["gateway"]
        assert gw_after["image"] != gw_before["image"]
        assert (
            gw_after["config"] == gw_before["config"]
            and gw_after["definition"] == gw_before["definition"]
        )
        # The proxy image is HAProxy and its Dockerfile: the runtime's code is not in it.
        assert after["proxy_image"] == before["proxy_image"]
        assert after["services"]["proxy"] == before["services"]["proxy"]


@pytest.mark.parametrize("env", ENVS)
def test_proxy_settings_change_only_the_proxy_config(env: str) -> None:
    changed_text = replace_once(
        GATEWAY_TEXT, "  workers: 1\n", "  workers: 1\n  proxy:\n    request_head_timeout_s: 7.5\n"
    )
    before, after = render(GATEWAY_TEXT, env), render(changed_text, env)
    for name in PROXY_CONFIGS:
        assert "timeout http-request 10s\n" in before[name]
        assert after[name] == before[name].replace(
            "timeout http-request 10s\n", "timeout http-request 7500ms\n"
        )
    unchanged = ("Dockerfile", "compose.yaml", "runtime.json", "proxy/Dockerfile")
    assert {name: after[name] for name in unchanged} == {name: before[name] for name in unchanged}

    m_before, m_after = (json.loads(files["manifest.json"]) for files in (before, after))
    proxy_before, proxy_after = m_before["services"]["proxy"], m_after["services"]["proxy"]
    assert proxy_after["config"] == {
        slot: "sha256:" + sha256(after[f"proxy/haproxy-{slot}.cfg"]) for slot in SLOTS
    }
    assert all(proxy_after["config"][slot] != proxy_before["config"][slot] for slot in SLOTS)
    assert proxy_after["inputs_hash"] != proxy_before["inputs_hash"]
    assert (proxy_after["image"], proxy_after["definition"]) == (
        proxy_before["image"],
        proxy_before["definition"],
    )
    assert m_after["services"]["gateway"] == m_before["services"]["gateway"], (
        "the gateways do not read the proxy's settings"
    )
    assert (
        m_after["config_hash"] == m_before["config_hash"] and m_after["image"] == m_before["image"]
    )


@pytest.mark.parametrize("env", ENVS)
def test_comment_only_change_changes_only_the_source_hash(env: str) -> None:
    commented = GATEWAY_TEXT.replace(
        "\nroutes:\n", "\n# A comment changes nothing the gateway does.\nroutes:\n", 1
    )
    assert commented != GATEWAY_TEXT
    before, after = _manifest(GATEWAY_TEXT, env), _manifest(commented, env)
    assert after["source"]["sha256"] != before["source"]["sha256"]
    assert {**after, "source": None} == {**before, "source": None}
    files_before = render(GATEWAY_TEXT, env)
    files_after = render(commented, env)
    assert {k: v for k, v in files_after.items() if k != "manifest.json"} == {
        k: v for k, v in files_before.items() if k != "manifest.json"
    }


def test_workers_change_restarts_without_rebuilding() -> None:
    before = _manifest(GATEWAY_TEXT, "staging")
    after = _manifest(replace_once(GATEWAY_TEXT, "  workers: 1\n", "  workers: 2\n"), "staging")
    gw_before, gw_after = before["services"]["gateway"], after["services"]["gateway"]
    assert gw_after["image"] == gw_before["image"], "workers is not baked into the image"
    assert gw_after["definition"] != gw_before["definition"]


def test_manifest_lists_every_file_hash() -> None:
    files = render(GATEWAY_TEXT, "production")
    manifest = json.loads(files["manifest.json"])
    assert manifest["schema_version"] == 2
    assert manifest["files"] == {
        name: "sha256:" + sha256(files[name]) for name in ARTIFACTS if name != "manifest.json"
    }
    assert manifest["compose_project"] == "acme-assistant-production"
    assert manifest["image"].startswith("acme-assistant-production/gateway:")
    assert (
        manifest["proxy_image"]
        == "acme-assistant-production/proxy:" + sha256(files["proxy/Dockerfile"])[:12]
    )
    assert sorted(manifest["services"]) == ["gateway", "proxy"]
    gateway = manifest["services"]["gateway"]
    assert gateway["slots"] == {slot: gateway_services(2, slot) for slot in SLOTS}
    assert manifest["services"]["proxy"]["config"] == {
        slot: manifest["files"][f"proxy/haproxy-{slot}.cfg"] for slot in SLOTS
    }
    for service, inputs in manifest["services"].items():
        # A gateway's slots follow from its replicas, so they are not hashed again.
        body = {k: v for k, v in inputs.items() if k not in ("inputs_hash", "slots")}
        assert inputs["inputs_hash"] == "sha256:" + sha256(canonical_json(body)), service
