"""Deploy steps as data: small frozen objects with `describe()` (what `--plan` prints) and
`run(ctx)` (what a deploy does). Commands are built by `deployer.commands`.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from deployer import commands as cmd
from deployer.bundle import Bundle, DeployError
from deployer.hosts import CommandFailed, Host
from deployer.output import Progress, first_line
from deployer.plan import Plan
from deployer.secrets import SecretsFile
from deployer.state import Container, Paths, containers, read_state


@dataclass
class Context:
    """What steps act on. Mutable on purpose: steps record what they did for the history."""

    host: Host
    bundle: Bundle
    paths: Paths
    out: Progress
    secrets: SecretsFile | None = None
    tarball: bytes = b""


class Step(Protocol):
    def describe(self) -> str: ...

    def run(self, ctx: Context) -> None: ...


@dataclass(frozen=True)
class UploadRelease:
    release_id: str
    release_dir: str
    size: int

    def describe(self) -> str:
        return f"upload release {self.release_id} ({self.size / 1024:.0f} KiB) to {self.release_dir}"

    def run(self, ctx: Context) -> None:
        tmp = f"{ctx.paths.releases}/.{self.release_id}.tar.gz"  # releases/ exists: the lock made it
        ctx.host.write(tmp, ctx.tarball, 0o600)
        ctx.host.run(cmd.unpack_release(tmp, self.release_dir))


@dataclass(frozen=True)
class WriteSecrets:
    path: str
    names: tuple[str, ...]

    def describe(self) -> str:
        listed = ", ".join(self.names) or "no values"
        return f"write {self.path} (0600): {listed} (values from the operator's sources, not shown)"

    def run(self, ctx: Context) -> None:
        assert ctx.secrets is not None
        ctx.host.write(self.path + ".new", ctx.secrets.content, 0o600)
        ctx.host.run(cmd.replace_if_changed(self.path + ".new", self.path))


@dataclass(frozen=True)
class CheckCompose:
    project: str
    compose_file: str

    def argv(self) -> list[str]:
        return cmd.compose_config_check(self.project, self.compose_file)

    def describe(self) -> str:
        return f"validate the compose file on the host: {shlex.join(self.argv()[self.argv().index('docker'):])}"

    def run(self, ctx: Context) -> None:
        res = ctx.host.run(self.argv(), check=False)
        if not res.ok:
            raise DeployError(f"the compose file of this release is not valid on the host: {first_line(res.stderr or res.stdout)}")


@dataclass(frozen=True)
class RemoveServices:
    services: tuple[str, ...]
    container_ids: tuple[str, ...]

    def describe(self) -> str:
        return f"remove our containers of services no longer in the config: {', '.join(self.services)} ({len(self.container_ids)} containers)"

    def run(self, ctx: Context) -> None:
        if self.container_ids:
            ctx.host.run(cmd.serialised(ctx.paths.op_lock, cmd.stop_and_remove(self.container_ids)))


@dataclass(frozen=True)
class ComposeUp:
    project: str
    compose_file: str
    services: tuple[str, ...]
    build: bool
    timeout_s: float = 1800.0

    def argv(self) -> list[str]:
        return cmd.compose_up(self.project, self.compose_file, self.services, build=self.build)

    def describe(self) -> str:
        what = "build the image and (re)create" if self.build else "(re)create"
        shown = self.argv()[self.argv().index("docker"):]
        return f"{what} {', '.join(self.services)}: {shlex.join(shown)}"

    def run(self, ctx: Context) -> None:
        try:
            ctx.host.run(cmd.serialised(ctx.paths.op_lock, self.argv()), timeout=self.timeout_s)
        except CommandFailed as exc:
            detail = (exc.result.stderr.strip() or exc.result.stdout.strip()).splitlines()[-6:]
            raise DeployError("docker compose up failed:\n  " + "\n  ".join(ctx.out.clean(d) for d in detail)) from exc


@dataclass(frozen=True)
class WaitHealthy:
    """Every container of `services` from `release_id` running and healthy, and the port answering."""

    release_id: str
    services: tuple[str, ...]
    replicas: tuple[tuple[str, int], ...]
    port: int
    timeout_s: float

    def describe(self) -> str:
        return f"wait up to {self.timeout_s:.0f} s for {', '.join(self.services)} to be healthy and http://127.0.0.1:{self.port}/readyz to answer 200"

    def run(self, ctx: Context) -> None:
        deadline = time.monotonic() + self.timeout_s
        want = dict(self.replicas)
        status = "no container yet"
        while True:
            found = [c for c in containers(ctx.host, ctx.paths, ctx.bundle.config.project, ctx.bundle.env)
                     if c.owned and c.service in self.services and c.release == self.release_id]
            broken = [c for c in found if c.state in ("exited", "dead", "restarting") or c.health == "unhealthy"]
            if broken:
                raise DeployError(self._why(ctx, broken[0]))
            counts = {s: sum(1 for c in found if c.service == s and c.state == "running") for s in self.services}
            short = [s for s in self.services if counts[s] < want.get(s, 1)]
            probe = ctx.host.http_get(self.port, "/readyz")
            port_ok = probe is not None and probe[0] == 200
            starting = [c for c in found if c.health not in ("healthy", "none")]
            # Docker's first health check runs one interval after start; a 200 from /readyz on
            # the published port proves the container behind it is serving, so accept that for
            # the container that owns the port (a single gateway, or the edge).
            front = "edge" if "edge" in want or any(c.service == "edge" for c in found) else "gateway"
            pending = [c for c in starting if not (port_ok and c.service == front and want.get(c.service, 1) == 1)]
            if not short and not pending and port_ok:
                return
            parts = []
            if short:
                parts.append(", ".join(f"{s}: {counts[s]}/{want.get(s, 1)} running" for s in short))
            if pending:
                parts.append(", ".join(f"{c.name} {c.health}" for c in pending))
            # What the gateway itself says (a 503 names what it misses) is the useful part.
            parts.append(f"/readyz answered {probe[0]}: {first_line(probe[1].decode(errors='replace'))[:300]}" if probe
                         else f"nothing answers on 127.0.0.1:{self.port}")
            status = "; ".join(parts)
            if time.monotonic() > deadline:
                raise DeployError(f"not healthy within {self.timeout_s:.0f} s ({status})")
            time.sleep(0.3)

    def _why(self, ctx: Context, c: Container) -> str:
        if c.state != "running":
            what = f"{c.name} is {c.state}" + (f" (exit code {c.exit_code})" if c.exit_code else "")
        else:
            what = f"{c.name} is unhealthy" + (f": {first_line(c.health_log)}" if c.health_log else "")
        tail = ctx.host.run(cmd.logs(c.id, 8), check=False)
        lines = [ln for ln in (tail.stdout + tail.stderr).strip().splitlines() if ln.strip()][-4:]
        return ctx.out.clean(what + ("; its last log lines:\n    " + "\n    ".join(lines) if lines else ""))


@dataclass(frozen=True)
class MakeCurrent:
    release_id: str

    def describe(self) -> str:
        return f"point current -> releases/{self.release_id}"

    def run(self, ctx: Context) -> None:
        ctx.host.run(cmd.point_current(ctx.paths.env_dir, self.release_id))


@dataclass(frozen=True)
class Prune:
    """Keep the newest `keep` good releases, the live one and any a container still uses."""

    keep: int

    def describe(self) -> str:
        return f"keep the last {self.keep} releases and their images; remove older ones of this environment only"

    def run(self, ctx: Context) -> None:
        state = read_state(ctx.host, ctx.paths.root, ctx.paths.compose_project, ctx.bundle.config.project, ctx.bundle.env)
        in_use = {c.release for c in state.containers if c.owned and c.release}
        good = [r for r in state.releases if r not in state.failed]
        keep = set(good[-self.keep:]) | in_use | ({state.current} if state.current else set())
        drop = [r for r in state.releases if r not in keep]
        kept_images: set[str] = set()
        dropped_images: set[str] = set()
        for rid in state.releases:
            manifest = state.manifests.get(rid)
            image = manifest.get("image") if manifest else None
            if image:
                (kept_images if rid in keep else dropped_images).add(str(image))
        for rid in drop:
            ctx.host.run(cmd.remove_release(ctx.paths.env_dir, rid))
        for image in sorted(dropped_images - kept_images):
            if image.startswith(ctx.bundle.compose_project + "/"):
                ctx.host.run(cmd.remove_image(image), check=False)  # in use elsewhere: stays


@dataclass(frozen=True)
class Record:
    """Append one line to the environment's deploy history."""

    entry: dict[str, Any] = field(hash=False, compare=False)

    def describe(self) -> str:
        return "record the deploy in history.jsonl (who, when, git commit, config hash, services changed, result)"

    def run(self, ctx: Context) -> None:
        line = json.dumps(self.entry, sort_keys=True) + "\n"
        ctx.host.run(cmd.append_line(ctx.paths.history), stdin=line.encode())


def plan_steps(bundle: Bundle, paths: Paths, release_id: str, plan: Plan, *, secrets_names: tuple[str, ...], secrets_changed: bool, tar_size: int) -> list[Step]:
    """The steps a deploy of `plan` runs, in order (without the history record)."""
    steps: list[Step] = [UploadRelease(release_id, paths.release(release_id), tar_size)]
    if secrets_changed:
        steps.append(WriteSecrets(paths.secrets, secrets_names))
    compose_file = paths.compose_file(release_id)
    steps.append(CheckCompose(bundle.compose_project, compose_file))
    if plan.removed:
        ids = tuple(c.id for s in plan.removed for c in s.running)
        steps.append(RemoveServices(tuple(s.service for s in plan.removed), ids))
    changed = tuple(s.service for s in plan.changed)
    if changed:
        steps.append(ComposeUp(bundle.compose_project, compose_file, changed, plan.build))
        replicas = tuple((s, int(bundle.manifest["replicas"]) if s == "gateway" else 1) for s in changed)
        steps.append(WaitHealthy(release_id, changed, replicas, bundle.port, float(bundle.manifest["health_timeout_s"])))
    steps.append(MakeCurrent(release_id))
    return steps
