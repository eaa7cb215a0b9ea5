"""Bring one release live — a deploy's or a rollback's — and put things back when that fails
or is interrupted.

The steps of a deploy, of the recovery of an interrupted one and of a rollback are computed
in one place (`release_steps`) and either printed (`--plan`: each step's `describe()`) or
run (`activate`), always the same list.
Until the cut-over nothing that serves is touched, so a failure or an interrupt before it
only has to remove what the attempt started: the live release keeps serving. After the
cut-over the new release is live; what is left (the drain) is finished by the next deploy if
this one cannot.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from compiler.manifest import Manifest
from deployer import commands as cmd
from deployer import interrupts
from deployer.bundle import DeployError
from deployer.hosts import ConnectionLost, HostError
from deployer.plan import CREATE, RECREATE, UNCHANGED, DeployPlan
from deployer.state import HostState, Paths
from deployer.steps import (
    CUTOVER,
    LIVE,
    PREPARE,
    BuildImages,
    CheckCompose,
    CutOver,
    Drain,
    MakeCurrent,
    RemoveGateways,
    RemoveServices,
    StageProxyConfig,
    StartGateways,
    Step,
    StepContext,
    UploadRelease,
    WaitReady,
    WriteSecrets,
    confirm_serving,
)

Action = Literal["deploy", "rollback"]


@dataclass(frozen=True)
class Target:
    """The release to bring live: its id and manifest (already on the host, or uploaded first)."""

    release_id: str
    manifest: Manifest

    @property
    def port(self) -> int:
        return self.manifest.port


def recovers(plan: DeployPlan) -> bool:
    """What serves is this config already: a deploy only finishes what an interrupted one left
    behind (gateways the proxy no longer serves, an earlier layout's services), and uploads
    no new release: the live one stays the release that serves, and `current` names it."""
    return bool(plan.live_release) and not plan.gateways_change and plan.proxy_action == UNCHANGED


@dataclass(frozen=True)
class Upload:
    """A deploy's new release: its size, and the secret names to write first (None: the
    host's secrets file is the same, nothing is written)."""

    size: int
    secrets: tuple[str, ...] | None = None


def release_steps(
    action: Action,
    paths: Paths,
    target: Target,
    plan: DeployPlan,
    state: HostState,
    *,
    upload: Upload | None = None,
    live_healthy: bool = False,
) -> list[Step]:
    """Every step a deploy or rollback runs, in order: what `--plan` prints, and all that
    `activate` runs. The one place they are decided.

    - deploy, nothing changes (`plan.noop`): at most point `current` at the release that
      serves, when a deploy lost its connection after the cut-over (`live_healthy`: the
      environment answers healthy);
    - deploy recovering an interrupted one (`recovers`): `target` is the live release; only
      what the plan finds left over;
    - deploy of a new release: upload it (`upload`), write the secrets if they changed, check
      its compose file on the host, then make it live;
    - rollback: check the compose file of the release already on the host, then make it live.
    """
    rid = target.release_id
    if action == "deploy" and plan.noop:
        live = plan.live_release
        return [MakeCurrent(live)] if live and state.current != live and live_healthy else []
    steps: list[Step] = []
    if action == "deploy" and rid != plan.live_release:
        if upload is None:
            raise ValueError("a deploy of a new release needs its upload")
        steps.append(UploadRelease(rid, paths.release(rid), upload.size))
        if upload.secrets is not None:
            steps.append(WriteSecrets(paths.secrets, upload.secrets))
    if action == "rollback" or rid != plan.live_release:
        steps.append(CheckCompose(paths.compose_project, paths.compose_file(rid)))
    return steps + steps_for(paths, target, plan, state)


def steps_for(paths: Paths, target: Target, plan: DeployPlan, state: HostState) -> list[Step]:
    """The steps that make `target` live, given what runs (`state`) and the `plan` (the part
    of `release_steps` after the release is on the host)."""
    m = target.manifest
    cp, rid = paths.compose_project, target.release_id
    compose_file = paths.compose_file(rid)
    slot = plan.target_slot
    steps: list[Step] = []
    if plan.build:
        images = tuple(m.proxy_image if svc == "proxy" else m.image for svc in plan.build)
        steps.append(BuildImages(cp, compose_file, plan.build, images))
    proxy_action = plan.proxy_action
    cut_over = plan.gateways_change or proxy_action != UNCHANGED
    proxy = state.proxy()
    if cut_over:
        same_image = proxy is not None and proxy.running and proxy_action not in (CREATE, RECREATE)
        steps.append(
            StageProxyConfig(
                rid,
                slot,
                m.services.proxy.config[slot],
                m.proxy_image,
                proxy.id if same_image and proxy else None,
            )
        )
    drain_s = m.drain_timeout_s
    if plan.stale:
        steps.append(
            RemoveGateways(
                tuple(c.id for c in plan.stale), tuple(c.name for c in plan.stale), drain_s
            )
        )
    new_services = m.services.gateway.slots[slot]
    if plan.gateways_change:
        steps += [
            StartGateways(cp, compose_file, new_services, slot),
            WaitReady(rid, new_services, m.health_timeout_s),
        ]
    recreate = proxy_action in (CREATE, RECREATE)
    if cut_over:
        steps.append(
            CutOver(
                "create" if recreate else "reload",
                cp,
                compose_file,
                slot,
                target.port,
                tuple(c.id for c in plan.legacy) if recreate else (),
            )
        )
    steps.append(MakeCurrent(rid))
    old = state.gateways(plan.live_slot) if plan.gateways_change and plan.live_slot else []
    if old:
        steps.append(Drain(tuple(c.id for c in old), tuple(c.name for c in old), drain_s))
    if plan.legacy and not recreate:
        steps.append(
            RemoveServices(
                tuple(sorted({c.compose_service for c in plan.legacy})),
                tuple(c.id for c in plan.legacy),
            )
        )
    return steps


@dataclass(frozen=True)
class Outcome:
    result: str  # ok, failed, interrupted
    message: str | None  # why (failed / interrupted), or a note (ok)


@contextmanager
def _shielded() -> Iterator[None]:
    """No SIGINT/SIGTERM while putting things back (each command of it is bounded in time)."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_step(step: Step, ctx: StepContext) -> None:
    """Run one step, shown as its `describe()` line in the progress output."""
    with ctx.out.step(step.describe()):
        step.run(ctx)


def activate(
    ctx: StepContext,
    steps: list[Step],
    target: Target,
    plan: DeployPlan,
    state: HostState,
    *,
    mark_failed: bool,
) -> Outcome:
    """Run `steps`; on a failure or an interrupt before the cut-over, undo what they started."""
    if not plan.gateways_change:
        ctx.new_ids = tuple(c.id for c in state.gateways(plan.live_slot)) if plan.live_slot else ()
    try:
        with interrupts.deferred():
            for step in steps:
                interrupts.check()
                run_step(step, ctx)
    except ConnectionLost:
        raise
    except (DeployError, HostError) as exc:
        reason = (
            f"after the cut-over: {exc}"
            if ctx.phase == LIVE
            else f"release {target.release_id} failed: {exc}"
        )
        with _shielded():
            return _after_failure(ctx, steps, target, plan, reason, "failed", mark_failed)
    except KeyboardInterrupt:
        ctx.out.say(
            "!! interrupted: putting the host back in order (the live release keeps serving)"
        )
        with _shielded():
            return _after_failure(
                ctx,
                steps,
                target,
                plan,
                f"the {'rollback' if not mark_failed else 'deploy'} was interrupted",
                "interrupted",
                mark_failed,
            )
    if ctx.secrets_replaced:
        _quietly(ctx, None, cmd.drop_previous(ctx.paths.secrets))
    return Outcome("ok", None)


def _after_failure(
    ctx: StepContext,
    steps: list[Step],
    target: Target,
    plan: DeployPlan,
    reason: str,
    result: str,
    mark_failed: bool,
) -> Outcome:
    if ctx.phase == CUTOVER and _new_release_serves(ctx, target):
        ctx.phase = LIVE
    if ctx.phase == LIVE:
        # The new release serves: it stays. What is unfinished (the old gateways) the next
        # deploy finishes; `current` must name what serves.
        _quietly(ctx, MakeCurrent(target.release_id))
        if ctx.secrets_replaced:
            _quietly(ctx, None, cmd.drop_previous(ctx.paths.secrets))
        left = next((s for s in steps if isinstance(s, Drain)), None)
        note = (
            (
                f"release {target.release_id} is live; the old gateways ({', '.join(left.names)}) "
                "were left running "
                "to finish their requests, and the next deploy removes them"
            )
            if left
            else f"release {target.release_id} is live"
        )
        return Outcome(result if result == "interrupted" else "ok", f"{reason}\n{note}")
    undone = []
    if ctx.phase == CUTOVER and ctx.staged:
        # The promote may have happened although its command did not return (an interrupt).
        proxy = ctx.proxy_id or next(
            (c.id for c in ctx.owned() if c.service == "proxy" and c.running), None
        )
        _quietly(ctx, None, cmd.restore_proxy_config(ctx.paths.proxy_dir, proxy, ctx.staged))
        undone.append("the proxy's config was put back")
    if ctx.phase != PREPARE:
        new = [
            c
            for c in ctx.owned()
            if c.release == target.release_id
            and c.service == "gateway"
            and c.compose_service in target.manifest.services.gateway.slots[plan.target_slot]
        ]
        if new:
            _quietly(
                ctx,
                None,
                cmd.serialised(ctx.paths.op_lock, cmd.stop_and_remove([c.id for c in new])),
            )
            when = "" if ctx.phase == CUTOVER else " before taking any traffic"
            undone.append(f"its gateways ({', '.join(c.name for c in new)}) were removed{when}")
    if ctx.secrets_replaced:
        # The live gateways read secrets.env when they (re)start: give them back their own.
        _quietly(ctx, None, cmd.restore_previous(ctx.paths.secrets))
        undone.append("the secrets file was put back")
    if mark_failed:
        _quietly(ctx, None, cmd.mark_failed(ctx.paths.release(target.release_id)))
    live = plan.live_release
    serving = (
        f"release {live} keeps serving, untouched"
        if live
        else "nothing was serving before, and nothing serves now"
    )
    return Outcome(result, "\n".join([reason, *undone, serving]))


def _new_release_serves(ctx: StepContext, target: Target) -> bool:
    try:
        confirm_serving(ctx, target.port, ctx.new_ids, 5.0)
    except (DeployError, HostError):
        return False
    return True


def _quietly(ctx: StepContext, step: Step | None, argv: list[str] | None = None) -> None:
    """Run a clean-up command or step; report, never raise (the original error is the news)."""
    try:
        if step is not None:
            step.run(ctx)
        elif argv is not None:
            ctx.host.run(argv, timeout=120)
    except (DeployError, HostError) as exc:
        ctx.out.say(f"   (clean-up step failed: {exc})")
