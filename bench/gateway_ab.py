"""Compare the gateway of two checkouts, interleaved (a report, not a test).

    git worktree add ../switchyard-before <commit>
    python bench/gateway_ab.py --before ../switchyard-before            # 6 rounds of 4 s runs
    python bench/gateway_ab.py --before ../switchyard-before --rounds 10 --connections 16

Whole runs of bench/gateway_bench.py minutes apart differ by ±20 % on a shared 2-core
machine, more than a refactor should move. This script starts one mock upstream and BOTH
gateways (this checkout's and `--before`'s, each run from its own directory with the same
runtime.json, written through this checkout's `runtime.config` types), then alternates wrk
runs between them, swapping the order every round, so both see the same machine. It prints
each side's median requests/s, non-streamed and streamed, and the after/before ratio.
Both checkouts must read the same runtime.json schema version.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway_bench import (
    ENVIRONMENT,
    ROOT,
    UPSTREAM_SECRET,
    free_port,
    run_wrk,
    runtime_config,
    wait_http,
    wrk_script,
)

HOST = "127.0.0.1"


@dataclass
class Side:
    """One checkout's gateway, started and keyed."""

    name: str
    root: Path
    port: int
    key: str = ""

    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/chat/completions"


def start_gateway(
    side: Side, config: Path, work: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Serve `config` from `side.root`'s own runtime/, and create a key in its data dir."""
    data = work / f"data-{side.name}"
    env = {**os.environ, UPSTREAM_SECRET: "bench-upstream-key", "PYTHONPATH": str(side.root)}
    env.pop("SWITCHYARD_DATA_DIR", None)
    log = work / f"gateway-{side.name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "serve",
                "--config",
                str(config),
                "--port",
                str(side.port),
                "--data-dir",
                str(data),
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            cwd=side.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    procs.append(proc)
    wait_http(f"http://{HOST}:{side.port}/readyz", proc, log)
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "keys",
            "create",
            "--env",
            ENVIRONMENT,
            "--org",
            "bench",
            "--name",
            "bench",
            "--data-dir",
            str(data),
        ],
        cwd=side.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    side.key = created.stdout.strip().splitlines()[-1].strip()
    # The gateway reloads its key cache about once a second.
    wait_http(
        f"http://{HOST}:{side.port}/v1/models",
        proc,
        log,
        headers={"authorization": f"Bearer {side.key}"},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--before", required=True, help="the other checkout (a directory)")
    parser.add_argument("--rounds", type=int, default=6, help="runs per side and mode (6)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run (4)")
    parser.add_argument("--connections", type=int, default=1, help="wrk connections (1)")
    args = parser.parse_args(argv)
    before = Path(args.before).resolve()
    if not (before / "runtime" / "__main__.py").exists():
        parser.error(f"--before {args.before}: not a Switchyard checkout (no runtime/__main__.py)")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="switchyard-ab-") as tmp:
        work = Path(tmp)
        try:
            mock_port = free_port()
            mock_log = work / "mock.log"
            with mock_log.open("wb") as out:
                mock = subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "bench" / "mock_upstream.py"),
                        "--port",
                        str(mock_port),
                        "--delay-ms",
                        "0",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            procs.append(mock)
            wait_http(f"http://{HOST}:{mock_port}/health", mock, mock_log)
            config = work / "runtime.json"
            config.write_text(runtime_config(mock_port).to_json())
            sides = [Side("before", before, free_port()), Side("after", ROOT, free_port())]
            for side in sides:
                start_gateway(side, config, work, procs)
            scripts = {
                (s.name, stream): wrk_script(work / f"{s.name}-{stream}.lua", stream, s.key)
                for s in sides
                for stream in (False, True)
            }
            for s in sides:  # warm up
                for stream in (False, True):
                    run_wrk(s.url(), scripts[(s.name, stream)], args.connections, 1.0)
            rps: dict[tuple[str, bool], list[float]] = {k: [] for k in scripts}
            for r in range(args.rounds):
                order = sides if r % 2 == 0 else sides[::-1]
                for stream in (False, True):
                    for s in order:
                        result = run_wrk(
                            s.url(), scripts[(s.name, stream)], args.connections, args.duration
                        )
                        if result.errors:
                            raise RuntimeError(f"{s.name}: {result.errors} failed requests")
                        rps[(s.name, stream)].append(result.rps)
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"{args.rounds} interleaved rounds of {args.duration:g} s, {args.connections} conn:")
    for stream in (False, True):
        mode = "stream" if stream else "non-stream"
        b = statistics.median(rps[("before", stream)])
        a = statistics.median(rps[("after", stream)])
        print(
            f"  {mode:10}  before {b:8,.0f} req/s  after {a:8,.0f} req/s  after/before {a / b:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
