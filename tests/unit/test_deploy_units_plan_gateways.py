"""Deploy unit tests, without a Docker engine or an sshd: plan: the gateways.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.manifest import release_manifest
from deployer.bundle import DeployError, load_bundle
from deployer.plan import (
    CREATE,
    REBUILD,
    RECREATE,
    RELOAD,
    REMOVE,
    REPLACE,
    UNCHANGED,
    live_slot,
    other_slot,
)
from deployer.state import (
    HostState,
    Paths,
    check_ownership,
)
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    NEW,
    OLD,
    Compile,
    actions,
    base_config,
    changed,
    differing,
    empty_host,
    gateways,
    host_with,
    legacy,
    plan_of,
    proxy,
    route_change,
    runtime_copy,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources


def test_nothing_running_creates_the_gateways_in_slot_a_and_the_proxy(compile_env: Compile) -> None:
    staging = compile_env(base_config(), "staging")
    plan = plan_of(staging, empty_host(staging))
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (CREATE, ("not running yet",)),
    }
    assert (plan.live_slot, plan.live_release, plan.target_slot, plan.build) == (
        None,
        None,
        "a",
        (),
    )
    assert (plan.noop, plan.gateways_change, plan.proxy_action) == (False, True, CREATE)
    assert (plan.stale, plan.legacy, plan.removed, [s.service for s in plan.changed]) == (
        (),
        (),
        [],
        ["gateway", "proxy"],
    )


def test_images_not_on_the_host_are_built_one_service_per_image(compile_env: Compile) -> None:
    production = compile_env(base_config(), "production")
    image, proxy_image = production.manifest.images
    plan = plan_of(production, empty_host(production), image=False, proxy_image=False)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet", f"image {image} is not on the host")),
        "proxy": (CREATE, ("not running yet", f"image {proxy_image} is not on the host")),
    }
    assert plan.build == ("gateway-a1", "proxy")  # not gateway-a2: both replicas share the image
    assert plan_of(production, empty_host(production), proxy_image=False).build == ("proxy",)


@pytest.mark.parametrize("slot", ["a", "b"])
def test_the_same_manifest_changes_nothing(compile_env: Compile, slot: str) -> None:
    old, new = compile_env(base_config(), "production"), compile_env(base_config(), "production")
    plan = plan_of(new, host_with(old, slot), old)
    assert actions(plan) == {"gateway": (UNCHANGED, ()), "proxy": (UNCHANGED, ())}
    assert (plan.noop, plan.build, plan.changed, plan.removed, plan.stale) == (True, (), [], [], ())
    assert (plan.live_slot, plan.target_slot, plan.live_release, plan.deployed_release) == (
        slot,
        slot,
        OLD,
        OLD,
    )


def test_a_missing_image_of_gateways_that_do_not_change_is_not_built(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    plan = plan_of(old, host_with(old), old, image=False)
    assert plan.noop and plan.build == ()


def test_a_comment_only_edit_changes_nothing(compile_env: Compile, tmp_path: Path) -> None:
    old = compile_env(base_config(), "staging")
    d = tmp_path / "commented"
    d.mkdir()
    (d / "gateway.yaml").write_text(
        "# a comment\n" + yaml.safe_dump(base_config(), sort_keys=False)
    )
    new = load_bundle(str(d / "gateway.yaml"), "staging")
    assert new.manifest.to_json()["source"] != old.manifest.to_json()["source"]
    assert plan_of(new, host_with(old), old).noop


@pytest.mark.parametrize(("live", "target"), [("a", "b"), ("b", "a")])
def test_a_routing_change_replaces_the_gateways_in_the_other_slot(
    compile_env: Compile, live: str, target: str
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(route_change), "production")
    assert differing(old.manifest, new.manifest, "gateway") == {"config"}
    assert differing(old.manifest, new.manifest, "proxy") == set()

    plan = plan_of(new, host_with(old, live), old)
    assert actions(plan) == {
        "gateway": (REPLACE, ("runtime.json changed (routes.chat)",)),
        "proxy": (RELOAD, (f"the gateways move to slot {target}",)),
    }
    assert (plan.live_slot, plan.target_slot, plan.live_release, plan.build) == (
        live,
        target,
        OLD,
        (),
    )
    assert [c.id for c in plan.service("gateway").running] == [c.id for c in gateways(old, live)]


def test_a_changed_limit_and_route_are_both_named(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")

    def mutate(c: dict[str, Any]) -> None:
        route_change(c)
        c["limits"] = {"per_key": {"requests_per_minute": 60}}

    new = compile_env(changed(mutate), "staging")
    assert actions(plan_of(new, host_with(old), old))["gateway"] == (
        REPLACE,
        ("runtime.json changed (limits.per_key, routes.chat)",),
    )


def test_workers_change_both_runtime_json_and_the_command(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(changed(lambda c: c.setdefault("runtime", {}).update(workers=2)), "staging")
    plan = plan_of(new, host_with(old), old)
    assert actions(plan)["gateway"] == (
        REPLACE,
        ("runtime.json changed (server.workers)", "compose definition changed (command)"),
    )
    assert plan.build == ()


def test_changed_secrets_replace_the_gateways_alone_or_with_other_reasons(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    plan = plan_of(old, host_with(old), old, secrets_changed=True)
    assert actions(plan) == {
        "gateway": (REPLACE, ("secrets changed",)),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }

    new = compile_env(changed(route_change), "production")
    plan = plan_of(new, host_with(old), old, secrets_changed=True)
    assert actions(plan)["gateway"] == (
        REPLACE,
        ("runtime.json changed (routes.chat)", "secrets changed"),
    )


@pytest.mark.parametrize(("env", "before", "after"), [("production", 2, 1), ("staging", 1, 3)])
def test_a_replica_count_change_replaces_the_gateways(
    compile_env: Compile, env: str, before: int, after: int
) -> None:
    old = compile_env(base_config(), env)
    new = compile_env(changed(lambda c: c["environments"][env].update(replicas=after)), env)
    plan = plan_of(new, host_with(old), old)
    assert actions(plan) == {
        "gateway": (REPLACE, (f"replicas {before} -> {after}",)),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert new.manifest.to_json()["services"]["gateway"]["slots"]["b"] == [
        f"gateway-b{i}" for i in range(1, after + 1)
    ]


def test_a_new_base_image_rebuilds_the_gateway_image_once(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")),
        "production",
    )
    plan = plan_of(new, host_with(old), old, image=False)
    assert actions(plan) == {
        "gateway": (
            REBUILD,
            (
                "Dockerfile (base image) changed",
                f"image {new.manifest.to_json()['image']} is not on the host",
            ),
        ),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert plan.build == ("gateway-b1",)


def test_a_runtime_code_change_rebuilds(
    compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    old = compile_env(base_config(), "staging")
    with (code / "app.py").open("a") as f:
        f.write("\n# a code change\n")
    new = compile_env(base_config(), "staging")
    image = new.manifest.to_json()["image"]
    assert image != old.manifest.to_json()["image"]
    plan = plan_of(new, host_with(old), old, image=False)
    assert actions(plan)["gateway"] == (
        REBUILD,
        ("runtime/ code changed", f"image {image} is not on the host"),
    )
    assert plan.build == ("gateway-b1",)


def test_a_dependency_change_rebuilds_naming_requirements(
    compile_env: Compile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = runtime_copy(tmp_path, monkeypatch)
    old = compile_env(base_config(), "staging")
    with (code / "requirements.txt").open("a") as f:
        f.write("six==1.16.0\n")
    new = compile_env(base_config(), "staging")
    # requirements.txt lives in runtime/ but is hashed on its own: only it is named.
    assert actions(plan_of(new, host_with(old), old, image=False))["gateway"] == (
        REBUILD,
        ("requirements.txt changed", f"image {new.manifest.to_json()['image']} is not on the host"),
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("dockerfile", "Dockerfile (base image) changed"),
        ("runtime", "runtime/ code changed"),
        ("requirements", "requirements.txt changed"),
    ],
)
def test_a_rebuild_names_the_image_input_that_changed(
    compile_env: Compile, key: str, reason: str
) -> None:
    old = compile_env(base_config(), "production")
    manifest = old.manifest.to_json()
    manifest["image_inputs"][key] = "sha256:" + "f" * 64
    manifest["services"]["gateway"]["image"] = "sha256:" + "e" * 64
    manifest["image"] = "hello-gateway-production/gateway:eeeeeeeeeeee"
    plan = plan_of(old, host_with(old), old, manifest=manifest, image=False)
    assert actions(plan) == {
        "gateway": (REBUILD, (reason, f"image {manifest['image']} is not on the host")),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert plan.build == ("gateway-b1",)


def test_a_rebuild_whose_image_is_already_on_the_host_is_not_built_again(
    compile_env: Compile,
) -> None:
    """Images are named by the hash of their inputs: say, the one of the release a rollback brings
    back."""
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")),
        "production",
    )
    plan = plan_of(new, host_with(old), old, image=True)
    assert actions(plan)["gateway"] == (
        REPLACE,
        (
            "Dockerfile (base image) changed",
            f"image {new.manifest.to_json()['image']} is already on the host (not built again)",
        ),
    )
    assert plan.build == ()


def test_a_missing_image_turns_a_replace_into_a_rebuild(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(changed(route_change), "staging")
    image = new.manifest.to_json()["image"]
    assert image == old.manifest.to_json()["image"]
    plan = plan_of(new, host_with(old), old, image=False)
    assert actions(plan)["gateway"] == (
        REBUILD,
        ("runtime.json changed (routes.chat)", f"image {image} is not on the host"),
    )
    assert plan.build == ("gateway-b1",)


@pytest.mark.parametrize(
    ("state", "health", "said"),
    [
        ("exited", "none", "is exited"),
        ("restarting", "starting", "is restarting"),
        ("running", "unhealthy", "is unhealthy"),
    ],
)
def test_a_stopped_or_unhealthy_gateway_is_replaced(
    compile_env: Compile, state: str, health: str, said: str
) -> None:
    old = compile_env(base_config(), "production")
    a1, a2 = gateways(old)
    host = host_with(old, containers=[a1, replace(a2, state=state, health=health), proxy(old)])
    plan = plan_of(old, host, old)
    assert actions(plan) == {
        "gateway": (REPLACE, (f"hello-gateway-production-gateway-a2-1 {said}",)),
        "proxy": (RELOAD, ("the gateways move to slot b",)),
    }
    assert (plan.live_slot, plan.target_slot, plan.build) == ("a", "b", ())


def test_a_missing_replica_is_named(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    plan = plan_of(old, host_with(old, containers=[gateways(old)[0], proxy(old)]), old)
    assert actions(plan)["gateway"] == (REPLACE, ("1 of 2 gateways run",))


def test_a_slot_whose_gateways_all_stopped_serves_nothing_new_ones_start_and_the_stopped_go(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    stopped = gateways(old, state="exited", health="none")
    plan = plan_of(old, host_with(old, containers=[*stopped, proxy(old)]), old)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (RELOAD, ("the gateways move to slot a",)),
        "gateway (slot a)": (REMOVE, ("not served by the proxy (left by an interrupted deploy)",)),
    }
    assert (plan.live_slot, plan.live_release, plan.target_slot) == (None, None, "a")
    assert plan.stale == tuple(stopped)


def test_gateways_of_two_releases_are_replaced(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    a1, a2 = gateways(old)
    host = host_with(old, containers=[a1, replace(a2, release=NEW), proxy(old)])
    host.manifests[NEW] = old.manifest
    plan = plan_of(old, host, old)
    assert actions(plan)["gateway"] == (REPLACE, ("its containers run different releases",))
    assert plan.live_release == NEW  # the newer of the two


def test_a_running_release_without_a_manifest_is_replaced(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    host = host_with(old)
    host.manifests.clear()
    assert actions(plan_of(old, host)) == {
        "gateway": (REPLACE, (f"running release {OLD} has no manifest on the host",)),
        "proxy": (
            RECREATE,
            (f"running release {OLD} has no manifest on the host (a short interruption)",),
        ),
    }


def test_containers_we_do_not_own_are_never_planned_for_and_refuse_the_deploy(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    foreign = replace(gateways(old)[0], id="f" * 64, name="intruder-1", owned=False)
    foreign_proxy = replace(proxy(old), id="e" * 64, name="intruder-2", owned=False)
    host = HostState(
        Paths("/srv/switchyard", old.compose_project),
        exists=False,
        containers=[foreign, foreign_proxy],
    )

    plan = plan_of(old, host)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (CREATE, ("not running yet",)),
    }
    assert (plan.stale, plan.legacy) == ((), ())
    with pytest.raises(DeployError) as err:
        check_ownership(host)
    assert (
        "the compose project 'hello-gateway-staging' on this host is already used by containers "
        "that Switchyard does not own for this environment: intruder-1 (ffffffffffff), intruder-2 "
        "(eeeeeeeeeeee)" in str(err.value)
    )


# -- which slot is live ------------------------------------------------------------------


def test_the_live_slot_is_the_one_that_answered_then_the_proxy_configs_then_the_only_one_running(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    both = host_with(old, "a", [*gateways(old, "a"), *gateways(old, "b", NEW), proxy(old)])
    b1 = gateways(old, "b", NEW)[0]
    assert live_slot(both, b1) == "b"  # answered through the proxy: it serves
    assert live_slot(both, None) == "a"  # else what the live haproxy.cfg names
    assert (
        live_slot(replace(both, proxy_live=None), None) is None
    )  # two slots and nothing says which
    only_b = host_with(old, "a", [*gateways(old, "b"), proxy(old)])
    assert live_slot(only_b, None) == "b"  # the config names a slot with no gateways
    assert live_slot(replace(only_b, proxy_live=None), None) == "b"
    stopped_a = host_with(old, "a", [*gateways(old, "a", state="exited"), proxy(old)])
    assert live_slot(stopped_a, None) is None
    assert live_slot(empty_host(old), None) is None
    assert (other_slot("a"), other_slot("b"), other_slot(None)) == ("b", "a", "a")


def test_gateways_the_proxy_does_not_serve_are_removed(compile_env: Compile) -> None:
    """A deploy interrupted between starting the new gateways and the cut-over leaves them."""
    old = compile_env(base_config(), "production")
    left = gateways(old, "b", NEW, health="starting")
    host = host_with(old, "a", [*gateways(old, "a"), *left, proxy(old)])
    plan = plan_of(old, host, old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (UNCHANGED, ()),
        "gateway (slot b)": (REMOVE, ("not served by the proxy (left by an interrupted deploy)",)),
    }
    assert (plan.noop, plan.stale, plan.changed) == (False, tuple(left), [])
    assert [s.service for s in plan.removed] == ["gateway (slot b)"]
    assert (plan.live_slot, plan.target_slot, plan.live_release) == ("a", "a", OLD)

    # After the cut-over (the new ones answer), it is the old slot that is left over.
    host.manifests[NEW] = old.manifest
    plan = plan_of(old, host, old, serving=left[0])
    assert plan.live_slot == "b" and plan.stale == tuple(gateways(old, "a"))
    assert actions(plan)["gateway (slot a)"][0] == REMOVE
    assert actions(plan)["proxy"] == (
        RELOAD,
        ("haproxy.cfg changed (runtime.proxy)",),
    )  # its config still names a


def test_with_both_slots_running_and_nothing_saying_which_serves_both_are_replaced(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "staging")
    host = host_with(
        old, "a", [*gateways(old, "a"), *gateways(old, "b"), proxy(old)], live_config=False
    )
    plan = plan_of(old, host, old)
    assert actions(plan) == {
        "gateway": (CREATE, ("not running yet",)),
        "proxy": (RELOAD, ("the gateways move to slot a",)),
        "gateway (slot a/b)": (
            REMOVE,
            ("not served by the proxy (left by an interrupted deploy)",),
        ),
    }
    assert len(plan.stale) == 2


def test_a_first_deploy_interrupted_before_the_proxy_started_is_finished(
    compile_env: Compile,
) -> None:
    staging = compile_env(base_config(), "staging")
    started = gateways(staging, "a", OLD)
    host = HostState(
        Paths("/srv/switchyard", staging.compose_project),
        exists=True,
        releases=[OLD],
        containers=started,
        manifests={OLD: staging.manifest},
    )
    plan = plan_of(staging, host, staging)
    assert actions(plan) == {"gateway": (UNCHANGED, ()), "proxy": (CREATE, ("not running yet",))}
    assert (plan.live_slot, plan.target_slot, plan.live_release, plan.stale) == ("a", "a", OLD, ())


def test_the_layout_before_the_proxy_is_replaced_and_its_services_removed(
    compile_env: Compile,
) -> None:
    production = compile_env(base_config(), "production")
    earlier = legacy(production, "edge", "gateway")
    old_manifest = {
        "services": {
            "gateway": {
                "image": "sha256:" + "3" * 64,
                "config": "x",
                "definition": "y",
                "replicas": 2,
            },
            "edge": {"image": "sha256:" + "3" * 64, "config": "x", "definition": "z"},
        }
    }
    host = HostState(
        Paths("/srv/switchyard", production.compose_project),
        exists=True,
        current=OLD,
        releases=[OLD],
        containers=earlier,
        manifests={},
    )
    # The deployer reads no manifest of an earlier layout (it has no schema_version).
    assert release_manifest(json.dumps(old_manifest)) is None
    plan = plan_of(production, host)
    assert actions(plan) == {
        "gateway": (
            CREATE,
            (
                "replaces the gateway of an earlier Switchyard (one short interruption: the proxy "
                "takes over its port)",
            ),
        ),
        "proxy": (CREATE, ("not running yet",)),
        "edge": (REMOVE, ("not part of this release (an earlier Switchyard's layout)",)),
        "gateway (earlier layout)": (
            REMOVE,
            ("not part of this release (an earlier Switchyard's layout)",),
        ),
    }
    assert (plan.legacy, plan.stale, plan.live_slot, plan.target_slot) == (
        tuple(earlier),
        (),
        None,
        "a",
    )
    assert plan.service("gateway").action == CREATE and plan.gateways_change
    # The JSON document and the history key the services by name: none hides another.
    assert {s.service: s.as_json()["action"] for s in plan.services}["gateway"] == "create"


def test_an_earlier_service_left_beside_the_new_layout_is_removed(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    edge = legacy(old, "edge")
    plan = plan_of(old, host_with(old, containers=[*gateways(old), proxy(old), *edge]), old)
    assert actions(plan) == {
        "gateway": (UNCHANGED, ()),
        "proxy": (UNCHANGED, ()),
        "edge": (REMOVE, ("not part of this release (an earlier Switchyard's layout)",)),
    }
    assert plan.legacy == tuple(edge) and not plan.noop
