"""`/metrics` of `python -m runtime serve --workers 2` reports the whole replica: whichever
worker answers a scrape, successive scrapes see totals that never go down and, once the
traffic stopped, equal to the requests sent (runtime/metrics.py `WorkerSnapshots`)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

from tests.e2e.test_transport_serve_workers import wait_until, worker_pids
from tests.gateway_env import Gateway, runtime_config

UNUSED = "http://127.0.0.1:9"  # the providers are never called: route `offline` is the mock

_SAMPLE = re.compile(r'^switchyard_requests_total\{route="offline",provider="mock",status="200"\} ')


def served(url: str) -> int:
    """The replica's count of 200s on route `offline`, from one scrape (a new connection)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert text.count("\nswitchyard_build_info{") + text.startswith("switchyard_build_info{") == 1
    total = 0
    for line in text.splitlines():
        if _SAMPLE.match(line):
            total += int(line.rpartition(" ")[2])
    return total


def chat(url: str, key: str) -> None:
    body = json.dumps({"model": "offline", "messages": [{"role": "user", "content": "hi"}]})
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=body.encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_scrapes_of_a_two_worker_replica_count_every_request_and_never_go_down(
    tmp_path: Path,
) -> None:
    gw = Gateway(runtime_config(UNUSED + "/v1", UNUSED, UNUSED), tmp_path, workers=2)
    key = gw.key()  # before start: every worker loads it
    gw.start()
    assert gw.proc is not None
    try:
        assert wait_until(lambda: len(worker_pids(gw.proc.pid)) == 2, 10)  # type: ignore[union-attr]
        n = 0
        seen: list[int] = []
        for _ in range(8):
            for _ in range(15):
                chat(gw.url, key)
                n += 1
            for _ in range(4):
                seen.append(served(gw.url))
                assert seen[-1] <= n
        time.sleep(2.5)  # every worker wrote a snapshot since the last request
        for _ in range(12):
            seen.append(served(gw.url))
        assert seen == sorted(seen), f"a scrape saw fewer requests than the one before: {seen}"
        assert seen[-12:] == [n] * 12, seen[-12:]
        # Both workers served and shared their numbers: one snapshot file each.
        files = list((gw.data_dir / "metrics").glob("*/*.prom"))
        assert len(files) == 2, files
        assert sum(len(re.findall(_SAMPLE.pattern[1:], f.read_text(), re.M)) for f in files) == 2
    finally:
        assert gw.stop() == 0, gw.log.read_text()
