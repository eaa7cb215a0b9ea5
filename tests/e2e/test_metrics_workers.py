"""`/metrics` of `python -m runtime serve --workers 2` reports the whole replica: whichever
worker answers a scrape, successive scrapes see totals that never go down and, once the
traffic stopped, equal to the requests sent (runtime/metrics.py `WorkerSnapshots`). Across
replicas, the compiled proxy answers `/metrics/replica/<n>` from replica n only (HAProxy, on
loopback)."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from compiler.proxy import LISTEN_PORT
from tests.e2e.test_transport_serve_workers import wait_until, worker_pids
from tests.gateway_env import Gateway, free_port, runtime_config
from tests.unit.test_build import CONTAINER_PORT, GATEWAY_TEXT, render

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


# --- several replicas: each scraped on its own through the proxy -----------------------------


class _Replica(http.server.BaseHTTPRequestHandler):
    """A stand-in gateway: ready, and its /metrics names it (server.name)."""

    def do_GET(self) -> None:
        body = f"{self.server.name} {self.path}".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _replica(name: str) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    server.name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["error"]["code"]
    except OSError:  # not listening yet
        return 0, ""


def test_the_proxy_answers_metrics_replica_n_from_replica_n_only(tmp_path: Path) -> None:
    files = render(GATEWAY_TEXT, "production")  # two replicas per slot
    cfg = files["proxy/haproxy-a.cfg"]
    replicas = [_replica("one"), _replica("two")]
    port = free_port()
    # The compiled config, on loopback: the compose service names become the stand-ins'
    # addresses, without Docker's DNS; everything else as compiled.
    for i, server in enumerate(replicas, 1):
        cfg = cfg.replace(f"gateway-a{i}:{CONTAINER_PORT}", f"127.0.0.1:{server.server_port}")
    cfg = re.sub(r"\nresolvers docker\n(    .*\n)+", "\n", cfg)
    cfg = cfg.replace(" resolvers docker init-addr libc,none", "")
    cfg = cfg.replace("    master-worker\n", "").replace(
        f"bind :{LISTEN_PORT}", f"bind 127.0.0.1:{port}"
    )
    (tmp_path / "haproxy.cfg").write_text(cfg)
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")])
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _get(url + "/metrics/replica/2")[0] == 200, 10)
        for _ in range(3):  # whatever the balancing, replica n answers
            assert _get(url + "/metrics/replica/1") == (200, "one /metrics")
            assert _get(url + "/metrics/replica/2") == (200, "two /metrics")
        assert _get(url + "/metrics/replica/3") == (404, "replica_not_found")
        assert _get(url + "/metrics/replica/0") == (404, "replica_not_found")
        replicas[1].shutdown()
        replicas[1].server_close()
        # Until its health check fails, the proxy still tries it (a 503 `no_gateway_ready`
        # from the refused connection); once it has: 503 `replica_down`. Never the other
        # replica's numbers.
        seen: list[tuple[int, str]] = []

        def down() -> bool:
            seen.append(_get(url + "/metrics/replica/2"))
            return seen[-1] == (503, "replica_down")

        assert wait_until(down, 10), seen
        assert all(status == 503 for status, _ in seen), seen
        assert _get(url + "/metrics/replica/2") == (503, "replica_down")
        assert _get(url + "/metrics/replica/1") == (200, "one /metrics")
    finally:
        proxy.terminate()
        proxy.wait(10)
        replicas[0].shutdown()
