"""Deploy unit tests, without a Docker engine or an sshd: plan: the proxy.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from deployer.plan import (
    RECREATE,
    RELOAD,
    UNCHANGED,
)
from deployer.state import (
    Paths,
    parse_container,
)
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    OLD,
    Compile,
    actions,
    base_config,
    changed,
    differing,
    gateways,
    header,
    host_with,
    plan_of,
    proxy,
    proxy_change,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources


def test_a_proxy_setting_change_reloads_the_proxy_and_leaves_the_gateways(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(proxy_change(request_head_timeout_s=5)), "production")
    assert differing(old.manifest, new.manifest, "gateway") == set()
    assert differing(old.manifest, new.manifest, "proxy") == {"config"}
    for slot in ("a", "b"):
        plan = plan_of(new, host_with(old, slot), old)
        assert actions(plan) == {
            "gateway": (UNCHANGED, ()),
            "proxy": (RELOAD, ("haproxy.cfg changed (runtime.proxy)",)),
        }
        assert (plan.gateways_change, plan.live_slot, plan.target_slot, plan.build) == (
            False,
            slot,
            slot,
            (),
        )


def test_a_proxy_image_change_recreates_the_proxy(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(proxy_change(base_image="haproxy:2.9")), "production")
    plan = plan_of(new, host_with(old), old, proxy_image=False)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (
            RECREATE,
            (
                "its image changed (runtime.proxy.base_image or Switchyard's proxy Dockerfile)",
                "a short interruption: the port is closed while it restarts",
                f"image {new.manifest.to_json()['proxy_image']} is not on the host",
            ),
        ),
    }
    assert plan.build == ("proxy",)


def test_a_port_change_recreates_the_proxy_only(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c["environments"]["production"].update(port=8301)), "production"
    )
    assert differing(old.manifest, new.manifest, "gateway") == set()
    plan = plan_of(new, host_with(old), old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (
            RECREATE,
            (
                "compose definition changed (ports)",
                "a short interruption: the port is closed while it restarts",
            ),
        ),
    }


def test_a_stopped_proxy_is_recreated(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    plan = plan_of(
        old, host_with(old, containers=[*gateways(old), proxy(old, state="exited")]), old
    )
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (RECREATE, ("hello-gateway-staging-proxy-1 is exited (a short interruption)",)),
    }
    assert plan.live_slot == "a"


def test_a_live_config_deploy_did_not_write_is_replaced_by_a_reload(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    plan = plan_of(old, host_with(old, live_config=False), old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (RELOAD, ("its live config is not Switchyard's",)),
    }
    assert plan.live_slot == "a"  # the only slot running

    edited = host_with(old)
    edited.proxy_live = replace(
        header(old), config="sha256:" + "0" * 64
    )  # edited by hand, or another release's
    assert actions(plan_of(old, edited, old))["proxy"] == (
        RELOAD,
        ("haproxy.cfg changed (runtime.proxy)",),
    )


def test_the_plan_table_lists_services_actions_and_reasons(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    plan = plan_of(old, host_with(old), old, secrets_changed=True)
    assert plan.table() == (
        "  SERVICE  ACTION   WHY\n"
        "  gateway  replace  secrets changed\n"
        "  proxy    reload   the gateways move to slot b"
    )
    assert {s.service: s.as_json() for s in plan.services} == {
        "gateway": {"action": "replace", "reasons": ["secrets changed"]},
        "proxy": {"action": "reload", "reasons": ["the gateways move to slot b"]},
    }


def test_a_container_belongs_to_the_release_its_compose_file_names() -> None:
    paths = Paths("/srv/switchyard", "hello-gateway-staging")
    raw: dict[str, Any] = {
        "Id": "c" * 64,
        "Name": "/hello-gateway-staging-gateway-b1-1",
        "Image": "sha256:" + "2" * 64,
        "State": {
            "Status": "running",
            "StartedAt": "2026-01-01T00:00:00Z",
            "ExitCode": 0,
            "Health": {"Status": "healthy", "Log": [{"Output": "ok\n"}]},
        },
        "Config": {
            "Labels": {
                "dev.switchyard.managed-by": "switchyard",
                "dev.switchyard.project": "hello-gateway",
                "dev.switchyard.environment": "staging",
                "dev.switchyard.service": "gateway",
                "dev.switchyard.slot": "b",
                "com.docker.compose.service": "gateway-b1",
                "com.docker.compose.project.config_files": (
                    f"/srv/switchyard/hello-gateway-staging/releases/{OLD}/compose.yaml"
                ),
            }
        },
        "NetworkSettings": {
            "Networks": {"hello-gateway-staging_default": {"IPAddress": "172.20.0.3"}}
        },
    }
    c = parse_container(raw, paths, "hello-gateway", "staging")
    assert (
        c.name,
        c.service,
        c.compose_service,
        c.slot,
        c.ip,
        c.state,
        c.health,
        c.release,
        c.owned,
        c.health_log,
        c.short_id,
    ) == (
        "hello-gateway-staging-gateway-b1-1",
        "gateway",
        "gateway-b1",
        "b",
        "172.20.0.3",
        "running",
        "healthy",
        OLD,
        True,
        "ok",
        "c" * 12,
    )
    other_env = copy.deepcopy(raw)
    other_env["Config"]["Labels"]["dev.switchyard.environment"] = "production"
    assert parse_container(other_env, paths, "hello-gateway", "staging").owned is False
    unlabelled = copy.deepcopy(raw)
    del unlabelled["Config"]["Labels"]["dev.switchyard.managed-by"]
    assert parse_container(unlabelled, paths, "hello-gateway", "staging").owned is False
    earlier = copy.deepcopy(raw)  # the layout before the proxy: no role or slot label
    for label in ("dev.switchyard.service", "dev.switchyard.slot"):
        del earlier["Config"]["Labels"][label]
    earlier["Config"]["Labels"]["com.docker.compose.service"] = "edge"
    e = parse_container(earlier, paths, "hello-gateway", "staging")
    assert (e.service, e.compose_service, e.slot) == ("edge", "edge", None)
