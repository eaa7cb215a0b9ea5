"""A deploy's steps are computed once: `--plan` prints exactly the steps the run executes.

In process, against a `target: local` host whose `docker` is a stand-in (no Docker engine):
every step's `run` is replaced by one that records the step, so the real flow (plan, lock,
claims, activate, history) goes through and nothing is changed by the steps themselves.
For each plan — nothing to do, a config change, an image change, a proxy-only change, a
rollback, the recovery of a deploy interrupted during the drain — the numbered lines that
`--plan` prints (a rollback: the plan it prints before it runs) are the steps that ran, in
order; after them the run only records its history line (and prunes after a success).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deployer import flow
from deployer import steps as step_module
from deployer.bundle import Bundle
from tests.deploy_units_support import (
    NEW,
    OLD,
    LocalHostSetup,
    answering,
    route_change,
    write_config,
)

RECORD = (
    "record the deploy in history.jsonl (who, when, git commit, config hash, services changed, "
    "result)"
)
PRUNE = "keep the last 5 releases and their images; remove older ones of this environment only"
STEP_LINE = re.compile(r"^  (\d+)\. (.*)$")


def step_classes() -> list[type]:
    """Every step type of deployer.steps (a frozen dataclass with `describe` and `run`)."""
    return [
        cls
        for cls in vars(step_module).values()
        if isinstance(cls, type)
        and cls.__module__ == step_module.__name__
        and dataclasses.is_dataclass(cls)
        and callable(getattr(cls, "describe", None))
        and callable(getattr(cls, "run", None))
    ]


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalHostSetup:
    setup = LocalHostSetup(tmp_path)
    monkeypatch.setenv("PATH", f"{setup.bin}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("SY_FAKE_DOCKER_STATE", str(setup.state_file))
    monkeypatch.setenv("SY_FAKE_DOCKER_LOG", str(setup.log))
    monkeypatch.setenv("SWITCHYARD_DEPLOY_USER", "tester")
    # One release id for the plan and the run: the same clock second.
    monkeypatch.setattr(flow, "utcnow", lambda: datetime(2026, 1, 3, tzinfo=UTC))
    return setup


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The steps run, as their `describe()` lines, in order; none of them does anything."""
    record: list[str] = []

    def recording(step: Any, ctx: Any) -> None:
        record.append(step.describe())

    for cls in step_classes():
        monkeypatch.setattr(cls, "run", recording)
    return record


def numbered(text: str) -> list[str]:
    """The `Steps:` lines of a printed plan, checked to be numbered 1, 2, 3, ..."""
    lines = text.splitlines()
    if "Steps:" not in lines:
        return []
    found = [STEP_LINE.match(ln) for ln in lines[lines.index("Steps:") + 1 :]]
    steps = []
    for i, m in enumerate(found, 1):
        if m is None:
            break
        assert int(m.group(1)) == i
        steps.append(m.group(2))
    return steps


def options(local: LocalHostSetup, **kw: Any) -> flow.Options:
    return flow.Options(env="dev", config=str(local.repo / "gateway.yaml"), lock_wait_s=0, **kw)


def plan_then_run(
    local: LocalHostSetup,
    ran: list[str],
    capsys: pytest.CaptureFixture[str],
    *,
    noop: bool = False,
) -> list[str]:
    """`--plan`, then the deploy; asserts the run executed exactly the printed steps (and, but
    for a plan that changes nothing, printed the same plan itself). Returns the steps."""
    assert flow.deploy(options(local, plan=True)) == 0
    planned = numbered(capsys.readouterr().out)
    assert ran == []
    code = flow.deploy(options(local, yes=True))
    err = capsys.readouterr().err
    assert code == 0, err
    if not noop:
        assert numbered(err) == planned
    # After the steps: the history line, and pruning after a release went live.
    assert ran == [*planned, RECORD, *([] if noop else [PRUNE])], err
    return planned


def change(local: LocalHostSetup, mutate: Callable[[dict[str, Any]], None]) -> None:
    mutate(local.config)
    write_config(local.repo, local.config)


def add_gateway(local: LocalHostSetup, bundle: Bundle, release: str, slot: str) -> str:
    c = local.container(bundle, release, "gateway", f"gateway-{slot}1", slot=slot)
    local.containers.append(c)
    local.save()
    return str(c["Id"])


def test_nothing_to_do_runs_no_step(
    local: LocalHostSetup, ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    local.deployed(OLD)
    assert plan_then_run(local, ran, capsys, noop=True) == []
    assert ran == [RECORD]


def test_nothing_to_do_after_a_lost_cut_over_points_current_and_the_plan_says_so(
    local: LocalHostSetup, ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = local.deployed(OLD)
    current = local.env_dir(bundle) / "current"
    current.unlink()
    current.symlink_to("releases/20251231T000000Z-09090909")
    gateway = next(c["Id"] for c in local.containers if "gateway" in c["Name"])
    with answering(local.port, gateway[:12]):
        steps = plan_then_run(local, ran, capsys, noop=True)
    assert steps == [f"point current -> releases/{OLD}"]


def test_a_config_change_uploads_starts_the_other_slot_cuts_over_and_drains(
    local: LocalHostSetup, ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    local.deployed(OLD)
    change(local, route_change)
    steps = plan_then_run(local, ran, capsys)
    assert [s.split(" ", 1)[0] for s in steps] == [
        "upload",
        "validate",
        "stage",
        "start",
        "wait",
        "cut",
        "point",
        "drain",
    ]


def test_an_image_change_builds_first(
    local: LocalHostSetup, ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    local.deployed(OLD)
    change(local, lambda c: c.setdefault("runtime", {}).update(base_image="python:3.12-slim"))
    steps = plan_then_run(local, ran, capsys)
    assert steps[2].startswith("build ") and "gateway:" in steps[2]
    assert any(s.startswith("start the new gateways in slot b") for s in steps)


def test_a_proxy_only_change_reloads_the_proxy_and_starts_no_gateway(
    local: LocalHostSetup, ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    local.deployed(OLD)
    change(
        local,
        lambda c: (
            c.setdefault("runtime", {}).setdefault("proxy", {}).update(request_head_timeout_s=5)
        ),
    )
    steps = plan_then_run(local, ran, capsys)
    assert [s.split(" ", 1)[0] for s in steps] == ["upload", "validate", "stage", "cut", "point"]


def test_the_recovery_of_a_deploy_interrupted_in_the_drain_removes_the_old_slot_only(
    local: LocalHostSetup, ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = local.deployed(OLD)
    add_gateway(local, bundle, "20251231T000000Z-09090909", "b")  # not drained
    steps = plan_then_run(local, ran, capsys)
    assert [s.split(" ", 1)[0] for s in steps] == ["remove", "point"]
    assert steps[1] == f"point current -> releases/{OLD}"  # no new release


def test_a_rollback_runs_exactly_the_steps_it_prints(
    local: LocalHostSetup, ran: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    local.deployed(OLD)
    # Then NEW (a routing change) went live in slot b and the old slot was drained.
    change(local, route_change)
    new = local.bundle()
    env_dir = local.env_dir(new)
    for name, text in new.files.items():
        (env_dir / "releases" / NEW / name).parent.mkdir(parents=True, exist_ok=True)
        (env_dir / "releases" / NEW / name).write_text(text)
    (env_dir / "current").unlink()
    (env_dir / "current").symlink_to(f"releases/{NEW}")
    header = f"# switchyard-live: release={NEW} slot=b "
    header += f"config={new.manifest.services.proxy.config['b']}"
    (env_dir / "proxy" / "haproxy.cfg").write_text(header + "\n" + new.files["proxy/haproxy-b.cfg"])
    with (env_dir / "history.jsonl").open("a") as history:
        entry = {"action": "deploy", "release": NEW, "previous": OLD, "result": "ok"}
        history.write(json.dumps(entry) + "\n")
    local.containers = [c for c in local.containers if "gateway" not in c["Name"]]
    gateway = add_gateway(local, new, NEW, "b")
    with answering(local.port, gateway[:12]):
        code = flow.rollback(options(local, yes=True))
    err = capsys.readouterr().err
    assert code == 0, err
    printed = numbered(err)
    assert [s.split(" ", 1)[0] for s in printed] == [
        "validate",
        "stage",
        "start",
        "wait",
        "cut",
        "point",
        "drain",
    ]
    assert f"releases/{OLD}/compose.yaml" in printed[0]
    assert printed[5] == f"point current -> releases/{OLD}"
    assert ran == [*printed, RECORD, PRUNE]
