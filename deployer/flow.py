"""The deploy, rollback, status and history of one environment, end to end.

deploy: validate -> compile -> connect -> lock -> read what runs -> plan -> claims -> upload ->
secrets -> compose up (changed services only) -> health -> current -> history -> prune -> unlock.
A failed health check brings the previous release back and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployer import claims
from deployer import commands as cmd
from deployer.bundle import Bundle, DeployError, load_bundle, operator, utcnow
from deployer.hosts import ConnectionLost, Held, Host, HostError, LocalHost, SSHHost
from deployer.output import Progress, first_line, table
from deployer.plan import Inputs, Plan, make_plan, parse_compose
from deployer.secrets import SecretsFile, secrets_file
from deployer.state import (
    Container,
    HostState,
    Paths,
    check_ownership,
    containers,
    image_present,
    parse_json,
    read_files,
    read_state,
    resolve_root,
)
from deployer.steps import (
    ComposeUp,
    Context,
    MakeCurrent,
    Prune,
    Record,
    RemoveServices,
    Step,
    WaitHealthy,
    plan_steps,
)

DEFAULT_LOCK_WAIT_S = 600.0


@dataclass(frozen=True)
class Options:
    env: str
    config: str = "gateway.yaml"
    plan: bool = False
    yes: bool = False
    json: bool = False
    identity: str | None = None
    known_hosts: str | None = None
    strict_host_keys: bool = False
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S   # 0: fail at once when another deploy holds the lock
    last: int = 20


def connect(bundle: Bundle, opts: Options, out: Progress) -> Host:
    m = bundle.manifest
    if m["target"] == "local":
        return LocalHost()
    strict = opts.strict_host_keys or os.environ.get("SWITCHYARD_SSH_STRICT_HOST_KEYS", "") not in ("", "0", "false", "no")
    return SSHHost(
        str(m["host"]), user=m.get("ssh_user"), port=int(m.get("ssh_port") or 22),
        identity=opts.identity or os.environ.get("SWITCHYARD_SSH_IDENTITY"),
        known_hosts=opts.known_hosts or os.environ.get("SWITCHYARD_SSH_KNOWN_HOSTS"),
        strict_host_keys=strict, say=out.say,
    )


def _now() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# the lock


def _holder(host: Host, paths: Paths) -> str:
    data = host.read(paths.holder)
    try:
        h = json.loads(data or b"{}")
        return f"{h['who']} ({h['action']} since {h['since']}, pid {h['pid']})"
    except (ValueError, KeyError, TypeError):
        return "another deploy"


def take_lock(host: Host, paths: Paths, out: Progress, action: str, wait_s: float) -> Held:
    """The environment's deploy lock; a second deploy waits for it or fails naming the holder."""
    info = json.dumps({"who": operator(), "action": action, "since": _now(), "pid": os.getpid()})
    held, output = host.hold(cmd.deploy_lock(paths.env_dir, paths.lock, None, paths.holder, info), "locked", timeout=30)
    if held is None and output.strip():
        raise DeployError(f"could not take the deploy lock {paths.lock}: {first_line(output)}")
    if held is None:
        holder = _holder(host, paths)
        if wait_s <= 0:
            raise DeployError(f"{paths.compose_project} is locked by {holder}; try again when it has finished (or leave out --no-wait to wait for it)")
        out.say(f"   waiting up to {wait_s:.0f} s for the lock held by {holder}")
        held, output = host.hold(cmd.deploy_lock(paths.env_dir, paths.lock, wait_s, paths.holder, info), "locked", timeout=wait_s + 30)
        if held is None:
            raise DeployError(f"gave up after {wait_s:.0f} s waiting for the lock held by {holder}")
    return held


# ---------------------------------------------------------------------------------------
# deploy


def _read_json(host: Host, path: str) -> dict[str, Any]:
    data = host.read(path)
    try:
        doc = json.loads(data) if data else {}
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}


def _inputs(host: Host, state: HostState, manifest: dict[str, Any], runtime: dict[str, Any], compose: dict[str, Any]) -> Inputs:
    """The plan's inputs: the wanted files, and the runtime.json / compose.yaml of the releases that run."""
    rids = sorted({str(c.release) for c in state.owned() if c.release})
    wanted = [f"{state.paths.release(r)}/{name}" for r in rids for name in ("runtime.json", "compose.yaml")]
    files = read_files(host, wanted)
    old_runtime = {r: parse_json(files.get(f"{state.paths.release(r)}/runtime.json")) or {} for r in rids}
    old_compose = {r: parse_compose(files.get(state.paths.compose_file(r))) for r in rids}
    return Inputs(manifest, runtime, compose, old_runtime, old_compose)


def _print_plan(out: Progress, bundle: Bundle, host: Host, plan: Plan, steps: list[Step], *, to_stdout: bool) -> None:
    lines = [
        f"Plan for {bundle.env} on {host.name} (compose project {bundle.compose_project}), "
        f"running now: {plan.deployed_release or 'nothing'}",
        plan.table(), "Steps:",
    ] + [f"  {i}. {s.describe()}" for i, s in enumerate(steps, 1)]
    text = "\n".join(lines)
    if to_stdout:
        print(out.clean(text), flush=True)
    else:
        out.say(text)


def _history_entry(bundle: Bundle, action: str, release: str | None, previous: str | None, plan: Plan, result: str, reason: str | None, seconds: float, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    m = manifest or bundle.manifest
    return {
        "action": action, "release": release, "previous": previous, "who": operator(), "when": _now(),
        "git_commit": bundle.git_commit, "config_hash": m.get("config_hash"), "source_sha256": (m.get("source") or {}).get("sha256"),
        "image": m.get("image"), "services": {s.service: s.action for s in plan.services},
        "result": result, "reason": reason, "seconds": round(seconds, 2),
    }


def _health(host: Host, port: int) -> str:
    probe = host.http_get(port, "/readyz")
    if probe is None:
        return "not answering"
    return "healthy" if probe[0] == 200 else f"unhealthy ({probe[0]}: {first_line(probe[1].decode(errors='replace'))[:200]})"


def _confirm(opts: Options, out: Progress) -> None:
    if opts.yes or opts.json or not sys.stdin.isatty():
        return
    out.stream.write(f"Deploy {opts.env}? [y/N] ")
    out.stream.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise DeployError("not confirmed; nothing was changed")


def _run_steps(ctx: Context, steps: list[Step]) -> None:
    for step in steps:
        with ctx.out.step(step.describe()):
            step.run(ctx)


def _recover(ctx: Context, state: HostState, plan: Plan, release_id: str, reason: str) -> tuple[str, str]:
    """After a failed release: bring back what ran before. Returns (result, message)."""
    host, paths = ctx.host, ctx.paths
    host.run(cmd.mark_failed(paths.release(release_id)), check=False)
    prev = plan.deployed_release
    touched = tuple(s.service for s in plan.services if s.changes)
    prev_manifest = state.manifests.get(prev) if prev else None
    if prev and prev_manifest:
        services = tuple(s for s in touched if s in prev_manifest["services"])
        # Services the failed release brought that the previous one did not have (replicas
        # 1 -> 2 adds `edge`, on the same port): remove them first, or the old one cannot start.
        extra = tuple(c.id for c in _containers_of(ctx, release_id) if c.service not in prev_manifest["services"])
        if extra:
            RemoveServices(tuple(sorted({s for s in touched if s not in prev_manifest["services"]})), extra).run(ctx)
        image = str(prev_manifest["image"])
        build = not image_present(host, [image])[image]
        replicas = tuple((s, int(prev_manifest["replicas"]) if s == "gateway" else 1) for s in services)
        steps: list[Step] = [
            ComposeUp(paths.compose_project, paths.compose_file(prev), services, build),
            WaitHealthy(prev, services, replicas, int(prev_manifest["port"]), float(prev_manifest["health_timeout_s"])),
            MakeCurrent(prev),
        ]
        ctx.out.say(f"!! {reason}\n!! rolling back to release {prev}")
        try:
            _run_steps(ctx, steps)
        except (DeployError, HostError) as exc:
            return "failed", f"{reason}\nthe rollback to release {prev} failed too: {exc}"
        return "rolled-back", f"{reason}\nrolled back to release {prev}, which is healthy again"
    ctx.out.say(f"!! {reason}\n!! nothing ran before this release: removing its containers")
    ids = tuple(c.id for c in _containers_of(ctx, release_id))
    if ids:
        RemoveServices(touched, ids).run(ctx)
    return "failed", f"{reason}\nnothing ran here before, so the new containers were removed"


def _containers_of(ctx: Context, release_id: str) -> list[Container]:
    return [c for c in containers(ctx.host, ctx.paths, ctx.bundle.config.project, ctx.bundle.env) if c.owned and c.release == release_id]


def _execute(ctx: Context, steps: list[Step], state: HostState, plan: Plan, release_id: str, action: str, doc: dict[str, Any], manifest: dict[str, Any]) -> int:
    """Run the steps; on failure recover; record history; prune. Returns the exit code."""
    bundle, out = ctx.bundle, ctx.out
    try:
        _run_steps(ctx, steps)
    except ConnectionLost:
        raise
    except (DeployError, HostError) as exc:
        result, message = _recover(ctx, state, plan, release_id, f"release {release_id} failed: {exc}")
        _record(ctx, _history_entry(bundle, action, release_id, plan.deployed_release, plan, result, message, out.elapsed(), manifest))
        doc.update(error=message, result=result, health=_health(ctx.host, int(manifest["port"])))
        out.finish(doc, f"{bundle.env}: {action} FAILED ({result}). {message}")
        return 1
    _record(ctx, _history_entry(bundle, action, release_id, plan.deployed_release, plan, "ok", None, out.elapsed(), manifest))
    try:
        _run_steps(ctx, [Prune(int(manifest["keep_releases"]))])
    except (DeployError, HostError) as exc:  # the release is live; a failed cleanup is only reported
        out.say(f"   (pruning old releases failed: {exc})")
    health = _health(ctx.host, int(manifest["port"]))
    doc.update(ok=True, result="ok", health=health)
    out.finish(doc, f"{bundle.env}: release {release_id} is live at http://127.0.0.1:{manifest['port']} ({health}); {out.elapsed():.1f} s")
    return 0


def _record(ctx: Context, entry: dict[str, Any]) -> None:
    with ctx.out.step(Record(entry).describe()):
        Record(entry).run(ctx)


@dataclass
class Session:
    """One run of deploy.py: its output, its result document, and what to close at the end."""

    opts: Options
    action: str
    out: Progress
    doc: dict[str, Any]
    host: Host | None = None
    held: Held | None = None

    def open(self, bundle: Bundle) -> tuple[Host, str | None]:
        """Connect to the environment's host; the deploy directory (None if absent, read-only runs)."""
        self.doc["url"] = bundle.url
        self.host = connect(bundle, self.opts, self.out)
        create = self.action == "deploy"
        return self.host, resolve_root(self.host, str(bundle.manifest["deploy_dir"]), create=create)

    def lock(self, paths: Paths) -> None:
        assert self.host is not None
        with self.out.step(f"take the deploy lock of {paths.compose_project}"):
            self.held = take_lock(self.host, paths, self.out, self.action, self.opts.lock_wait_s)


def _guarded(opts: Options, action: str, body: Callable[[Session], int]) -> int:
    """Run `body`; turn our errors into the final line / JSON and exit 1; always unlock and disconnect."""
    out = Progress(opts.env, json_mode=opts.json)
    doc: dict[str, Any] = {"ok": False, "environment": opts.env, "action": action, "release": None, "previous": None,
                           "url": None, "health": "unknown", "services": {}, "error": None}
    session = Session(opts, action, out, doc)
    try:
        return body(session)
    except ConnectionLost as exc:
        doc["error"] = str(exc)
        out.finish(doc, f"{opts.env}: {action} INTERRUPTED: {exc}. The lock went with the connection; "
                        f"run the {action} again: it plans from what actually runs and converges.")
        return 1
    except (DeployError, HostError) as exc:
        doc["error"] = str(exc)
        out.finish(doc, f"{opts.env}: {action} refused: {exc}")
        return 1
    finally:
        if session.held is not None:
            session.held.release()
        if session.host is not None:
            session.host.close()


def deploy(opts: Options) -> int:
    return _guarded(opts, "plan" if opts.plan else "deploy", _deploy)


def _deploy(session: Session) -> int:
    opts, out, doc = session.opts, session.out, session.doc
    with out.step(f"validate and compile {opts.config} for {opts.env}"):
        bundle = load_bundle(opts.config, opts.env)
        try:
            secrets: SecretsFile | None = secrets_file(bundle)
        except DeployError as exc:
            if not opts.plan:
                raise
            # A plan (say, in CI without the keys) still shows what would change; only the
            # secrets cannot be compared. The deploy itself would stop here.
            out.say(f"   note: {exc}; the plan cannot tell whether the secrets changed, and a deploy would refuse")
            secrets = None
    out.secrets = secrets.values() if secrets else ()
    with out.step(f"connect to {bundle.manifest['target']} host {bundle.manifest.get('host') or 'localhost'}"):
        host, root = session.open(bundle)
    paths = Paths(root or str(bundle.manifest["deploy_dir"]), bundle.compose_project)
    if not opts.plan:
        session.lock(paths)
    with out.step("read what runs on the host and plan"):
        image = str(bundle.manifest["image"])
        if root:
            state = read_state(host, paths.root, paths.compose_project, bundle.config.project, bundle.env,
                               image=image, secrets=secrets.content if secrets else None, claims=True)
        else:
            state = HostState(paths, False, image_present=image_present(host, [image])[image], secrets_same=False)
        check_ownership(state)
        changed_secrets = secrets is not None and not state.secrets_same
        present = bool(state.image_present)
        inputs = _inputs(host, state, bundle.manifest, json.loads(bundle.files["runtime.json"]), parse_compose(bundle.files["compose.yaml"]))
        plan = make_plan(inputs, state, image_present=present, secrets_changed=changed_secrets)
    doc["services"] = {s.service: s.as_json() for s in plan.services}
    doc["previous"] = plan.deployed_release
    with out.step("check the host's port and project claims"):
        if opts.plan:
            problems = claims.check(host, paths, bundle) if not root else claims.conflicts(
                bundle, claims.parse(state.claims, paths.claims), claims.parse_published(state.published))
            if problems:
                raise DeployError("this deploy would be refused: " + "; ".join(problems))
        elif not claims.settled(bundle, claims.parse(state.claims, paths.claims), claims.parse_published(state.published)):
            claims.claim(host, paths, bundle, operator(), _now())
    ctx = Context(host, bundle, paths, out, secrets)
    if plan.noop:
        return _unchanged(ctx, state, plan, opts, doc)
    release_id = bundle.release_id(utcnow())
    ctx.tarball = bundle.tarball()
    steps = plan_steps(bundle, paths, release_id, plan, secrets_names=secrets.names if secrets else (),
                       secrets_changed=changed_secrets, tar_size=len(ctx.tarball))
    doc["release"] = release_id
    doc["plan"] = [s.describe() for s in steps]
    _print_plan(out, bundle, host, plan, steps, to_stdout=opts.plan and not opts.json)
    if opts.plan:
        doc["ok"] = True
        out.finish(doc, f"{bundle.env}: plan only, nothing was changed ({len(plan.changed)} service(s) would change)")
        return 0
    _confirm(opts, out)
    return _execute(ctx, steps, state, plan, release_id, "deploy", doc, bundle.manifest)


def _unchanged(ctx: Context, state: HostState, plan: Plan, opts: Options, doc: dict[str, Any]) -> int:
    bundle, out = ctx.bundle, ctx.out
    live = plan.deployed_release
    doc.update(release=live, previous=live)
    health = _health(ctx.host, bundle.port)
    doc["health"] = health
    if opts.plan:
        if not opts.json:
            print(out.clean(f"Plan for {bundle.env} on {ctx.host.name}: nothing to do; release {live} is up to date.\n{plan.table()}"), flush=True)
        doc["ok"] = True
        out.finish(doc, f"{bundle.env}: plan only, nothing would change")
        return 0
    if live and state.current != live and health == "healthy":
        # A deploy that lost its connection after the restart: what runs is healthy, say so.
        _run_steps(ctx, [MakeCurrent(live)])
    _record(ctx, _history_entry(bundle, "deploy", live, live, plan, "unchanged", None, out.elapsed()))
    doc.update(ok=True, result="unchanged")
    out.finish(doc, f"{bundle.env}: nothing changed; release {live} is live at {bundle.url} ({health}); {out.elapsed():.1f} s")
    return 0


# ---------------------------------------------------------------------------------------
# rollback, status, history


def rollback(opts: Options) -> int:
    return _guarded(opts, "rollback", _rollback)


def _rollback(session: Session) -> int:
    opts, out, doc = session.opts, session.out, session.doc
    bundle = load_bundle(opts.config, opts.env)
    host, root = session.open(bundle)
    if root is None:
        raise DeployError(f"{bundle.env} was never deployed to {host.name}")
    paths = Paths(root, bundle.compose_project)
    session.lock(paths)
    with out.step("read what runs on the host and plan"):
        state = read_state(host, root, paths.compose_project, bundle.config.project, bundle.env)
        check_ownership(state)
        target = state.previous()
        if target is None:
            raise DeployError(f"no earlier release of {bundle.env} is on the host to roll back to (current: {state.current or 'none'})")
        files = read_files(host, [f"{paths.release(target)}/{n}" for n in ("manifest.json", "runtime.json", "compose.yaml")])
        manifest = parse_json(files[f"{paths.release(target)}/manifest.json"])
        if manifest is None:
            raise DeployError(f"release {target} has no manifest on the host; cannot roll back to it")
        image = str(manifest["image"])
        present = image_present(host, [image])[image]
        inputs = _inputs(host, state, manifest, parse_json(files[f"{paths.release(target)}/runtime.json"]) or {},
                         parse_compose(files[paths.compose_file(target)]))
        plan = make_plan(inputs, state, image_present=present, secrets_changed=False)
    doc.update(url=f"http://127.0.0.1:{manifest['port']}", release=target, previous=plan.deployed_release,
               services={s.service: s.as_json() for s in plan.services})
    ctx = Context(host, bundle, paths, out)
    steps: list[Step] = []
    if plan.removed:
        steps.append(RemoveServices(tuple(s.service for s in plan.removed), tuple(c.id for s in plan.removed for c in s.running)))
    changed = tuple(s.service for s in plan.changed)
    if changed:
        replicas = tuple((s, int(manifest["replicas"]) if s == "gateway" else 1) for s in changed)
        steps += [ComposeUp(paths.compose_project, paths.compose_file(target), changed, plan.build),
                  WaitHealthy(target, changed, replicas, int(manifest["port"]), float(manifest["health_timeout_s"]))]
    steps.append(MakeCurrent(target))
    _print_plan(out, bundle, host, plan, steps, to_stdout=False)
    _confirm(opts, out)
    return _execute(ctx, steps, state, plan, target, "rollback", doc, manifest)


def _read_history(host: Host, paths: Paths) -> list[dict[str, Any]]:
    entries = []
    for line in (host.read(paths.history) or b"").decode(errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def status(opts: Options) -> int:
    return _guarded(opts, "status", _status)


def _status(session: Session) -> int:
    opts, out, doc = session.opts, session.out, session.doc
    bundle = load_bundle(opts.config, opts.env)
    host, root = session.open(bundle)
    paths = Paths(root or str(bundle.manifest["deploy_dir"]), bundle.compose_project)
    state = read_state(host, paths.root, paths.compose_project, bundle.config.project, bundle.env) if root else HostState(paths, False)
    history = _read_history(host, paths) if root else []
    health = _health(host, bundle.port) if state.containers else "not deployed"
    services: dict[str, dict[str, Any]] = {}
    for c in state.containers:
        entry = services.setdefault(c.service, {"running": 0, "releases": []})
        entry["running"] += c.state == "running"
        if c.release and c.release not in entry["releases"]:
            entry["releases"].append(c.release)
    doc.update(ok=True, release=state.current, health=health, last=history[-1] if history else None, containers={}, services=services)
    for c in state.containers:
        doc["containers"].setdefault(c.service, []).append(
            {"id": c.short_id, "name": c.name, "state": c.state, "health": c.health, "started_at": c.started_at,
             "release": c.release, "owned": c.owned})
    if not opts.json:
        rows = [("SERVICE", "CONTAINER", "STATE", "HEALTH", "STARTED", "RELEASE")] + [
            (c.service, c.short_id, c.state, c.health, c.started_at[:19], c.release or "?") for c in state.containers]
        print(f"{bundle.env} on {host.name}, compose project {bundle.compose_project}")
        print(table(rows) if state.containers else "  no containers")
        if history:
            last = history[-1]
            print(f"last: {last.get('action')} {last.get('result')} by {last.get('who')} at {last.get('when')}")
    out.finish(doc, f"{bundle.env}: release {state.current or 'none'} at {bundle.url} ({health})")
    return 0


def _short_commit(commit: Any) -> str:
    text = str(commit or "-")
    return text[:12] + ("+dirty" if text.endswith("+dirty") else "")


def history(opts: Options) -> int:
    return _guarded(opts, "history", _history)


def _history(session: Session) -> int:
    opts, out, doc = session.opts, session.out, session.doc
    bundle = load_bundle(opts.config, opts.env)
    host, root = session.open(bundle)
    entries = _read_history(host, Paths(root, bundle.compose_project))[-opts.last:] if root else []
    doc.update(ok=True, entries=entries)
    if not opts.json:
        rows = [("WHEN", "ACTION", "RESULT", "RELEASE", "WHO", "COMMIT", "CHANGED")] + [
            (str(e.get("when")), str(e.get("action")), str(e.get("result")), str(e.get("release")), str(e.get("who")),
             _short_commit(e.get("git_commit")), ", ".join(f"{k}:{v}" for k, v in (e.get("services") or {}).items() if v != "unchanged") or "-")
            for e in entries]
        print(table(rows) if entries else f"{bundle.env}: no deploys recorded yet")
    out.finish(doc, f"{bundle.env}: {len(entries)} entries")
    return 0
