"""Deploy unit tests: steps: what a plan turns into (steps_for), in order.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

from typing import Any

from deployer.activate import Target, steps_for
from deployer.bundle import Bundle
from deployer.plan import (
    DeployPlan,
)
from deployer.state import (
    HostState,
    Paths,
)
from deployer.steps import (
    BuildImages,
    CheckCompose,
    CutOver,
    Drain,
    MakeCurrent,
    Prune,
    RecordHistory,
    RemoveGateways,
    RemoveServices,
    StageProxyConfig,
    StartGateways,
    Step,
    UploadRelease,
    WaitReady,
    WriteSecrets,
)
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    NEW,
    OLD,
    SCRUB,
    Compile,
    base_config,
    changed,
    empty_host,
    gateways,
    host_with,
    legacy,
    plan_of,
    proxy,
    proxy_change,
    route_change,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources


def steps_of(new: Bundle, plan: DeployPlan, host: HostState) -> list[Any]:
    return steps_for(
        Paths("/srv/switchyard", new.compose_project), Target(NEW, new.manifest), plan, host
    )


def compose_file(bundle: Bundle) -> str:
    return f"/srv/switchyard/{bundle.compose_project}/releases/{NEW}/compose.yaml"


def proxy_config(bundle: Bundle, slot: str) -> str:
    return str(bundle.manifest.services.proxy.config[slot])


def test_a_first_deploy_builds_stages_starts_waits_and_creates_the_proxy(
    compile_env: Compile,
) -> None:
    staging = compile_env(base_config(), "staging")
    cp, cf, m = staging.compose_project, compose_file(staging), staging.manifest.to_json()
    host = empty_host(staging)
    steps = steps_of(staging, plan_of(staging, host, image=False, proxy_image=False), host)
    assert steps == [
        BuildImages(cp, cf, ("gateway-a1", "proxy"), (m["image"], m["proxy_image"])),
        StageProxyConfig(
            NEW, "a", proxy_config(staging, "a"), m["proxy_image"], None
        ),  # checked in a throwaway proxy
        StartGateways(cp, cf, ("gateway-a1",), "a"),
        WaitReady(NEW, ("gateway-a1",), 60.0),
        CutOver("create", cp, cf, "a", 8200, ()),
        MakeCurrent(NEW),
    ]
    assert Target(NEW, staging.manifest).port == 8200
    # With the images there, nothing is built.
    assert [type(s) for s in steps_of(staging, plan_of(staging, host), host)] == [
        StageProxyConfig,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
    ]


def test_a_config_change_starts_the_other_slot_reloads_the_proxy_then_drains_the_old_slot(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(route_change), "production")
    cp, cf, m = new.compose_project, compose_file(new), new.manifest.to_json()
    host = host_with(old, "a")
    steps = steps_of(new, plan_of(new, host, old), host)
    live = gateways(old, "a")
    assert steps == [
        StageProxyConfig(
            NEW, "b", proxy_config(new, "b"), m["proxy_image"], proxy(old).id
        ),  # checked in the running proxy
        StartGateways(cp, cf, ("gateway-b1", "gateway-b2"), "b"),
        WaitReady(NEW, ("gateway-b1", "gateway-b2"), 60.0),
        CutOver("reload", cp, cf, "b", 8300, ()),
        MakeCurrent(NEW),
        Drain(tuple(c.id for c in live), tuple(c.name for c in live), 300.0),
    ]
    assert steps[1].argv() == [
        *SCRUB,
        "docker",
        "compose",
        "-p",
        cp,
        "-f",
        cf,
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "gateway-b1",
        "gateway-b2",
    ]


def test_a_rebuild_builds_the_new_slots_image_first(compile_env: Compile) -> None:
    old = compile_env(base_config(), "staging")
    new = compile_env(
        changed(lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim")),
        "staging",
    )
    host = host_with(old, "b")
    steps = steps_of(new, plan_of(new, host, old, image=False), host)
    assert steps[0] == BuildImages(
        new.compose_project, compose_file(new), ("gateway-a1",), (new.manifest.to_json()["image"],)
    )
    assert [type(s) for s in steps] == [
        BuildImages,
        StageProxyConfig,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
        Drain,
    ]
    assert steps[0].describe() == (
        f"build {new.manifest.to_json()['image']}: docker compose -p hello-gateway-staging "
        f"-f {compose_file(new)} build gateway-a1"
    )


def test_a_proxy_only_change_reloads_the_proxy_and_starts_no_gateway(compile_env: Compile) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(changed(proxy_change(client_idle_timeout_s=30)), "production")
    cp, cf, m = new.compose_project, compose_file(new), new.manifest.to_json()
    host = host_with(old, "b")
    assert steps_of(new, plan_of(new, host, old), host) == [
        StageProxyConfig(NEW, "b", proxy_config(new, "b"), m["proxy_image"], proxy(old).id),
        CutOver("reload", cp, cf, "b", 8300, ()),
        MakeCurrent(NEW),
    ]


def test_a_proxy_recreate_checks_the_config_in_a_throwaway_proxy_and_drains_nothing(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    new = compile_env(
        changed(lambda c: c["environments"]["production"].update(port=8301)), "production"
    )
    cp, cf, m = new.compose_project, compose_file(new), new.manifest.to_json()
    host = host_with(old)
    assert steps_of(new, plan_of(new, host, old), host) == [
        StageProxyConfig(NEW, "a", proxy_config(new, "a"), m["proxy_image"], None),
        CutOver("create", cp, cf, "a", 8301, ()),
        MakeCurrent(NEW),
    ]


def test_a_plan_with_nothing_to_change_only_points_current(compile_env: Compile) -> None:
    """(A deploy stops before this; a rollback to a release the same as the live one gets here.)"""
    old = compile_env(base_config(), "staging")
    host = host_with(old)
    plan = plan_of(old, host, old)
    assert plan.noop and steps_of(old, plan, host) == [MakeCurrent(NEW)]


def test_gateways_left_by_an_interrupted_deploy_are_removed_before_anything_starts(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    left = gateways(old, "b", NEW, state="exited")
    removal = RemoveGateways(tuple(c.id for c in left), tuple(c.name for c in left), 300.0)
    host = host_with(old, "a", [*gateways(old, "a"), *left, proxy(old)])
    assert steps_of(old, plan_of(old, host, old), host) == [removal, MakeCurrent(NEW)]

    new = compile_env(changed(route_change), "production")
    steps = steps_of(new, plan_of(new, host, old), host)
    assert [type(s) for s in steps] == [
        StageProxyConfig,
        RemoveGateways,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
        Drain,
    ]
    assert steps[1] == removal and steps[2].services == ("gateway-b1", "gateway-b2")
    assert steps[6].ids == tuple(c.id for c in gateways(old, "a"))


def test_the_layout_before_the_proxy_gives_its_port_to_the_new_proxy(compile_env: Compile) -> None:
    staging = compile_env(base_config(), "staging")
    earlier = legacy(staging, "edge", "gateway")
    host = HostState(
        Paths("/srv/switchyard", staging.compose_project),
        exists=True,
        current=OLD,
        releases=[OLD],
        containers=earlier,
        manifests={},
    )
    steps = steps_of(staging, plan_of(staging, host), host)
    assert [type(s) for s in steps] == [
        StageProxyConfig,
        StartGateways,
        WaitReady,
        CutOver,
        MakeCurrent,
    ]
    # The old containers hold the port: removed by the cut-over, right before the proxy is created.
    assert steps[3] == CutOver(
        "create",
        staging.compose_project,
        compose_file(staging),
        "a",
        8200,
        tuple(c.id for c in earlier),
    )


def test_an_earlier_service_beside_the_new_layout_is_removed_after_current(
    compile_env: Compile,
) -> None:
    old = compile_env(base_config(), "production")
    edge = legacy(old, "edge")
    host = host_with(old, containers=[*gateways(old), proxy(old), *edge])
    assert steps_of(old, plan_of(old, host, old), host) == [
        MakeCurrent(NEW),
        RemoveServices(("edge",), (edge[0].id,)),
    ]


def test_every_step_describes_itself_in_one_line() -> None:
    release = f"/srv/switchyard/hello-gateway-production/releases/{NEW}"
    cf = f"{release}/compose.yaml"
    steps: list[Step] = [
        UploadRelease(NEW, release, 78_848),
        WriteSecrets("/srv/switchyard/hello-gateway-production/secrets.env", ("VENDOR_API_KEY",)),
        WriteSecrets("/srv/switchyard/hello-gateway-production/secrets.env", ()),
        CheckCompose("hello-gateway-production", cf),
        BuildImages(
            "hello-gateway-production", cf, ("gateway-b1", "proxy"), ("p/gateway:1", "p/proxy:2")
        ),
        StageProxyConfig(NEW, "b", "sha256:1", "p/proxy:2", "c" * 64),
        StageProxyConfig(NEW, "b", "sha256:1", "p/proxy:2", None),
        RemoveGateways(("a" * 64,), ("hello-gateway-production-gateway-b1-1",), 300.0),
        StartGateways("hello-gateway-production", cf, ("gateway-b1", "gateway-b2"), "b"),
        WaitReady(NEW, ("gateway-b1", "gateway-b2"), 60.0),
        CutOver("reload", "hello-gateway-production", cf, "b", 8300),
        CutOver("create", "hello-gateway-production", cf, "a", 8300),
        MakeCurrent(NEW),
        Drain(
            ("a" * 64, "b" * 64),
            ("hello-gateway-production-gateway-a1-1", "hello-gateway-production-gateway-a2-1"),
            300.0,
        ),
        RemoveServices(("edge",), ("a" * 64,)),
        Prune(5),
        RecordHistory({"action": "deploy", "release": NEW}),
    ]
    for step in steps:
        text = step.describe()
        assert text.strip() == text and text and "\n" not in text, step
    assert [s.describe() for s in steps[:4]] == [
        f"upload release {NEW} (77 KiB) to {release}",
        "write /srv/switchyard/hello-gateway-production/secrets.env (0600): VENDOR_API_KEY (values "
        "from the operator's sources, not shown)",
        "write /srv/switchyard/hello-gateway-production/secrets.env (0600): no values (values from "
        "the operator's sources, not shown)",
        "validate the compose file on the host: docker compose -p hello-gateway-production -f "
        f"{cf} config --quiet",
    ]
    assert [s.describe() for s in steps[5:15]] == [
        "stage the proxy config for slot b and check it with `haproxy -c` in the running proxy",
        "stage the proxy config for slot b and check it with `haproxy -c` in a throwaway p/proxy:2 "
        "container",
        "remove gateways the proxy does not serve (hello-gateway-production-gateway-b1-1), once no "
        "connection can reach them",
        "start the new gateways in slot b beside the live ones: docker compose -p "
        f"hello-gateway-production -f {cf} "
        "up --detach --no-deps --no-build gateway-b1 gateway-b2",
        "wait up to 60 s for gateway-b1, gateway-b2 to answer /readyz with 200",
        "cut over: make slot b's config live and reload the proxy (in-flight connections keep "
        "going)",
        "cut over: (re)create the proxy on 127.0.0.1:8300 with slot a's config: docker compose -p "
        "hello-gateway-production "
        f"-f {cf} up --detach --no-deps --no-build proxy",
        f"point current -> releases/{NEW}",
        "drain the old gateways (hello-gateway-production-gateway-a1-1, "
        "hello-gateway-production-gateway-a2-1): their "
        "requests and streams finish (at most 300 s), then stop and remove them",
        "remove our containers of services no longer in the config: edge (1 containers)",
    ]
