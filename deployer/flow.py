"""The deploy, rollback, status and history of one environment, end to end.

deploy: validate -> compile -> connect -> lock -> read what runs -> plan -> claims -> upload ->
secrets -> build -> stage and check the proxy config -> start the new gateways beside the live
ones -> ready -> cut over -> current -> drain the old ones -> history -> prune -> unlock.
A release that never becomes ready never takes traffic; the live one keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compiler.manifest import Manifest
from deployer import claims
from deployer import commands as cmd
from deployer.activate import (
    Outcome,
    Target,
    Upload,
    activate,
    recovers,
    release_steps,
    run_step,
)
from deployer.bundle import Bundle, DeployError, load_bundle, operator, utcnow
from deployer.history import HistoryEntry, parse_history
from deployer.hosts import ConnectionLost, Held, Host, HostError, LocalHost, SSHHost
from deployer.lock_holder import LockHolder, describe_holder
from deployer.output import Progress, first_line, table
from deployer.plan import (
    DeployPlan,
    Inputs,
    live_release_of,
    live_slot,
    make_plan,
    parse_compose,
)
from deployer.rollback import rollback_target
from deployer.secrets_env import SecretsFile, secrets_file
from deployer.state import (
    HostState,
    Paths,
    check_ownership,
    host_manifest,
    parse_json,
    read_files,
    read_state,
    resolve_root,
    serving_gateway,
)
from deployer.steps import (
    Prune,
    RecordHistory,
    Step,
    StepContext,
)

DEFAULT_LOCK_WAIT_S = 600.0
EXIT = {"ok": 0, "unchanged": 0, "failed": 1, "interrupted": 130}


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
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S  # 0: fail at once when another deploy holds the lock
    last: int = 20


def connect(bundle: Bundle, opts: Options, out: Progress) -> Host:
    m = bundle.manifest
    if m.target == "local":
        return LocalHost()
    strict = opts.strict_host_keys or os.environ.get("SWITCHYARD_SSH_STRICT_HOST_KEYS", "") not in (
        "",
        "0",
        "false",
        "no",
    )
    return SSHHost(
        str(m.host),
        user=m.ssh_user,
        port=m.ssh_port or 22,
        identity=opts.identity or os.environ.get("SWITCHYARD_SSH_IDENTITY"),
        known_hosts=opts.known_hosts or os.environ.get("SWITCHYARD_SSH_KNOWN_HOSTS"),
        strict_host_keys=strict,
        say=out.say,
    )


def _now() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# the lock


def take_lock(
    host: Host, paths: Paths, out: Progress, info: LockHolder, wait_s: float
) -> tuple[Held, LockHolder | None]:
    """The environment's deploy lock; a second deploy waits for it or fails naming the holder.
    Returns the lock and the holder file of a deploy that never finished (None if none)."""
    text = info.to_json()
    held, output = host.hold(
        cmd.deploy_lock(paths.env_dir, paths.lock, None, paths.holder, text), "locked", timeout=30
    )
    if held is None and output.strip():
        raise DeployError(f"could not take the deploy lock {paths.lock}: {first_line(output)}")
    if held is None:
        holder = describe_holder(host.read(paths.holder))
        if wait_s <= 0:
            raise DeployError(
                f"{paths.compose_project} is locked by {holder}; try again when it has finished "
                "(or leave out --no-wait to wait for it)"
            )
        out.say(f"   waiting up to {wait_s:.0f} s for the lock held by {holder}")
        held, output = host.hold(
            cmd.deploy_lock(paths.env_dir, paths.lock, wait_s, paths.holder, text),
            "locked",
            timeout=wait_s + 30,
        )
        if held is None:
            raise DeployError(f"gave up after {wait_s:.0f} s waiting for the lock held by {holder}")
    previous = None
    for line in output.splitlines():
        if line.startswith("previous "):
            previous = LockHolder.parse(line[len("previous ") :])
    return held, previous


def _record_unfinished(host: Host, paths: Paths, previous: LockHolder, out: Progress) -> None:
    """History for a deploy that never finished (its connection went, or it was killed)."""
    entry: dict[str, object] = {
        "action": previous.action,
        "release": previous.release,
        "previous": None,
        "who": previous.who,
        "when": previous.since,
        "result": "interrupted",
        "reason": "it did not finish (its connection to the host was lost, or it was killed); "
        "recorded by the next deploy",
        "services": {},
        "seconds": None,
        "git_commit": previous.git_commit,
        "config_hash": previous.config_hash,
    }
    out.say(
        f"   note: the {entry['action']} by {entry['who']} since {entry['when']} did not finish; "
        "recorded it as interrupted"
    )
    host.run(
        cmd.append_line(paths.history), stdin=(json.dumps(entry, sort_keys=True) + "\n").encode()
    )


# ---------------------------------------------------------------------------------------
# shared pieces


def _inputs(
    host: Host,
    state: HostState,
    manifest: Manifest,
    runtime: dict[str, Any],
    compose: dict[str, Any],
) -> Inputs:
    """The plan's inputs: the wanted files, and the runtime.json / compose.yaml of the releases that
    run."""
    rids = sorted({str(c.release) for c in state.owned() if c.release})
    wanted = [
        f"{state.paths.release(r)}/{name}"
        for r in rids
        for name in ("runtime.json", "compose.yaml")
    ]
    files = read_files(host, wanted)
    old_runtime = {
        r: parse_json(files.get(f"{state.paths.release(r)}/runtime.json")) or {} for r in rids
    }
    old_compose = {r: parse_compose(files.get(state.paths.compose_file(r))) for r in rids}
    return Inputs(manifest, runtime, compose, old_runtime, old_compose)


def _plan_for(
    host: Host,
    state: HostState,
    manifest: Manifest,
    runtime: dict[str, Any],
    compose_text: str | None,
    secrets_changed: bool,
) -> DeployPlan:
    serving = None
    proxy = state.proxy()
    if proxy is not None and proxy.running:
        serving, _ = serving_gateway(host, manifest.port, state.gateways())
    inputs = _inputs(host, state, manifest, runtime, parse_compose(compose_text))
    return make_plan(
        inputs, state, images=state.images, secrets_changed=secrets_changed, serving=serving
    )


def _require_compose(state: HostState, host: Host) -> None:
    if not state.compose.lstrip("v").startswith("2."):
        found = (
            f"`docker compose version` printed {state.compose!r}"
            if state.compose
            else "`docker compose` is not available"
        )
        raise DeployError(
            f"Docker Compose v2 is not installed on {host.name} ({found}); install the Compose "
            "plugin there "
            "(Debian/Ubuntu: the docker-compose-plugin package, or the `docker compose` CLI "
            "plugin); nothing was changed"
        )


def _plan_text(env: str, host: Host, paths: Paths, plan: DeployPlan, steps: list[Step]) -> str:
    """The plan as printed: what serves, the services' actions, and the numbered steps (the
    ones a deploy runs; a plan that changes nothing lists them only when there are any)."""
    if plan.noop:
        lines = [
            f"Plan for {env} on {host.name}: nothing to do; "
            f"release {plan.live_release} is up to date.",
            plan.table(),
        ]
        if not steps:
            return "\n".join(lines)
    else:
        serving = (
            f"release {plan.live_release} (gateways in slot {plan.live_slot})"
            if plan.live_release
            else "nothing"
        )
        lines = [
            f"Plan for {env} on {host.name} (compose project {paths.compose_project}), "
            f"serving now: {serving}",
            plan.table(),
        ]
    return "\n".join([*lines, "Steps:", *_step_lines(steps)])


def _step_lines(steps: list[Step]) -> list[str]:
    """The `Steps:` lines of a plan: each step's `describe()`, numbered."""
    return [f"  {i}. {s.describe()}" for i, s in enumerate(steps, 1)]


def _history_entry(
    bundle: Bundle,
    action: str,
    release: str | None,
    previous: str | None,
    plan: DeployPlan,
    result: str,
    reason: str | None,
    seconds: float,
    manifest: Manifest,
) -> dict[str, Any]:
    return {
        "action": action,
        "release": release,
        "previous": previous,
        "who": operator(),
        "when": _now(),
        "git_commit": bundle.git_commit,
        "config_hash": manifest.config_hash,
        "source_sha256": manifest.source.sha256,
        "image": manifest.image,
        "proxy_image": manifest.proxy_image,
        "slot": plan.target_slot,
        "services": {s.service: s.action for s in plan.services},
        "result": result,
        "reason": reason,
        "seconds": round(seconds, 2),
    }


def _health(host: Host, port: int) -> str:
    probe = host.http_get(port, "/readyz")
    if probe is None:
        return "not answering"
    return (
        "healthy"
        if probe[0] == 200
        else f"unhealthy ({probe[0]}: {first_line(probe[1].decode(errors='replace'))[:200]})"
    )


def _confirm(opts: Options, out: Progress) -> None:
    if opts.yes or opts.json or not sys.stdin.isatty():
        return
    out.stream.write(f"Deploy {opts.env}? [y/N] ")
    out.stream.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise DeployError("not confirmed; nothing was changed")


def _finish(
    ctx: StepContext,
    outcome: Outcome,
    action: str,
    target: Target,
    plan: DeployPlan,
    doc: dict[str, Any],
) -> int:
    """Record the outcome, prune after a success, print the last line. Returns the exit code."""
    bundle, out = ctx.bundle, ctx.out
    entry = _history_entry(
        bundle,
        action,
        target.release_id,
        plan.live_release,
        plan,
        outcome.result,
        outcome.message,
        out.elapsed(),
        target.manifest,
    )
    with out.step(RecordHistory(entry).describe()):
        RecordHistory(entry).run(ctx)
    port = target.port
    if outcome.result == "ok":
        try:
            with out.step(Prune(target.manifest.keep_releases).describe()):
                Prune(target.manifest.keep_releases).run(ctx)
        except (
            DeployError,
            HostError,
        ) as exc:  # the release is live; a failed cleanup is only reported
            out.say(f"   (pruning old releases failed: {exc})")
    health = _health(ctx.host, port)
    doc.update(
        ok=outcome.result == "ok",
        result=outcome.result,
        health=health,
        error=None if outcome.result == "ok" else outcome.message,
    )
    if outcome.result == "ok":
        note = f" (note: {outcome.message})" if outcome.message else ""
        out.finish(
            doc,
            f"{bundle.env}: release {target.release_id} is live at http://127.0.0.1:{port} "
            f"({health}); {out.elapsed():.1f} s{note}",
        )
    else:
        out.finish(doc, f"{bundle.env}: {action} {outcome.result.upper()}. {outcome.message}")
    return EXIT[outcome.result]


# ---------------------------------------------------------------------------------------
# one run of deploy.py


@dataclass
class Session:
    """One run of deploy.py: its output, its result document, and what to close at the end."""

    opts: Options
    action: str
    out: Progress
    doc: dict[str, Any]
    host: Host | None = None
    held: Held | None = None
    paths: Paths | None = None

    def open(self, bundle: Bundle) -> tuple[Host, str | None]:
        """Connect to the environment's host; the deploy directory (None if absent, read-only
        runs)."""
        self.doc["url"] = bundle.url
        self.host = connect(bundle, self.opts, self.out)
        create = self.action == "deploy"
        return self.host, resolve_root(
            self.host, bundle.manifest.deploy_dir, create=create, env=bundle.env
        )

    def lock(self, paths: Paths, bundle: Bundle, release: str | None = None) -> None:
        assert self.host is not None
        info = LockHolder(
            who=operator(),
            action=self.action,
            since=_now(),
            pid=os.getpid(),
            release=release,
            git_commit=bundle.git_commit,
            config_hash=bundle.manifest.config_hash,
        )
        with self.out.step(f"take the deploy lock of {paths.compose_project}"):
            self.held, previous = take_lock(self.host, paths, self.out, info, self.opts.lock_wait_s)
            self.paths = paths
            if previous is not None:
                _record_unfinished(self.host, paths, previous, self.out)


def _guarded(opts: Options, action: str, body: Callable[[Session], int]) -> int:
    """Run `body`; turn our errors into the final line / JSON and exit 1; always unlock and
    disconnect."""
    out = Progress(opts.env, json_mode=opts.json)
    doc: dict[str, Any] = {
        "ok": False,
        "environment": opts.env,
        "action": action,
        "release": None,
        "previous": None,
        "url": None,
        "health": "unknown",
        "services": {},
        "error": None,
    }
    session = Session(opts, action, out, doc)
    try:
        return body(session)
    except ConnectionLost as exc:
        doc.update(error=str(exc), result="interrupted")
        out.finish(
            doc,
            f"{opts.env}: {action} INTERRUPTED: {exc}. Unless the cut-over had happened, the live "
            "release "
            f"keeps serving; the lock went with the connection. Run the {action} again: it plans "
            "from what "
            "actually runs, records this one as interrupted, and converges (`--status` shows what "
            "runs).",
        )
        return 1
    except (DeployError, HostError) as exc:
        doc["error"] = str(exc)
        out.finish(doc, f"{opts.env}: {action} refused: {exc}")
        return 1
    except KeyboardInterrupt:
        # Before anything changed (activate() handles an interrupt once it has begun).
        message = f"{action} interrupted before it changed anything"
        if session.held is not None and session.host is not None and session.paths is not None:
            entry: dict[str, Any] = {
                "action": action,
                "release": doc.get("release"),
                "previous": doc.get("previous"),
                "who": operator(),
                "when": _now(),
                "result": "interrupted",
                "reason": message,
                "services": {},
                "seconds": round(out.elapsed(), 2),
            }
            with contextlib.suppress(HostError):
                session.host.run(
                    cmd.append_line(session.paths.history, session.paths.holder),
                    stdin=(json.dumps(entry, sort_keys=True) + "\n").encode(),
                    timeout=30,
                )
        doc.update(error=message, result="interrupted")
        out.finish(doc, f"{opts.env}: {message}; the live release (if any) keeps serving")
        return 130
    finally:
        if session.held is not None:
            if "result" not in doc and session.host is not None and session.paths is not None:
                # Refused before it changed anything: no history entry, and no holder file
                # left for the next deploy to take for one that never finished.
                with contextlib.suppress(HostError):
                    session.host.run(["rm", "-f", "--", session.paths.holder], timeout=30)
            session.held.release()
        if session.host is not None:
            session.host.close()


# ---------------------------------------------------------------------------------------
# deploy


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
            out.say(
                f"   note: {exc}; the plan cannot tell whether the secrets changed, and a deploy "
                "would refuse"
            )
            secrets = None
    out.secrets = secrets.values() if secrets else ()
    manifest = bundle.manifest
    with out.step(f"connect to {manifest.target} host {manifest.host or 'localhost'}"):
        host, root = session.open(bundle)
    paths = Paths(root or manifest.deploy_dir, bundle.compose_project)
    release_id = bundle.release_id(utcnow())
    if not opts.plan:
        session.lock(paths, bundle, release_id)
    with out.step("read what runs on the host and plan"):
        images = manifest.images
        state = read_state(
            host,
            paths.root,
            paths.compose_project,
            bundle.config.project,
            bundle.env,
            images=images,
            secrets=secrets.content if secrets else None,
            claims=True,
        )
        if not root:
            state.images = {ref: state.images.get(ref, False) for ref in images}
        _require_compose(state, host)
        check_ownership(state)
        changed_secrets = secrets is not None and not state.secrets_same
        plan = _plan_for(
            host,
            state,
            manifest,
            json.loads(bundle.files["runtime.json"]),
            bundle.files["compose.yaml"],
            changed_secrets,
        )
    doc["services"] = {s.service: s.as_json() for s in plan.services}
    doc["previous"] = plan.live_release
    with out.step("check the host's port and project claims"):
        if opts.plan:
            problems = (
                claims.check(host, paths, bundle)
                if not root
                else claims.conflicts(
                    bundle,
                    claims.parse(state.claims, paths.claims),
                    claims.parse_published(state.published),
                )
            )
            if problems:
                raise DeployError("this deploy would be refused: " + "; ".join(problems))
        elif not claims.settled(
            bundle,
            claims.parse(state.claims, paths.claims),
            claims.parse_published(state.published),
        ):
            claims.claim(host, paths, bundle, operator(), _now())
    ctx = StepContext(host, bundle, paths, out, secrets)
    health = _health(host, bundle.port) if plan.noop else ""
    upload = None
    if plan.noop or recovers(plan):
        # No new release: the live one stays the release that serves.
        release_id = plan.live_release or release_id
    else:
        ctx.tarball = bundle.tarball()
        names = (secrets.names if secrets else ()) if changed_secrets else None
        upload = Upload(len(ctx.tarball), names)
    target = Target(release_id, manifest)
    steps = release_steps(
        "deploy", paths, target, plan, state, upload=upload, live_healthy=health == "healthy"
    )
    if plan.noop:
        doc.update(release=plan.live_release, previous=plan.live_release, health=health)
    else:
        doc.update(release=release_id, plan=[s.describe() for s in steps])
    text = _plan_text(bundle.env, host, paths, plan, steps)
    if opts.plan and not opts.json:
        print(out.clean(text), flush=True)
    elif not plan.noop:
        out.say(text)
    if opts.plan:  # what was printed is all that happens
        doc["ok"] = True
        would = (
            "nothing would change"
            if plan.noop
            else f"nothing was changed ({len(plan.changed) + len(plan.removed)} service(s) "
            "would change)"
        )
        out.finish(doc, f"{bundle.env}: plan only, {would}")
        return 0
    if plan.noop:
        return _unchanged(ctx, steps, plan, doc, health)
    _confirm(opts, out)
    outcome = activate(
        ctx, steps, target, plan, state, mark_failed=target.release_id != plan.live_release
    )
    return _finish(ctx, outcome, "deploy", target, plan, doc)


def _unchanged(
    ctx: StepContext, steps: list[Step], plan: DeployPlan, doc: dict[str, Any], health: str
) -> int:
    """A deploy whose plan changes no service: at most `steps` (pointing `current` at what
    serves, after a deploy that lost its connection after the cut-over), and a history line."""
    bundle, out = ctx.bundle, ctx.out
    live = plan.live_release
    for step in steps:
        run_step(step, ctx)
    entry = _history_entry(
        bundle, "deploy", live, live, plan, "unchanged", None, out.elapsed(), bundle.manifest
    )
    with out.step(RecordHistory(entry).describe()):
        RecordHistory(entry).run(ctx)
    doc.update(ok=True, result="unchanged")
    out.finish(
        doc,
        f"{bundle.env}: nothing changed; release {live} is live at {bundle.url} ({health}); "
        f"{out.elapsed():.1f} s",
    )
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
    session.lock(paths, bundle)
    with out.step("read what runs on the host and plan"):
        state = read_state(host, root, paths.compose_project, bundle.config.project, bundle.env)
        _require_compose(state, host)
        check_ownership(state)
        serving, _ = serving_gateway(host, bundle.port, state.gateways())
        slot = live_slot(state, serving)
        live_now = live_release_of(state, slot)
        target_id = rollback_target(_read_history(host, paths), state, live_now)
        files = read_files(
            host,
            [
                f"{paths.release(target_id)}/{n}"
                for n in ("manifest.json", "runtime.json", "compose.yaml")
            ],
        )
        manifest_path = f"{paths.release(target_id)}/manifest.json"
        manifest = host_manifest(files[manifest_path], manifest_path, host)
        if manifest is None:
            raise DeployError(
                f"release {target_id} has no manifest of this Switchyard on the host; cannot roll "
                "back to it "
                "(deploy the config you want instead)"
            )
        state = read_state(
            host,
            root,
            paths.compose_project,
            bundle.config.project,
            bundle.env,
            images=manifest.images,
        )
        plan = _plan_for(
            host,
            state,
            manifest,
            parse_json(files[f"{paths.release(target_id)}/runtime.json"]) or {},
            files[paths.compose_file(target_id)],
            False,
        )
    target = Target(target_id, manifest)
    doc.update(
        url=f"http://127.0.0.1:{target.port}",
        release=target_id,
        previous=plan.live_release,
        services={s.service: s.as_json() for s in plan.services},
    )
    ctx = StepContext(host, bundle, paths, out)
    steps = release_steps("rollback", paths, target, plan, state)
    out.say(_plan_text(bundle.env, host, paths, plan, steps))
    _confirm(opts, out)
    outcome = activate(ctx, steps, target, plan, state, mark_failed=False)
    return _finish(ctx, outcome, "rollback", target, plan, doc)


def _read_history(host: Host, paths: Paths) -> list[HistoryEntry]:
    return parse_history(host.read(paths.history))


def status(opts: Options) -> int:
    return _guarded(opts, "status", _status)


def unfinished(
    state: HostState,
    history: list[HistoryEntry],
    serving_release: str | None,
    serving_slot: str | None,
) -> list[str]:
    """What an interrupted deploy left, in words (empty: nothing)."""
    notes = []
    if state.lock_holder and state.lock_free is False:
        notes.append(f"a deploy is running now: {describe_holder(state.lock_holder)}")
    elif state.lock_holder:
        notes.append(
            f"the {describe_holder(state.lock_holder)} did not finish; "
            "the next deploy records it and converges"
        )
    stale = [c.name for c in state.gateways() if c.slot != serving_slot] if serving_slot else []
    if stale:
        notes.append(
            f"gateways the proxy does not serve are still there ({', '.join(stale)}); the next "
            "deploy removes them"
        )
    if serving_release and state.current and serving_release != state.current:
        notes.append(
            f"`current` names {state.current}, but release {serving_release} serves; the next "
            "deploy sets current"
        )
    if state.proxy_live and serving_slot and state.proxy_live.slot != serving_slot:
        notes.append(
            f"the proxy's config names slot {state.proxy_live.slot}, but slot {serving_slot} serves"
        )
    if state.leftovers:
        notes.append(
            f"half-written uploads in releases/ ({', '.join(state.leftovers)}); the next deploy "
            "removes them"
        )
    if history and history[-1].result == "interrupted":
        last = history[-1]
        notes.append(
            f"the last {last.action} ({last.release or '?'}, by {last.who} at "
            f"{last.when}) was interrupted"
        )
    return notes


def _status(session: Session) -> int:
    opts, out, doc = session.opts, session.out, session.doc
    bundle = load_bundle(opts.config, opts.env)
    host, root = session.open(bundle)
    paths = Paths(root or bundle.manifest.deploy_dir, bundle.compose_project)
    state = (
        read_state(host, paths.root, paths.compose_project, bundle.config.project, bundle.env)
        if root
        else HostState(paths, False)
    )
    history = _read_history(host, paths) if root else []
    who, code = (
        serving_gateway(host, bundle.port, state.gateways()) if state.containers else (None, None)
    )
    health = _health(host, bundle.port) if state.containers else "not deployed"
    # The release that serves: the answering gateway's, or a later one that changed only the proxy.
    live = (live_release_of(state, who.slot) or who.release) if who else None
    serving = (
        {"release": live, "slot": who.slot, "container": who.name, "status": code} if who else None
    )
    notes = unfinished(state, history, live, who.slot if who else None)
    services: dict[str, dict[str, Any]] = {}
    for c in state.containers:
        entry = services.setdefault(c.service, {"running": 0, "releases": []})
        entry["running"] += c.running
        if c.release and c.release not in entry["releases"]:
            entry["releases"].append(c.release)
    doc.update(
        ok=True,
        release=live or state.current,
        current=state.current,
        serving=serving,
        unfinished=notes,
        health=health,
        last=history[-1].raw if history else None,
        containers={},
        services=services,
    )
    for c in state.containers:
        doc["containers"].setdefault(c.service, []).append(
            {
                "id": c.short_id,
                "name": c.name,
                "service": c.compose_service,
                "slot": c.slot,
                "state": c.state,
                "health": c.health,
                "started_at": c.started_at,
                "release": c.release,
                "owned": c.owned,
                "serving": bool(who and c.slot == who.slot and c.service == "gateway"),
            }
        )
    if not opts.json:
        rows = [("SERVICE", "CONTAINER", "STATE", "HEALTH", "STARTED", "RELEASE", "")] + [
            (
                c.compose_service,
                c.short_id,
                c.state,
                c.health,
                c.started_at[:19],
                c.release or "?",
                "serving" if who and c.service == "gateway" and c.slot == who.slot else "",
            )
            for c in state.containers
        ]
        print(f"{bundle.env} on {host.name}, compose project {bundle.compose_project}")
        print(table(rows) if state.containers else "  no containers")
        print(
            f"serving: release {live} (slot {who.slot})"
            if who
            else "serving: nothing answers through the proxy"
        )
        print(f"current: {state.current or 'none'}")
        for note in notes:
            print(f"unfinished: {note}")
        if history:
            last = history[-1]
            print(f"last: {last.action} {last.result} by {last.who} at {last.when}")
    shown = live or state.current or "none"
    out.finish(
        doc,
        f"{bundle.env}: release {shown} at {bundle.url} ({health})"
        + ("; something was left unfinished" if notes else ""),
    )
    return 0


def _short_commit(commit: str | None) -> str:
    text = str(commit or "-")
    return text[:12] + ("+dirty" if text.endswith("+dirty") else "")


def history(opts: Options) -> int:
    return _guarded(opts, "history", _history)


def _history(session: Session) -> int:
    opts, out, doc = session.opts, session.out, session.doc
    bundle = load_bundle(opts.config, opts.env)
    host, root = session.open(bundle)
    entries = _read_history(host, Paths(root, bundle.compose_project))[-opts.last :] if root else []
    doc.update(ok=True, entries=[e.raw for e in entries])
    if not opts.json:
        rows = [("WHEN", "ACTION", "RESULT", "RELEASE", "WHO", "COMMIT", "CHANGED")] + [
            (
                str(e.when),
                str(e.action),
                str(e.result),
                str(e.release),
                str(e.who),
                _short_commit(e.git_commit),
                ", ".join(f"{k}:{v}" for k, v in e.changed.items()) or "-",
            )
            for e in entries
        ]
        print(table(rows) if entries else f"{bundle.env}: no deploys recorded yet")
    out.finish(doc, f"{bundle.env}: {len(entries)} entries")
    return 0
