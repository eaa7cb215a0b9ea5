"""`python -m runtime serve --workers 2` (runtime/cli.py) stops every worker process: on SIGTERM
and SIGINT to the serve process, and also when the serve process itself is killed outright —
no worker may be left listening on the port. Checked by pid and by connecting to the port.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.gateway_env import Gateway, runtime_config

UNUSED = "http://127.0.0.1:9"  # the providers are never called here


def worker_pids(parent: int) -> list[int]:
    """The serve process's worker processes (multiprocessing spawns them with spawn_main)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(int(entry))
    return pids


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited orphan may wait to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_serve_with_two_workers_stops_every_worker_and_frees_the_port(
    sig: signal.Signals, tmp_path: Path
) -> None:
    gw = Gateway(runtime_config(UNUSED + "/v1", UNUSED, UNUSED), tmp_path, workers=2).start()
    assert gw.proc is not None
    workers: list[int] = []
    try:
        assert wait_until(lambda: len(worker_pids(gw.proc.pid)) == 2, 10)  # type: ignore[union-attr]
        workers = worker_pids(gw.proc.pid)
        assert listening(gw.port)
        gw.proc.send_signal(sig)
        gw.proc.wait(40)
        assert wait_until(lambda: not any(running(p) for p in workers), 15), (
            f"workers left running after {sig.name}: {[p for p in workers if running(p)]}"
        )
        assert not listening(gw.port)
        if sig != signal.SIGKILL:
            assert gw.proc.returncode == 0, gw.log.read_text()
    finally:  # whatever failed, leave no process behind
        if gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait(5)
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
