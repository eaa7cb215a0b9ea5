"""Deploy steps as data: small frozen objects with `describe()` (what `--plan` prints) and
`run(ctx)` (what a deploy does). Commands are built by `deployer.commands`.

A release goes live in three moves (docs/deploy.md): its gateways start in the slot that is
not live and must become ready (`StartGateways`, `WaitReady`); the proxy is pointed at them
(`CutOver`: a reload, connections are never dropped); the old slot is drained and stopped
(`Drain`). Until `CutOver`, nothing that serves has been touched.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from compiler.manifest import image_references
from deployer import commands as cmd
from deployer import interrupts
from deployer.bundle import Bundle, DeployError
from deployer.hosts import CommandFailed, Host
from deployer.output import Progress, first_line
from deployer.secrets_env import SecretsFile
from deployer.state import (
    Container,
    Paths,
    ProxyHeader,
    containers,
    read_files,
    read_state,
    readyz_instance,
)

GATEWAY_PORT = 8000
POLL_S = 0.25
CUTOVER_TIMEOUT_S = 30.0
# `docker stop` of a gateway waits up to its compose stop_grace_period (its longest request
# plus 25 s to end what still runs and write the last records: compiler/render.py
# gateway_stop_grace_s), which is at most 3625 s (runtime.request_timeout_s <= 3600); plus a
# minute for docker itself.
STOP_TIMEOUT_S = 3625 + 60
# Answers in a row from the new gateways through the proxy before the cut-over counts as done.
CUTOVER_CONFIRMATIONS = 3
PREPARE, STARTED, CUTOVER, LIVE = "prepare", "started", "cutover", "live"


@dataclass
class StepContext:
    """What steps act on, and what they have done so far (for the history, and for putting
    things back when a deploy fails or is interrupted)."""

    host: Host
    bundle: Bundle
    paths: Paths
    out: Progress
    secrets: SecretsFile | None = None
    tarball: bytes = b""
    phase: str = PREPARE
    staged: str = ""  # haproxy.cfg.next was written, with this header line
    secrets_replaced: bool = False  # secrets.env was replaced (the one before is secrets.env.prev)
    promoted: bool = False  # ... and became haproxy.cfg (the one before is haproxy.cfg.prev)
    proxy_id: str | None = None  # the proxy container that was reloaded or created
    workers_before: tuple[str, ...] = ()  # HAProxy workers before the reload (they drain)
    new_ids: tuple[str, ...] = ()  # the new release's gateway containers

    def owned(self) -> list[Container]:
        return [
            c
            for c in containers(self.host, self.paths, self.bundle.config.project, self.bundle.env)
            if c.owned
        ]


class Step(Protocol):
    def describe(self) -> str: ...

    def run(self, ctx: StepContext) -> None: ...


def _docker_part(argv: list[str]) -> str:
    return shlex.join(argv[argv.index("docker") :])


@dataclass(frozen=True)
class UploadRelease:
    release_id: str
    release_dir: str
    size: int

    def describe(self) -> str:
        return (
            f"upload release {self.release_id} ({self.size / 1024:.0f} KiB) to {self.release_dir}"
        )

    def run(self, ctx: StepContext) -> None:
        tmp = f"{ctx.paths.releases}/.{self.release_id}.tar.gz"  # hidden, never a release's name
        try:
            ctx.host.write(tmp, ctx.tarball, 0o600)
            ctx.host.run(cmd.unpack_release(tmp, self.release_dir))
        except CommandFailed as exc:
            raise DeployError(
                f"the upload to {ctx.host.name} failed: "
                f"{first_line(exc.result.stderr or exc.result.stdout) or exc}"
            ) from exc


@dataclass(frozen=True)
class WriteSecrets:
    path: str
    names: tuple[str, ...]

    def describe(self) -> str:
        listed = ", ".join(self.names) or "no values"
        return f"write {self.path} (0600): {listed} (values from the operator's sources, not shown)"

    def run(self, ctx: StepContext) -> None:
        assert ctx.secrets is not None
        ctx.host.write(self.path + ".new", ctx.secrets.content, 0o600)
        res = ctx.host.run(cmd.replace_if_changed(self.path + ".new", self.path))
        ctx.secrets_replaced = res.stdout.strip() == "changed"


@dataclass(frozen=True)
class CheckCompose:
    project: str
    compose_file: str

    def argv(self) -> list[str]:
        return cmd.compose_config_check(self.project, self.compose_file)

    def describe(self) -> str:
        return f"validate the compose file on the host: {_docker_part(self.argv())}"

    def run(self, ctx: StepContext) -> None:
        res = ctx.host.run(self.argv(), check=False)
        if not res.ok:
            raise DeployError(
                "the compose file of this release is not valid on the host: "
                f"{first_line(res.stderr or res.stdout)}"
            )


@dataclass(frozen=True)
class BuildImages:
    project: str
    compose_file: str
    services: tuple[str, ...]  # one service per image
    images: tuple[str, ...]
    timeout_s: float = 1800.0

    def argv(self) -> list[str]:
        return cmd.compose_build(self.project, self.compose_file, self.services)

    def describe(self) -> str:
        return f"build {', '.join(self.images)}: {_docker_part(self.argv())}"

    def run(self, ctx: StepContext) -> None:
        try:
            ctx.host.run(cmd.serialised(ctx.paths.op_lock, self.argv()), timeout=self.timeout_s)
        except CommandFailed as exc:
            detail = (exc.result.stderr.strip() or exc.result.stdout.strip()).splitlines()[-6:]
            raise DeployError(
                "docker compose build failed:\n  " + "\n  ".join(ctx.out.clean(d) for d in detail)
            ) from exc


@dataclass(frozen=True)
class StageProxyConfig:
    """Copy the release's haproxy-<slot>.cfg beside the live one and have HAProxy check it."""

    release_id: str
    slot: str
    config: str  # its sha256, as the manifest has it
    image: str
    check_in: str | None  # the running proxy (same image), else a throwaway container

    def describe(self) -> str:
        where = (
            "in the running proxy" if self.check_in else f"in a throwaway {self.image} container"
        )
        return f"stage the proxy config for slot {self.slot} and check it with `haproxy -c` {where}"

    def run(self, ctx: StepContext) -> None:
        source = f"{ctx.paths.release(self.release_id)}/proxy/haproxy-{self.slot}.cfg"
        header = ProxyHeader(self.release_id, self.slot, self.config).line()
        ctx.host.run(cmd.stage_proxy_config(source, ctx.paths.proxy_dir, header))
        ctx.staged = header
        res = ctx.host.run(
            cmd.check_proxy_config(ctx.paths.proxy_dir, self.image, self.check_in), check=False
        )
        if not res.ok:
            lines = [
                ln
                for ln in (res.stdout + res.stderr).splitlines()
                if "ALERT" in ln or "error" in ln.lower()
            ][-5:]
            raise DeployError(
                "the proxy's own check (`haproxy -c`) refused this release's config:\n  "
                + "\n  ".join(
                    ctx.out.clean(ln) for ln in lines or (res.stdout + res.stderr).splitlines()[-5:]
                )
            )


def _old_workers_left(ctx: StepContext, proxy: str, before: tuple[str, ...]) -> list[str]:
    """Workers of `before` still alive (all but the newest when `before` is empty)."""
    res = ctx.host.run(cmd.proxy_workers(proxy), check=False)
    if not res.ok:
        return []  # no proxy process to ask: nothing can route to the old gateways through it
    pids = res.stdout.split()
    if before:
        return [p for p in pids if p in before]
    return sorted(pids, key=int)[:-1]


def _wait_drained(
    ctx: StepContext, proxy: str | None, before: tuple[str, ...], timeout_s: float
) -> str:
    """Wait until the proxy's old workers are gone (every connection that could reach the old
    gateways has closed), up to `timeout_s`. Returns what happened, for the output."""
    if proxy is None:
        return "no proxy routes to them"
    t0 = time.monotonic()
    left: list[str] = []
    while time.monotonic() - t0 < timeout_s:
        interrupts.check()
        left = _old_workers_left(ctx, proxy, before)
        if not left:
            return f"their connections finished in {time.monotonic() - t0:.1f} s"
        time.sleep(0.5)
    return (
        f"drain timeout ({timeout_s:.0f} s) reached with connections still open (old proxy "
        f"workers {', '.join(left)})"
    )


@dataclass(frozen=True)
class RemoveGateways:
    """Drain (wait for the proxy's old workers, at most `drain_s`) and remove gateways that do
    not serve: the other slot's, left by an interrupted deploy."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    drain_s: float

    def describe(self) -> str:
        return (
            f"remove gateways the proxy does not serve ({', '.join(self.names)}), once no "
            "connection can reach them"
        )

    def run(self, ctx: StepContext) -> None:
        proxy = next((c.id for c in ctx.owned() if c.service == "proxy" and c.running), None)
        ctx.out.say(f"   {_wait_drained(ctx, proxy, (), self.drain_s)}")
        ctx.host.run(
            cmd.serialised(ctx.paths.op_lock, cmd.stop_and_remove(self.ids)), timeout=STOP_TIMEOUT_S
        )


@dataclass(frozen=True)
class RemoveServices:
    """Remove containers of ours that belong to no service of the release (by id)."""

    services: tuple[str, ...]
    container_ids: tuple[str, ...]

    def describe(self) -> str:
        return (
            "remove our containers of services no longer in the config: "
            f"{', '.join(self.services)} ({len(self.container_ids)} containers)"
        )

    def run(self, ctx: StepContext) -> None:
        if self.container_ids:
            ctx.host.run(
                cmd.serialised(ctx.paths.op_lock, cmd.stop_and_remove(self.container_ids)),
                timeout=STOP_TIMEOUT_S,
            )


@dataclass(frozen=True)
class StartGateways:
    project: str
    compose_file: str
    services: tuple[str, ...]
    slot: str

    def argv(self) -> list[str]:
        return cmd.compose_up(self.project, self.compose_file, self.services)

    def describe(self) -> str:
        return (
            f"start the new gateways in slot {self.slot} beside the live ones: "
            f"{_docker_part(self.argv())}"
        )

    def run(self, ctx: StepContext) -> None:
        ctx.phase = STARTED
        try:
            ctx.host.run(cmd.serialised(ctx.paths.op_lock, self.argv()), timeout=600)
        except CommandFailed as exc:
            detail = (exc.result.stderr.strip() or exc.result.stdout.strip()).splitlines()[-6:]
            raise DeployError(
                "docker compose up failed:\n  " + "\n  ".join(ctx.out.clean(d) for d in detail)
            ) from exc


@dataclass(frozen=True)
class WaitReady:
    """Every new gateway running and answering /readyz with 200, asked directly (its address on
    the project's network), not through the proxy and not by Docker's health check interval."""

    release_id: str
    services: tuple[str, ...]
    timeout_s: float

    def describe(self) -> str:
        return (
            f"wait up to {self.timeout_s:.0f} s for {', '.join(self.services)} to answer "
            "/readyz with 200"
        )

    def run(self, ctx: StepContext) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            interrupts.check()
            found = [
                c
                for c in ctx.owned()
                if c.compose_service in self.services and c.release == self.release_id
            ]
            ctx.new_ids = tuple(c.id for c in found)
            broken = [
                c
                for c in found
                if c.state in ("exited", "dead", "restarting") or c.health == "unhealthy"
            ]
            if broken:
                raise DeployError(self._why(ctx, broken[0]))
            status: dict[str, str] = {}
            for name in self.services:
                c = next((c for c in found if c.compose_service == name), None)
                if c is None:
                    status[name] = "no container yet"
                elif not c.running or not c.ip:
                    status[name] = c.state
                else:
                    probe = ctx.host.http_get(GATEWAY_PORT, "/readyz", timeout=2.0, addr=c.ip)
                    status[name] = (
                        (
                            "ready"
                            if probe[0] == 200
                            else f"/readyz answered {probe[0]}: "
                            f"{first_line(probe[1].decode(errors='replace'))[:300]}"
                        )
                        if probe
                        else "not answering yet"
                    )
            if all(v == "ready" for v in status.values()):
                return
            if time.monotonic() > deadline:
                raise DeployError(
                    f"not ready within {self.timeout_s:.0f} s "
                    f"({'; '.join(f'{k}: {v}' for k, v in status.items())})"
                )
            time.sleep(POLL_S)

    def _why(self, ctx: StepContext, c: Container) -> str:
        if not c.running:
            what = f"{c.name} is {c.state}" + (f" (exit code {c.exit_code})" if c.exit_code else "")
        else:
            what = f"{c.name} is unhealthy" + (
                f": {first_line(c.health_log)}" if c.health_log else ""
            )
        tail = ctx.host.run(cmd.logs(c.id, 8), check=False)
        lines = [ln for ln in (tail.stdout + tail.stderr).strip().splitlines() if ln.strip()][-4:]
        return ctx.out.clean(
            what + ("; its last log lines:\n    " + "\n    ".join(lines) if lines else "")
        )


def confirm_serving(
    ctx: StepContext, port: int, new_ids: tuple[str, ...], timeout_s: float
) -> None:
    """Until the environment's port answers from the new gateways, CUTOVER_CONFIRMATIONS times in
    a row (each a new connection: new connections are the ones the new config takes)."""
    deadline = time.monotonic() + timeout_s
    streak, last = 0, "nothing answered"
    while streak < CUTOVER_CONFIRMATIONS:
        interrupts.check()
        instance, status = readyz_instance(ctx.host, port, timeout=2.0)
        if instance and status == 200 and any(i.startswith(instance) for i in new_ids):
            streak += 1
            continue
        streak = 0
        last = (
            f"gateway {instance} (not a new one) answered {status}"
            if instance
            else f"the port answered {status}"
            if status
            else f"nothing answers on 127.0.0.1:{port}"
        )
        if time.monotonic() > deadline:
            raise DeployError(
                f"the proxy did not switch to the new gateways within {timeout_s:.0f} s ({last})"
            )
        time.sleep(POLL_S)


@dataclass(frozen=True)
class CutOver:
    """Point the proxy at the new gateways: reload it (no connection is dropped), or create it
    (first deploy) / recreate it (its image or definition changed: a short interruption)."""

    mode: str  # "reload" or "create"
    project: str
    compose_file: str
    slot: str
    port: int
    replace_ids: tuple[
        str, ...
    ] = ()  # containers that hold the port and must go first (an old proxy layout)

    def describe(self) -> str:
        if self.mode == "reload":
            return (
                f"cut over: make slot {self.slot}'s config live and reload the proxy (in-flight "
                "connections keep going)"
            )
        return (
            f"cut over: (re)create the proxy on 127.0.0.1:{self.port} with slot {self.slot}'s "
            "config: "
            f"{_docker_part(cmd.compose_up(self.project, self.compose_file, ['proxy']))}"
        )

    def run(self, ctx: StepContext) -> None:
        ctx.phase = CUTOVER
        if self.mode == "reload":
            proxy = next((c for c in ctx.owned() if c.service == "proxy" and c.running), None)
            if proxy is None:
                raise DeployError(
                    "the proxy stopped running during the deploy; deploy again (it will be "
                    "recreated)"
                )
            res = ctx.host.run(cmd.reload_proxy(ctx.paths.proxy_dir, proxy.id))
            ctx.promoted, ctx.proxy_id = True, proxy.id
            ctx.workers_before = tuple(
                next(
                    (ln.split()[1:] for ln in res.stdout.splitlines() if ln.startswith("workers")),
                    [],
                )
            )
        else:
            ctx.host.run(cmd.promote_proxy_config(ctx.paths.proxy_dir))
            ctx.promoted = True
            if self.replace_ids:
                ctx.host.run(
                    cmd.serialised(ctx.paths.op_lock, cmd.stop_and_remove(self.replace_ids)),
                    timeout=STOP_TIMEOUT_S,
                )
            try:
                ctx.host.run(
                    cmd.serialised(
                        ctx.paths.op_lock,
                        cmd.compose_up(self.project, self.compose_file, ["proxy"]),
                    ),
                    timeout=300,
                )
            except CommandFailed as exc:
                detail = (exc.result.stderr.strip() or exc.result.stdout.strip()).splitlines()[-6:]
                raise DeployError(
                    "docker compose up of the proxy failed:\n  "
                    + "\n  ".join(ctx.out.clean(d) for d in detail)
                ) from exc
            ctx.proxy_id = next(
                (c.id for c in ctx.owned() if c.service == "proxy" and c.running), None
            )
        confirm_serving(ctx, self.port, ctx.new_ids, CUTOVER_TIMEOUT_S)
        ctx.phase = LIVE


@dataclass(frozen=True)
class MakeCurrent:
    release_id: str

    def describe(self) -> str:
        return f"point current -> releases/{self.release_id}"

    def run(self, ctx: StepContext) -> None:
        ctx.host.run(cmd.point_current(ctx.paths.env_dir, self.release_id))


@dataclass(frozen=True)
class Drain:
    """Let the old gateways finish what they serve, then stop them: wait until the proxy's old
    workers (the ones from before the reload) have closed their last connection, at most
    `timeout_s`, then `docker stop` (SIGTERM, the gateway's graceful shutdown) and remove."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    timeout_s: float

    def describe(self) -> str:
        return (
            f"drain the old gateways ({', '.join(self.names)}): their requests and streams finish "
            f"(at most {self.timeout_s:.0f} s), then stop and remove them"
        )

    def run(self, ctx: StepContext) -> None:
        # A proxy that was recreated took the old connections with it: nothing to wait for.
        proxy = ctx.proxy_id if ctx.workers_before else None
        ctx.out.say(f"   {_wait_drained(ctx, proxy, ctx.workers_before, self.timeout_s)}")
        ctx.host.run(
            cmd.serialised(ctx.paths.op_lock, cmd.stop_and_remove(self.ids)), timeout=STOP_TIMEOUT_S
        )


@dataclass(frozen=True)
class Prune:
    """Keep the newest `keep` good releases, the live one and any a container still uses;
    remove the others, their images (ours only, never forced), and half-written uploads."""

    keep: int

    def describe(self) -> str:
        return (
            f"keep the last {self.keep} releases and their images; remove older ones of this "
            "environment only"
        )

    def run(self, ctx: StepContext) -> None:
        state = read_state(
            ctx.host,
            ctx.paths.root,
            ctx.paths.compose_project,
            ctx.bundle.config.project,
            ctx.bundle.env,
        )
        in_use = {c.release for c in state.containers if c.owned and c.release}
        good = [r for r in state.releases if r not in state.failed]
        keep = set(good[-self.keep :]) | in_use | ({state.current} if state.current else set())
        drop = [r for r in state.releases if r not in keep]
        manifests = read_files(
            ctx.host, [f"{ctx.paths.release(r)}/manifest.json" for r in state.releases]
        )
        kept_images: set[str] = set()
        dropped_images: set[str] = set()
        for rid in state.releases:
            images = image_references(manifests.get(f"{ctx.paths.release(rid)}/manifest.json"))
            (kept_images if rid in keep else dropped_images).update(images)
        for rid in drop:
            ctx.host.run(cmd.remove_release(ctx.paths.env_dir, rid))
        if state.leftovers:
            ctx.host.run(cmd.remove_leftovers(ctx.paths.releases, state.leftovers), check=False)
        for image in sorted(dropped_images - kept_images):
            if image.startswith(ctx.bundle.compose_project + "/"):
                ctx.host.run(cmd.remove_image(image), check=False)  # in use elsewhere: stays


@dataclass(frozen=True)
class RecordHistory:
    """Append one line to the environment's deploy history (and clear the lock's holder
    file: this deploy has finished, whatever its result)."""

    entry: dict[str, Any] = field(hash=False, compare=False)

    def describe(self) -> str:
        return (
            "record the deploy in history.jsonl (who, when, git commit, config hash, services "
            "changed, result)"
        )

    def run(self, ctx: StepContext) -> None:
        line = json.dumps(self.entry, sort_keys=True) + "\n"
        ctx.host.run(cmd.append_line(ctx.paths.history, ctx.paths.holder), stdin=line.encode())
