"""HAProxy in front of a local gateway, configured as a deploy configures it
(for `gateway_bench --proxy`).

The configuration is the compiler's: `compiler.proxy.render_config` with templates/haproxy.cfg.j2,
the proxy settings' defaults and the bench gateway's request timeout. Two things differ from a
deployed environment, because here there is no container network:
- the one server is addressed as 127.0.0.1:<gateway port> (`servers=["127.0.0.1"]`, so the
  server line reads `server 127.0.0.1 127.0.0.1:<port>`; an address needs no DNS, so the
  `resolvers docker` section stays in but is never asked),
- the frontend binds 127.0.0.1:<free port> instead of the container's `:8080` (the one line
  this module rewrites in the rendered text).
HAProxy runs as deploy runs it (compiler.proxy.COMMAND: master-worker, in the foreground).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compiler import proxy  # noqa: E402
from compiler.models import GatewayConfig  # noqa: E402
from compiler.render import _env  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HOST = "127.0.0.1"


def bench_config(request_timeout_s: float) -> GatewayConfig:
    """The smallest gateway.yaml whose proxy settings are the defaults and whose request timeout is
    the bench gateway's."""
    return GatewayConfig.model_validate(
        {
            "version": 1,
            "project": "switchyard-bench",
            "providers": {
                "upstream": {
                    "adapter": "openai-compatible",
                    "base_url": "http://127.0.0.1:9/v1",
                    "models": {"model": {"context_window": 128000}},
                }
            },
            "routes": {"bench": {"candidates": ["upstream/model"]}},
            "runtime": {"request_timeout_s": request_timeout_s},
            "environments": {"bench": {"target": "local", "port": 8000}},
        }
    )


def render(gateway_port: int, listen_port: int, request_timeout_s: float) -> str:
    """haproxy.cfg for slot a with the gateway at 127.0.0.1:`gateway_port`, listening on
    127.0.0.1:`listen_port`."""
    config = bench_config(request_timeout_s)
    text = proxy.render_config(
        _env(),
        config,
        environment="bench",
        compose_project="switchyard-bench-bench",
        source_name="bench/local_haproxy.py",
        slot="a",
        servers=[HOST],
        gateway_port=gateway_port,
        drain_s=proxy.drain_timeout_s(config, None),
    )
    bind = f"    bind :{proxy.LISTEN_PORT}\n"
    if text.count(bind) != 1:
        raise RuntimeError(
            f"templates/haproxy.cfg.j2 no longer has exactly one {bind.strip()!r} line; update "
            "bench/local_haproxy.py"
        )
    return text.replace(bind, f"    bind {HOST}:{listen_port}\n")


def check(cfg: Path) -> None:
    """`haproxy -c`: raise with HAProxy's own words if it refuses the file."""
    proc = subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0:
        raise RuntimeError(f"haproxy -c refused {cfg}:\n{(proc.stdout + proc.stderr).strip()}")


def command(cfg: Path) -> list[str]:
    """The argv deploy's proxy container runs, with this file as its configuration."""
    return [HAPROXY, *proxy.COMMAND[1:-1], str(cfg)]


def version() -> str:
    try:
        out = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "haproxy: not found"
    return out.splitlines()[0].strip() if out.strip() else "haproxy: ?"


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (the master and its worker), for CPU accounting (Linux /proc)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return pids
