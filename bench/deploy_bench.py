"""How long a deploy takes, end to end, with real parts: `python bench/deploy_bench.py`.

Starts a real sshd on 127.0.0.1 (generated key), copies this repository with a test
gateway.yaml (a `mock` provider; staging over SSH to that sshd), and runs `deploy.py` as a
user would, against the real Docker engine and Compose v2. Measures, wall clock per run:

- the first deploy (image build included; the base image comes from
  scripts/test-base-image.sh),
- a no-op deploy (nothing changed: target < 5 s),
- a config-only change (a limit in gateway.yaml: runtime.json changes, the gateway is
  recreated without a rebuild, health check included: target < 15 s),
- a code change (a comment in runtime/: the image is rebuilt from cache).

Everything it creates is removed at the end. Needs root (sshd), Docker and the base image.
Not a test: numbers go to stdout (`--json` for machines).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deploy_env import DeployProject, DeployResult, Sshd, require_docker  # noqa: E402


def _check(result: DeployResult, what: str) -> DeployResult:
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result}")
    return result


def _summary(samples: list[float]) -> dict[str, float]:
    return {"runs": len(samples), "median_s": round(statistics.median(samples), 2),
            "min_s": round(min(samples), 2), "max_s": round(max(samples), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each measured kind (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    require_docker()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sy-deploy-bench-") as tmp:
        sshd = Sshd(dir=Path(tmp) / "sshd").start()
        project = DeployProject(Path(tmp) / "project", sshd)
        try:
            project.create()
            first = _check(project.deploy("staging", "--yes"), "first deploy")
            results["first_deploy"] = {"seconds": round(first.seconds, 2)}

            noop = [_check(project.deploy("staging", "--yes"), "no-op deploy").seconds for _ in range(args.runs)]
            results["noop_deploy"] = {**_summary(noop), "target_s": 5}

            config_only: list[float] = []
            for i in range(args.runs):
                project.config.setdefault("limits", {})["per_key"] = {"requests_per_minute": 1000 + i}
                project.write_config()
                res = _check(project.deploy("staging", "--yes", "--json"), "config-only deploy")
                doc = res.json()
                actions = {name: s["action"] for name, s in doc["services"].items()}
                if actions != {"gateway": "restart"}:
                    raise SystemExit(f"expected only a restart of the gateway, got {actions}")
                config_only.append(res.seconds)
            results["config_only_deploy"] = {**_summary(config_only), "target_s": 15}

            code: list[float] = []
            for i in range(max(1, args.runs // 2)):
                with open(project.repo / "runtime" / "__init__.py", "a") as fh:
                    fh.write(f"# bench change {i}\n")
                code.append(_check(project.deploy("staging", "--yes"), "code-change deploy").seconds)
            results["code_change_deploy"] = _summary(code)
        finally:
            project.cleanup()
            sshd.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("deploy.py staging over SSH to 127.0.0.1, real Docker engine (wall clock per run)")
    print(f"  first deploy (image build):        {results['first_deploy']['seconds']:6.2f} s")
    for key, label in (("noop_deploy", "no-op deploy"), ("config_only_deploy", "config-only change (+health)"),
                       ("code_change_deploy", "code change (rebuild)")):
        r = results[key]
        target = f"   target < {r['target_s']} s" if "target_s" in r else ""
        print(f"  {label:<34} median {r['median_s']:6.2f} s  min {r['min_s']:.2f}  max {r['max_s']:.2f}  ({r['runs']} runs){target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
