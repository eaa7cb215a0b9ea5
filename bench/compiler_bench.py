"""Benchmark the compiler CLI: wall time of real `python -m compiler` runs, startup included.

    python bench/compiler_bench.py            # readable tables
    python bench/compiler_bench.py --json     # the same numbers as JSON
    python bench/compiler_bench.py --runs 9 --sizes 250,500,1000

It generates the configs (bench/gen_config.py) into a temporary directory, then times each
command K times in a fresh interpreter (`sys.executable -m compiler ...`, run from the
repository root; the commands take turns, round by round) and reports the median and the
minimum. The scaling table checks and
builds configs of growing size and divides the time above a tiny config's by the number of
route candidates: flat numbers mean validation cost grows linearly with routes × candidates.

Wall time on a shared machine is noisy; `--instructions` adds a table of instructions
executed (valgrind's callgrind, one run each: slow but nearly deterministic), which shows
the growth exactly.

This is a benchmark, not a test: it asserts only that every command succeeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gen_config import generate, render

REPO_ROOT = Path(__file__).resolve().parent.parent
LARGE = {"routes": 2000, "models": 300, "providers": 30}
TINY_ROUTES = 10
DEFAULT_SIZES = (250, 500, 1000, 2000, 4000)


@dataclass
class Timing:
    name: str
    command: list[str]
    median_s: float
    min_s: float
    runs: int


@dataclass
class ScaleRow:
    routes: int
    route_candidates: int
    check_median_s: float
    check_min_s: float
    check_us_per_rc: float
    build_median_s: float
    build_min_s: float
    build_us_per_rc: float


def _run(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", *args], cwd=REPO_ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"`python -m compiler {' '.join(args)}` exited "
            f"{proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return elapsed


def _instructions(args: list[str]) -> int:
    """Instructions executed by one run, counted by valgrind's callgrind."""
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "compiler",
            *args,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(
            f"valgrind on `python -m compiler {' '.join(args)}` failed:\n{proc.stderr[-2000:]}"
        )
    return int(found.group(1))


def measure_all(commands: dict[str, list[str]], runs: int) -> dict[str, Timing]:
    """Run every command once to warm the OS caches, then `runs` rounds of each in turn.

    Interleaving the rounds spreads any background load over all commands alike.
    """
    for args in commands.values():
        _run(args)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, args in commands.items():
            times[name].append(_run(args))
    return {
        name: Timing(
            name,
            ["python", "-m", "compiler", *args],
            statistics.median(times[name]),
            min(times[name]),
            runs,
        )
        for name, args in commands.items()
    }


def write_config(directory: Path, routes: int, models: int, providers: int) -> tuple[Path, int]:
    """Write a generated config; return its path and its number of route candidates."""
    data = generate(routes, models, providers)
    path = directory / f"gen-{routes}r-{models}m-{providers}p.yaml"
    path.write_text(render(data), encoding="utf-8")
    return path, sum(len(r["candidates"]) for r in data["routes"].values())


def _build_args(config: Path, out: Path) -> list[str]:
    return ["build", "--all", "--quiet", "--config", str(config), "--out", str(out)]


def run(runs: int, sizes: list[int], instructions: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        d = Path(tmp)
        large, large_rc = write_config(d, **LARGE)
        headline = measure_all(
            {
                f"check large ({LARGE['routes']} routes, {large_rc} candidates)": [
                    "check",
                    str(large),
                ],
                "build --all large (3 environments)": _build_args(large, d / "out-large"),
                "check gateway.yaml": ["check", "gateway.yaml"],
            },
            runs,
        )
        configs = {
            n: write_config(d, n, LARGE["models"], LARGE["providers"])
            for n in [TINY_ROUTES, *sizes]
        }
        commands: dict[str, list[str]] = {}
        for n, (path, _rc) in configs.items():
            commands[f"check {n}"] = ["check", str(path)]
            commands[f"build {n}"] = _build_args(path, d / f"out-{n}")
        scale = measure_all(commands, runs)
        counts = (
            {name: _instructions(args) for name, args in commands.items()} if instructions else {}
        )
    tiny_rc = configs[TINY_ROUTES][1]
    tiny_check, tiny_build = scale[f"check {TINY_ROUTES}"], scale[f"build {TINY_ROUTES}"]
    rows: list[ScaleRow] = []
    for n in sizes:
        rc = configs[n][1]
        check, build = scale[f"check {n}"], scale[f"build {n}"]
        extra = max(rc - tiny_rc, 1)
        # Per route-candidate from the fastest runs: the least disturbed by other load.
        rows.append(
            ScaleRow(
                n,
                rc,
                check.median_s,
                check.min_s,
                (check.min_s - tiny_check.min_s) / extra * 1e6,
                build.median_s,
                build.min_s,
                (build.min_s - tiny_build.min_s) / extra * 1e6,
            )
        )
    instruction_rows = (
        [
            {
                "routes": n,
                "route_candidates": configs[n][1],
                "check_instructions": counts[f"check {n}"],
                "check_per_rc": (counts[f"check {n}"] - counts[f"check {TINY_ROUTES}"])
                / max(configs[n][1] - tiny_rc, 1),
                "build_instructions": counts[f"build {n}"],
                "build_per_rc": (counts[f"build {n}"] - counts[f"build {TINY_ROUTES}"])
                / max(configs[n][1] - tiny_rc, 1),
            }
            for n in sizes
        ]
        if counts
        else []
    )
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(terse=True),
        },
        "runs": runs,
        "timings": [asdict(t) for t in headline.values()],
        "scaling": {
            "models": LARGE["models"],
            "providers": LARGE["providers"],
            "baseline": {
                "routes": TINY_ROUTES,
                "route_candidates": tiny_rc,
                "check_min_s": tiny_check.min_s,
                "build_min_s": tiny_build.min_s,
            },
            "rows": [asdict(r) for r in rows],
            "instructions": instruction_rows,
        },
    }


def text_report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"{m['implementation']} {m['python']} on {m['platform']}, {m['cpus']} CPUs; "
        f"median and min of {result['runs']} runs, wall time including interpreter start",
        "",
        f"{'command':<48} {'median':>9} {'min':>9}",
    ]
    for t in result["timings"]:
        lines.append(f"{t['name']:<48} {t['median_s']:>8.3f}s {t['min_s']:>8.3f}s")
    s = result["scaling"]
    b = s["baseline"]
    lines += [
        "",
        f"scaling ({s['models']} models, {s['providers']} providers, 3 environments): median / min "
        "wall time; "
        f"µs/rc is the min time above a {b['routes']}-route config's ({b['check_min_s']:.3f}s "
        "check, "
        f"{b['build_min_s']:.3f}s build) per extra route-candidate — flat means linear",
        "",
        f"{'routes':>7} {'route×cand':>11} {'check median':>13} {'min':>8} {'µs/rc':>7} "
        f"{'build --all median':>19} {'min':>8} {'µs/rc':>7}",
    ]
    for r in s["rows"]:
        lines.append(
            f"{r['routes']:>7} {r['route_candidates']:>11} {r['check_median_s']:>12.3f}s "
            f"{r['check_min_s']:>7.3f}s "
            f"{r['check_us_per_rc']:>7.1f} {r['build_median_s']:>18.3f}s {r['build_min_s']:>7.3f}s "
            f"{r['build_us_per_rc']:>7.1f}"
        )
    if s["instructions"]:
        lines += [
            "",
            "instructions executed (callgrind); per rc: above the "
            f"{b['routes']}-route config, per extra route-candidate",
            "",
            f"{'routes':>7} {'route×cand':>11} {'check':>15} {'per rc':>9} {'build --all':>15} "
            f"{'per rc':>9}",
        ]
        for r in s["instructions"]:
            lines.append(
                f"{r['routes']:>7} {r['route_candidates']:>11} {r['check_instructions']:>15,} "
                f"{r['check_per_rc']:>9,.0f} "
                f"{r['build_instructions']:>15,} {r['build_per_rc']:>9,.0f}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time `python -m compiler` check and build on generated configs."
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="route counts for the scaling table",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions with valgrind for the scaling table (minutes)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (apt-get install valgrind)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    result = run(args.runs, sizes, args.instructions)
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.json else text_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
