"""How long a deploy takes, and what traffic sees during a cut-over: `python bench/deploy_bench.py`.

Starts a real sshd on 127.0.0.1 (generated key), copies this repository with a test
gateway.yaml (a `mock` provider; staging with 1 gateway and production with 2, both over SSH
to that sshd; tests/deploy_env.py), and runs `deploy.py` as a user would, against the real
Docker engine, Compose v2 and HAProxy in front of the gateways. For staging and production:

1. Deploy times, wall clock per run, no traffic:
   - the first deploy (images built; the base image comes from scripts/test-base-image.sh),
   - a no-op deploy (nothing changed: target < 5 s),
   - a config-only change (a limit in gateway.yaml: the gateways are replaced by ones with
     the new runtime.json in the other slot, the proxy cuts over, the old ones drain:
     target < 15 s).
2. Cut-overs under load (tests/load.py: 40 short requests/s, half on keep-alive connections
   and half each on a new one, plus 3 streams of 8 s in flight at all times, through the
   environment's published port): a config-only change, a code change (image rebuilt from
   the build cache), a rollback, and the replicas changed and changed back. For each: failed
   requests, streams cut, the longest time without a successful short answer during the
   deploy (target < 100 ms), and p99 latency of short requests before the deploy, during it,
   and in the cut-over window (from the `cut over` step's start to 1 s after its end).

`--quick`: one run of each deploy time, and under load every change for staging but only the
config-only change for production. Everything it creates is removed at the end. Needs root
(sshd), Docker and the base image. Not a test: figures go to stdout (`--json` for machines);
the exit code is 1 only if a deploy failed or the setup could not be made.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (tests.deploy_env reports a missing prerequisite with pytest.skip)

from tests.deploy_env import (  # noqa: E402
    DeployProject,
    DeployResult,
    Sshd,
    chat,
    make_key,
    require_docker,
)
from tests.load import Load, LoadReport  # noqa: E402

ENVS = ("staging", "production")
REQUEST_TIMEOUT_S = (
    30  # runtime.request_timeout_s, also the drain timeout (as in tests/e2e/test_deploy_load.py)
)
BASELINE_S = 3.0  # load before the deploy starts; its last 2 s are "before"
AFTER_S = 1.0  # load after the deploy ends
CUT_OVER_TAIL_S = 1.0  # the cut-over window ends this long after the `cut over` step
MAX_GAP_MS = 100.0
NOOP_TARGET_S = 5.0
CONFIG_ONLY_TARGET_S = 15.0


@dataclass
class Timing:
    env: str
    kind: str  # first, noop, config-only
    seconds: list[float]
    actions: dict[str, str]  # service -> action, of the last run
    steps: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds) of the last run

    def summary(self) -> dict[str, float]:
        return {
            "runs": len(self.seconds),
            "median_s": round(statistics.median(self.seconds), 2),
            "min_s": round(min(self.seconds), 2),
            "max_s": round(max(self.seconds), 2),
        }


@dataclass
class CutOver:
    env: str
    change: str
    deploy_s: float
    actions: dict[str, str]
    requests: int  # short requests started during the load
    streams: int  # streams started during the load
    failed: int
    streams_cut: int
    longest_gap_ms: float  # no successful short answer for this long, within the deploy
    gap_at: str  # when that gap began: seconds into the deploy and the step then running
    # the longest time the load sent no short request, within the deploy (the client's own stalls)
    send_gap_ms: float
    p99_before_ms: float
    p99_deploy_ms: float
    p99_cut_over_ms: float
    cut_over_window_s: float
    failures: list[str] = field(default_factory=list)  # the first few, as the load saw them


@dataclass
class Results:
    started: str
    machine: dict[str, Any]
    timings: list[Timing] = field(default_factory=list)
    cut_overs: list[CutOver] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# running deploys


@dataclass
class Deploy:
    result: DeployResult
    started: float
    ended: float
    steps: list[
        tuple[float, str]
    ]  # (monotonic time, progress line) of every `-> step` and `   ok` line

    def doc(self) -> dict[str, Any]:
        return self.result.json()

    def actions(self) -> dict[str, str]:
        return {name: str(s["action"]) for name, s in self.doc().get("services", {}).items()}

    def step_seconds(self) -> list[tuple[str, float]]:
        """(step, seconds) as deploy reports them in its JSON document."""
        return [(str(s["step"]), float(s["seconds"])) for s in self.doc().get("steps", [])]

    def step_at(self, t: float) -> str:
        """The step running at monotonic time `t` (the last `-> step` line printed before it)."""
        started = [line[3:] for t2, line in self.steps if line.startswith("-> ") and t2 <= t]
        return _step_name(started[-1]) if started else "before the first step"

    def step_window(self, prefix: str) -> tuple[float, float] | None:
        """When the step whose line starts with `-> {prefix}` started and ended."""
        for i, (t, line) in enumerate(self.steps):
            if line.startswith(f"-> {prefix}"):
                end = next((t2 for t2, l2 in self.steps[i + 1 :] if not l2.startswith("-> ")), t)
                return t, end
        return None


def run_deploy(project: DeployProject, *args: str, timeout: float = 600) -> Deploy:
    """`deploy.py ARGS` in the project's copy; its output and when each step started and ended."""
    steps: list[tuple[float, str]] = []

    def on_line(line: str, _proc: object) -> None:
        if line.startswith(("-> ", "   ok", "   failed")):
            steps.append((time.monotonic(), line.rstrip("\n")))

    started = time.monotonic()
    result = project.deploy_watching(*args, on_line=on_line, timeout=timeout)
    ended = started + result.seconds
    if result.returncode != 0:
        raise SystemExit(f"deploy.py {' '.join(args)} failed:\n{result}")
    return Deploy(result, started, ended, steps)


# ---------------------------------------------------------------------------------------
# the changes


def _set_limit(project: DeployProject, value: int) -> None:
    project.config.setdefault("limits", {})["per_key"] = {"requests_per_minute": value}
    project.write_config()
    project.commit(f"bench: requests_per_minute {value}")


def _add_route(project: DeployProject) -> None:
    routes = project.config["routes"]
    routes[f"r{len(routes)}"] = {"candidates": ["mock/echo"]}
    project.write_config()
    project.commit(f"bench: route r{len(routes) - 1}")


def _touch_runtime(project: DeployProject, note: str) -> None:
    app = project.repo / "runtime" / "app.py"
    app.write_text(app.read_text() + f"# {note}\n")
    project.commit(note)


def _set_replicas(project: DeployProject, env: str, n: int) -> None:
    project.config["environments"][env]["replicas"] = n
    project.write_config()
    project.commit(f"bench: {env} {n} replicas")


def changes(
    env: str, quick: bool
) -> list[tuple[str, Callable[[DeployProject], None], tuple[str, ...]]]:
    """(name, the change, deploy.py arguments) of each cut-over measured under load."""
    base = 1 if env == "staging" else 2
    other = 2 if base == 1 else 1
    cases: list[tuple[str, Callable[[DeployProject], None], tuple[str, ...]]] = [
        ("config-only", _add_route, (env, "--yes", "--json")),
        (
            "code",
            lambda p: _touch_runtime(p, f"bench: a code change for {env}"),
            (env, "--yes", "--json"),
        ),
        ("rollback", lambda p: None, (env, "--rollback", "--yes", "--json")),
        (
            f"replicas {base}->{other}",
            lambda p: _set_replicas(p, env, other),
            (env, "--yes", "--json"),
        ),
        (
            f"replicas {other}->{base}",
            lambda p: _set_replicas(p, env, base),
            (env, "--yes", "--json"),
        ),
    ]
    return cases[:1] if quick and env != "staging" else cases


# ---------------------------------------------------------------------------------------
# measuring


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1) if not math.isnan(seconds) else float("nan")


def gap_start(report: LoadReport, start: float, end: float) -> float:
    """Where `report.longest_gap(start, end)` begins (the same rule: successful short answers by end
    time)."""
    times = [
        start,
        *sorted(
            o.end for o in report.outcomes if o.ok and o.kind != "stream" and start <= o.end <= end
        ),
        end,
    ]
    return max(itertools.pairwise(times), key=lambda ab: ab[1] - ab[0])[0]


def send_gap(report: LoadReport, start: float, end: float) -> float:
    """The longest time between two short requests' starts within [start, end]: the load is open
    loop (one every
    25 ms at 40/s), so a long one means the client itself (or the whole machine) stalled, not the
    server."""
    times = [
        start,
        *sorted(o.start for o in report.outcomes if o.kind != "stream" and start <= o.start <= end),
        end,
    ]
    return max(b - a for a, b in itertools.pairwise(times))


def cut_over_under_load(
    project: DeployProject, env: str, key: str, change: str, args: tuple[str, ...]
) -> CutOver:
    load = Load(project.ports[env], key, rate=40, streams=3, stream_s=8.0).start()
    try:
        time.sleep(BASELINE_S)
        deploy = run_deploy(project, *args)
        time.sleep(AFTER_S)
    finally:
        report: LoadReport = load.stop()
    t0, t1 = deploy.started, deploy.ended
    window = deploy.step_window("cut over")
    c0, c1 = (window[0], window[1] + CUT_OVER_TAIL_S) if window else (t0, t1)
    failed = report.failed()
    gap = gap_start(report, t0, t1)
    return CutOver(
        env=env,
        change=change,
        deploy_s=round(deploy.result.seconds, 2),
        actions=deploy.actions(),
        requests=report.count("keepalive") + report.count("fresh"),
        streams=report.count("stream"),
        failed=len(failed),
        streams_cut=len(report.streams_cut()),
        longest_gap_ms=_ms(report.longest_gap(t0, t1)),
        gap_at=f"+{gap - t0:.2f} s, {deploy.step_at(gap)}",
        send_gap_ms=_ms(send_gap(report, t0, t1)),
        p99_before_ms=_ms(report.p(99, max(report.started, t0 - 2.0), t0)),
        p99_deploy_ms=_ms(report.p(99, t0, t1)),
        p99_cut_over_ms=_ms(report.p(99, c0, c1)),
        cut_over_window_s=round(c1 - c0, 2),
        failures=[
            f"{o.kind} at +{o.start - t0:.2f} s into the deploy: {o.detail}" for o in failed[:5]
        ],
    )


def noop_times(project: DeployProject, env: str, runs: int, log: Callable[[str], None]) -> Timing:
    seconds: list[float] = []
    d: Deploy | None = None
    for _ in range(runs):
        d = run_deploy(project, env, "--yes", "--json")
        if set(d.actions().values()) != {"unchanged"}:
            raise SystemExit(f"{env}: a no-op deploy changed something: {d.actions()}")
        seconds.append(round(d.result.seconds, 2))
    assert d is not None
    log(f"  {env}: no-op {', '.join(f'{s:.2f}' for s in seconds)} s")
    return Timing(env, "noop", seconds, d.actions(), d.step_seconds())


def config_only_times(
    project: DeployProject, env: str, runs: int, values: Iterator[int], log: Callable[[str], None]
) -> Timing:
    """Deploys that change one limit (a new value each run): runtime.json changes, the image does
    not."""
    seconds: list[float] = []
    d: Deploy | None = None
    for _ in range(runs):
        _set_limit(project, next(values))
        d = run_deploy(project, env, "--yes", "--json")
        if d.actions().get("gateway") != "replace":
            raise SystemExit(
                f"{env}: a config-only change should replace the gateways (no rebuild), got "
                f"{d.actions()}"
            )
        seconds.append(round(d.result.seconds, 2))
    assert d is not None
    log(f"  {env}: config-only {', '.join(f'{s:.2f}' for s in seconds)} s ({d.actions()})")
    return Timing(env, "config-only", seconds, d.actions(), d.step_seconds())


# ---------------------------------------------------------------------------------------
# output


def _step_name(describe: str) -> str:
    """A step's description up to its first colon or parenthesis: `start the new gateways in slot b
    beside the live ones`."""
    for sep in (":", " ("):
        describe = describe.split(sep, 1)[0]
    return describe


def _f(ms: float) -> str:
    return "–" if math.isnan(ms) else f"{ms:.0f}"


def render(results: Results) -> str:
    m = results.machine
    lines = [
        f"Deploy benchmark, {results.started}; {m['cpus']} CPUs, load average "
        f"{m['loadavg_1m_at_start']} at start; "
        "deploy.py over SSH to 127.0.0.1, real Docker engine, HAProxy in front of the gateways.",
        "",
        "Deploy times (wall clock per run, no traffic):",
        "",
        "| env | run | median | min | max | runs | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    targets = {"noop": f"< {NOOP_TARGET_S:g} s", "config-only": f"< {CONFIG_ONLY_TARGET_S:g} s"}
    labels = {
        "first": "first deploy (images built)",
        "noop": "no-op",
        "config-only": "config-only change (cut-over)",
    }
    kinds = list(labels)
    for t in sorted(results.timings, key=lambda t: (ENVS.index(t.env), kinds.index(t.kind))):
        s = t.summary()
        limit = {"noop": NOOP_TARGET_S, "config-only": CONFIG_ONLY_TARGET_S}.get(t.kind)
        verdict = "" if limit is None else (" PASS" if s["median_s"] < limit else " FAIL")
        lines.append(
            f"| {t.env} | {labels[t.kind]} | {s['median_s']:.2f} s | {s['min_s']:.2f} s | "
            f"{s['max_s']:.2f} s | "
            f"{s['runs']} | {targets.get(t.kind, '–')}{verdict} |"
        )
    for t in results.timings:
        if t.kind == "config-only" and t.steps:
            lines += [
                "",
                f"{t.env}, last config-only deploy, by step: "
                + "; ".join(f"{_step_name(n)} {s:.2f} s" for n, s in t.steps if s >= 0.05),
            ]
    lines += [
        "",
        "Cut-overs under load (40 short requests/s, half keep-alive and half on new connections, 3 "
        "streams of 8 s "
        "in flight. longest gap: no successful short answer, during the deploy; longest send gap: "
        "the load itself sent "
        "nothing (it sends one every 25 ms); p99 of short requests: the 2 s before the deploy, the "
        "deploy, the cut-over "
        f"window (from the `cut over` step's start to {CUT_OVER_TAIL_S:g} s after its end)):",
        "",
        "| env | change | gateway / proxy action | deploy | short req | streams | failed | streams "
        "cut | longest gap | "
        "longest send gap | p99 before | p99 deploy | p99 cut-over |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in results.cut_overs:
        acts = f"{c.actions.get('gateway', '?')} / {c.actions.get('proxy', '?')}"
        lines.append(
            f"| {c.env} | {c.change} | {acts} | {c.deploy_s:.1f} s | {c.requests} | {c.streams} | "
            f"{c.failed} | "
            f"{c.streams_cut} | {_f(c.longest_gap_ms)} ms | {_f(c.send_gap_ms)} ms | "
            f"{_f(c.p99_before_ms)} ms | {_f(c.p99_deploy_ms)} ms | "
            f"{_f(c.p99_cut_over_ms)} ms |"
        )
    lines += ["", "Targets:"]
    for c in results.cut_overs:
        ok = c.failed == 0 and c.streams_cut == 0 and c.longest_gap_ms < MAX_GAP_MS
        lines.append(
            f"  {'PASS' if ok else 'FAIL'}  {c.env} {c.change}: {c.failed} failed, {c.streams_cut} "
            "streams cut, "
            f"longest gap {_f(c.longest_gap_ms)} ms (< {MAX_GAP_MS:.0f} ms) at {c.gap_at}"
        )
        lines += [f"        {f}" for f in c.failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="runs of each timed deploy kind (default 5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one run of each timed kind; under load, every change for staging, config-only for "
        "production",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else max(1, args.runs)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        require_docker()
    except pytest.skip.Exception as exc:
        log(f"cannot run: {exc.msg}")
        return 1
    results = Results(
        time.strftime("%Y-%m-%d %H:%M"),
        {"cpus": os.cpu_count(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
    )
    with tempfile.TemporaryDirectory(prefix="sy-deploy-bench-") as tmp:
        try:
            sshd = Sshd(dir=Path(tmp) / "sshd").start()
        except pytest.skip.Exception as exc:
            log(f"cannot run: {exc.msg}")
            return 1
        project = DeployProject(Path(tmp) / "project", sshd)
        try:
            project.create()
            project.config["runtime"]["request_timeout_s"] = REQUEST_TIMEOUT_S
            project.write_config()
            project.commit("bench settings")
            first: dict[str, float] = {}
            for env in ENVS:
                log(f"{env}: first deploy")
                first[env] = run_deploy(project, env, "--yes", "--json").result.seconds
            results.timings += [Timing(env, "first", [round(first[env], 2)], {}) for env in ENVS]
            # Every no-op first: the limits changed below are shared by both environments.
            for env in ENVS:
                log(f"{env}: no-op deploys ({runs})")
                results.timings.append(noop_times(project, env, runs, log))
            values = itertools.count(1000)
            for env in ENVS:
                log(f"{env}: config-only deploys ({runs})")
                results.timings.append(config_only_times(project, env, runs, values, log))
            for env in ENVS:
                key = ""
                for name, change, deploy_args in changes(env, args.quick):
                    # What the repository has and the live release lacks (a change made for the
                    # other environment: limits, routes and code are shared; or the release a
                    # rollback left behind) is deployed first, without load, so that each case
                    # deploys only its own change. A no-op when there is nothing.
                    run_deploy(project, env, "--yes", "--json")
                    if not key:
                        key = make_key(project, env)
                        chat(project.ports[env], key)  # the gateways know the key
                    log(f"{env}: {name} under load")
                    change(project)
                    c = cut_over_under_load(project, env, key, name, deploy_args)
                    results.cut_overs.append(c)
                    log(
                        f"  deploy {c.deploy_s:.1f} s, {c.failed} failed, {c.streams_cut} streams "
                        "cut, longest gap "
                        f"{_f(c.longest_gap_ms)} ms at {c.gap_at}, p99 {_f(c.p99_before_ms)} -> "
                        f"{_f(c.p99_deploy_ms)} ms "
                        f"(cut-over window {_f(c.p99_cut_over_ms)} ms)"
                    )
        finally:
            project.cleanup()
            sshd.stop()

    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
