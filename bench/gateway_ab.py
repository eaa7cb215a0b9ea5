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
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway_bench import (
    HOST,
    ROOT,
    Processes,
    free_port,
    run_wrk,
    runtime_config,
    start_gateway,
    wait_http,
    wrk_script,
)


@dataclass
class Side:
    """One checkout's gateway, started and keyed."""

    name: str
    root: Path
    port: int
    key: str = ""

    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/chat/completions"


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
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="switchyard-ab-") as tmp:
        work = Path(tmp)
        try:
            mock_port = free_port()
            mock_log = work / "mock.log"
            mock = procs.start(
                [
                    sys.executable,
                    str(ROOT / "bench" / "mock_upstream.py"),
                    "--port",
                    str(mock_port),
                    "--delay-ms",
                    "0",
                ],
                mock_log,
            )
            wait_http(f"http://{HOST}:{mock_port}/health", mock, mock_log)
            config = work / "runtime.json"
            config.write_text(runtime_config(mock_port).to_json())
            sides = [Side("before", before, free_port()), Side("after", ROOT, free_port())]
            for side in sides:
                _, side.key = start_gateway(
                    procs,
                    side.root,
                    config,
                    side.port,
                    work / f"data-{side.name}",
                    work / f"gateway-{side.name}.log",
                )
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
            procs.stop_all()
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
