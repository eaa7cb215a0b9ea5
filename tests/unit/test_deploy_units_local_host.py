"""Deploy unit tests: the command line against this machine with a stand-in `docker` on PATH.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from deployer import claims
from deployer.hosts import LocalHost
from deployer.secrets_env import secrets_file
from deployer.state import (
    ProxyHeader,
    read_state,
)
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    NEW,
    OLD,
    Compile,
    LocalHostSetup,
    answering,
    base_config,
    header,
    host_with,
    plan_of,
    write_config,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources

READ_ONLY_DOCKER = {("ps",), ("inspect",), ("image", "inspect"), ("compose", "version")}


@pytest.fixture
def local(tmp_path: Path) -> LocalHostSetup:
    return LocalHostSetup(tmp_path)


def read_only(calls: list[list[str]]) -> bool:
    return all(tuple(c[:1]) in READ_ONLY_DOCKER or tuple(c[:2]) in READ_ONLY_DOCKER for c in calls)


def test_a_plan_with_nothing_changed_says_so_and_touches_nothing(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    before = local.snapshot()
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines() == [
        f"Plan for dev on localhost: nothing to do; release {OLD} is up to date.",
        "  SERVICE  ACTION     WHY",
        "  gateway  unchanged  -",
        "  proxy    unchanged  -",
        "dev: plan only, nothing would change",
    ]
    assert local.snapshot() == before
    assert local.docker_calls() and read_only(local.docker_calls()), local.docker_calls()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"schema_version": 3}, "schema_version: 3 is not supported by this Switchyard"),
        ({"port": "8080"}, "port: should be an integer, not '8080'"),
        ({"services": {"gateway": {}, "proxy": {}}}, "services.gateway.slots: is missing"),
    ],
)
def test_a_live_release_manifest_this_switchyard_cannot_read_is_refused_naming_the_field(
    local: LocalHostSetup, change: dict[str, Any], named: str
) -> None:
    bundle = local.deployed(OLD)
    path = local.env_dir(bundle) / "releases" / OLD / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    before = local.snapshot()
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"dev: plan refused: {path} on localhost: {named}"), proc
    assert "cannot read that release's manifest" in last
    assert local.snapshot() == before


def test_a_json_plan_with_nothing_changed_is_one_json_document(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--plan", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["action"], doc["release"], doc["services"]) == (
        "plan",
        OLD,
        {
            "gateway": {"action": "unchanged", "reasons": []},
            "proxy": {"action": "unchanged", "reasons": []},
        },
    )


def test_a_plan_for_a_routing_change_replaces_the_gateways_in_the_other_slot_without_a_build(
    local: LocalHostSetup,
) -> None:
    local.deployed(OLD)
    before = local.snapshot()
    local.config["routes"]["chat"]["fallback"] = {"max_attempts": 2}
    write_config(local.repo, local.config)

    proc = local.deploy("dev", "--plan", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], doc["previous"], doc["error"]) == (True, "plan", OLD, None)
    assert doc["services"] == {
        "gateway": {"action": "replace", "reasons": ["runtime.json changed (routes.chat)"]},
        "proxy": {"action": "reload", "reasons": ["the gateways move to slot b"]},
    }
    release = f"{local.env_dir(local.bundle())}/releases/{doc['release']}"
    expected = [
        f"upload release {doc['release']} (",
        "validate the compose file on the host:",
        "stage the proxy config for slot b and check it with `haproxy -c` in the running proxy",
        "start the new gateways in slot b beside the live ones:",
        "wait up to 60 s for gateway-b1 to answer /readyz with 200",
        "cut over: make slot b's config live and reload the proxy",
        "point current -> releases/" + doc["release"],
        "drain the old gateways (hello-gateway-dev-gateway-a1-1)",
    ]
    assert len(doc["plan"]) == len(expected), doc["plan"]
    assert all(
        step.startswith(prefix) for step, prefix in zip(doc["plan"], expected, strict=True)
    ), doc["plan"]
    assert doc["plan"][3].endswith(
        f": docker compose -p hello-gateway-dev -f {release}/compose.yaml "
        "up --detach --no-deps --no-build gateway-b1"
    )
    # Nothing to build (the images are there); the secrets did not change.
    assert not any(s.startswith(("build ", "write ")) for s in doc["plan"]), doc["plan"]
    assert local.snapshot() == before
    assert local.docker_calls() and read_only(local.docker_calls()), local.docker_calls()


def test_a_plan_refuses_a_port_another_project_publishes(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    local.foreign("neighbour", ports=f"127.0.0.1:{local.port}->80/tcp, [::1]:{local.port}->80/tcp")
    local.config["routes"]["chat"]["fallback"] = {"max_attempts": 2}
    write_config(local.repo, local.config)
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 1, proc
    assert proc.stdout.splitlines()[-1] == (
        f"dev: plan refused: this deploy would be refused: port {local.port} is already published "
        "on this host "
        "by 'neighbour'; pick another environments.dev.port"
    )


def test_a_plan_refuses_a_compose_project_used_by_containers_we_do_not_own(
    local: LocalHostSetup,
) -> None:
    local.foreign("hello-gateway-dev")  # compose's label, none of ours
    local.deploy_dir.mkdir()
    proc = local.deploy("dev", "--plan")
    assert proc.returncode == 1, proc
    assert proc.stdout.startswith(
        "dev: plan refused: the compose project 'hello-gateway-dev' on this host is already used "
        "by containers "
        "that Switchyard does not own for this environment: hello-gateway-dev-web-1 ("
    )
    assert local.docker_calls() and read_only(local.docker_calls())


def test_status_reports_the_live_release_and_its_containers(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--status", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], doc["release"], doc["current"], doc["url"]) == (
        True,
        "status",
        OLD,
        OLD,
        f"http://127.0.0.1:{local.port}",
    )
    assert (doc["serving"], doc["health"], doc["unfinished"]) == (None, "not answering", [])
    [gateway] = doc["containers"]["gateway"]
    assert (
        gateway["service"],
        gateway["slot"],
        gateway["state"],
        gateway["health"],
        gateway["release"],
        gateway["owned"],
        gateway["serving"],
    ) == ("gateway-a1", "a", "running", "healthy", OLD, True, False)
    assert {"id", "state", "health", "started_at", "release"} <= set(gateway)
    [proxy_doc] = doc["containers"]["proxy"]
    assert (proxy_doc["service"], proxy_doc["slot"], proxy_doc["release"]) == ("proxy", None, OLD)
    assert doc["services"] == {
        "gateway": {"running": 1, "releases": [OLD]},
        "proxy": {"running": 1, "releases": [OLD]},
    }
    assert doc["last"]["who"] == "alice@laptop"


def test_status_names_the_serving_gateway_and_what_an_interrupted_deploy_left(
    local: LocalHostSetup,
) -> None:
    bundle = local.deployed(OLD)
    (local.env_dir(bundle) / "releases" / NEW).mkdir()
    local.containers.append(local.container(bundle, NEW, "gateway", "gateway-b1", slot="b"))
    local.save()
    serving = local.containers[0]
    assert serving["Config"]["Labels"]["com.docker.compose.service"] == "gateway-a1"
    with answering(local.port, serving["Id"][:12]):
        proc = local.deploy("dev", "--status", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert doc["serving"] == {
        "release": OLD,
        "slot": "a",
        "container": "hello-gateway-dev-gateway-a1-1",
        "status": 200,
    }
    assert doc["health"] == "healthy"
    assert {c["service"]: c["serving"] for c in doc["containers"]["gateway"]} == {
        "gateway-a1": True,
        "gateway-b1": False,
    }
    assert doc["unfinished"] == [
        "gateways the proxy does not serve are still there (hello-gateway-dev-gateway-b1-1); "
        "the next deploy removes them"
    ]


def test_history_lists_the_recorded_deploys(local: LocalHostSetup) -> None:
    local.deployed(OLD)
    proc = local.deploy("dev", "--history", "--json")
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["action"], [e["release"] for e in doc["entries"]]) == (
        True,
        "history",
        [OLD],
    )


def test_one_probe_reads_releases_current_images_secrets_proxy_lock_and_containers(
    local: LocalHostSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = local.deployed(OLD)
    env_dir = local.env_dir(bundle)
    (env_dir / "releases" / NEW).mkdir()
    (env_dir / "releases" / NEW / "FAILED").write_text("x\n")
    (env_dir / "releases" / "stray-file").write_text("not a release")
    (env_dir / "releases" / f".{NEW}.tar.gz").write_bytes(b"half an upload")
    (env_dir / "lock.json").write_text(
        '{"who": "bob@desk", "action": "deploy", "since": "2026-01-02T00:00:00Z", "pid": 7}'
    )
    (env_dir.parent / "claims.json").write_text(
        '{"projects": {}}'
    )  # edited by hand: no newline at the end
    monkeypatch.setenv("PATH", f"{local.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SY_FAKE_DOCKER_STATE", str(local.state_file))
    monkeypatch.setenv("SY_FAKE_DOCKER_LOG", str(local.log))
    root = str(env_dir.parent)
    content = secrets_file(bundle).content
    image, proxy_image = bundle.manifest.images

    state = read_state(
        LocalHost(),
        root,
        bundle.compose_project,
        bundle.config.project,
        "dev",
        images=(image, proxy_image, "nope/gateway:0"),
        secrets=content,
        claims=True,
    )
    assert (state.releases, state.failed, state.current, state.exists) == (
        [OLD, NEW],
        {NEW},
        OLD,
        True,
    )
    assert state.images == {image: True, proxy_image: True, "nope/gateway:0": False}
    assert state.secrets_same is True
    assert [
        (c.service, c.compose_service, c.slot, c.release, c.owned) for c in state.containers
    ] == [("gateway", "gateway-a1", "a", OLD, True), ("proxy", "proxy", None, OLD, True)]
    assert [c.compose_service for c in state.gateways("a")] == ["gateway-a1"] and state.gateways(
        "b"
    ) == []
    found = state.proxy()
    assert found is not None and found.compose_service == "proxy"
    assert state.manifests == {OLD: bundle.manifest}
    assert state.proxy_live == ProxyHeader(OLD, "a", bundle.manifest.services.proxy.config["a"])
    assert (state.compose, state.leftovers, state.claims) == (
        "2.29.7",
        [f".{NEW}.tar.gz"],
        '{"projects": {}}',
    )
    assert claims.parse(state.claims) == {}
    assert (
        state.lock_holder.startswith('{"who": "bob@desk"') and state.lock_free is True
    )  # left by a deploy that died
    assert f"127.0.0.1:{local.port}->8080/tcp" in state.published

    other = read_state(
        LocalHost(),
        root,
        bundle.compose_project,
        bundle.config.project,
        "dev",
        images=("nope/gateway:0",),
        secrets=content + b"B='2'\n",
    )
    assert (
        other.images == {"nope/gateway:0": False}
        and other.secrets_same is False
        and other.claims is None
    )
    plain = read_state(LocalHost(), root, bundle.compose_project, bundle.config.project, "dev")
    assert plain.images == {} and plain.secrets_same is None
    # Only read-only docker commands ran.
    assert read_only(local.docker_calls())

    never = read_state(LocalHost(), root, "never-deployed", bundle.config.project, "dev")
    assert (never.releases, never.current, never.containers, never.exists, never.proxy_live) == (
        [],
        None,
        [],
        False,
        None,
    )


def test_a_plan_without_the_secrets_still_plans_and_says_a_deploy_would_refuse(
    local: LocalHostSetup,
) -> None:
    local.config["providers"]["vendor"] = {
        "adapter": "openai-compatible",
        "base_url": "http://127.0.0.1:9/v1",
        "credentials": {"api_key": "VENDOR_API_KEY"},
        "models": {"small": {"context_window": 8192}},
    }
    local.config["routes"]["chat"]["candidates"] = ["mock/echo", "vendor/small"]
    local.config["environments"]["dev"]["secrets"] = {
        "VENDOR_API_KEY": {"env": "SYTEST_UNSET_SECRET_VAR"}
    }
    write_config(local.repo, local.config)
    before = local.snapshot()
    plan = local.deploy("dev", "--plan")
    assert plan.returncode == 0, plan
    assert "gateway  create  not running yet" in plan.stdout
    assert (
        "note: environments.dev.secrets.VENDOR_API_KEY: the environment variable "
        "SYTEST_UNSET_SECRET_VAR is not set" in plan.stderr
    ), plan.stderr
    assert "a deploy would refuse" in plan.stderr
    assert "write " not in plan.stdout  # no secrets step planned without the values
    assert local.snapshot() == before and read_only(local.docker_calls())
    real = local.deploy("dev", "--yes")
    assert real.returncode == 1 and "SYTEST_UNSET_SECRET_VAR is not set" in real.stdout, real
    assert "-> connect" not in real.stderr


def test_after_a_proxy_only_deploy_the_live_release_is_the_one_that_made_the_proxy_config(
    compile_env: Compile,
) -> None:
    """A deploy that changed only the proxy (release NEW) leaves the gateways of OLD: NEW is live,
    so a later plan names NEW as the previous release and a rollback goes back from NEW, not OLD."""
    old = compile_env(base_config(), "staging")
    host = host_with(old)
    host.proxy_live = header(old, "a", NEW)
    host.releases = [OLD, NEW]
    host.current = NEW
    plan = plan_of(old, host, old)
    assert plan.live_slot == "a" and plan.live_release == NEW
    assert plan.noop
    # Another slot's header (an interrupted cut-over) does not count.
    host.proxy_live = header(old, "b", NEW)
    assert plan_of(old, host, old).live_release == OLD
