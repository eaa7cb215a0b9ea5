"""Metrics a monitoring system can trust: label values come only from the config (no client
adds a series), a build-info metric, and the sum of a replica's workers (runtime/metrics.py)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from runtime.metrics import Metrics, WorkerSnapshots, merge, package_version, status_label
from tests.unit.scripted import Reply, ScriptedAdapter, chat, config, gateway, model, post
from tests.unit.scripted import provider as make_provider
from tests.unit.scripted import route as make_route

A = make_provider("a", model("one"))


def series(text: str) -> set[str]:
    """The sample lines' names and labels (what Prometheus stores as series)."""
    return {line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")}


def test_ten_thousand_unknown_model_names_add_no_series() -> None:
    gw = gateway(
        config([A], [make_route("r", [("a", "one")])]),
        {"a": ScriptedAdapter(A, {"one": [Reply()] * 3})},
    )

    async def go() -> None:
        for name in ("r", "a/one"):  # a route and a configured explicit provider/model
            assert (await post(gw.handler, chat(name))).status == 200
        assert (await post(gw.handler, chat("nope-0"))).status == 404
        assert (await post(gw.handler, chat("r"), token="sy_test_bad_key")).status == 401
        before = series(gw.services.metrics.render())
        for i in range(1, 10_000):
            name = f"nope-{i}" if i % 2 else f"a/made-up-{i}"
            assert (await post(gw.handler, chat(name))).status == 404
        after = gw.services.metrics.render()
        assert series(after) == before
        assert 'switchyard_requests_total{route="unknown",provider="-",status="404"} 10000' in (
            after
        )
        assert 'switchyard_requests_total{route="unknown",provider="-",status="401"} 1' in after
        assert 'switchyard_requests_total{route="r",provider="a",status="200"} 1' in after
        assert 'switchyard_requests_total{route="a/one",provider="a",status="200"} 1' in after
        assert "nope" not in after and "made-up" not in after

    asyncio.run(go())


def test_a_configured_route_refused_to_the_org_keeps_its_name() -> None:
    gw = gateway(config([A], [make_route("r", [("a", "one")])]), {"a": ScriptedAdapter(A, {})})
    resp = asyncio.run(post(gw.handler, {"model": "r", "messages": []}))
    assert resp.status == 400
    assert 'route="r",provider="-",status="400"' in gw.services.metrics.render()


def test_status_labels_are_bounded() -> None:
    assert status_label(200) == "200" and status_label(499) == "499"
    assert status_label(0) == status_label(10_000) == "other"


def test_build_info_names_version_config_hash_and_environment() -> None:
    m = Metrics()
    m.set_build_info("prod", "sha256:abc")
    version = package_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version)
    assert (
        f'switchyard_build_info{{version="{version}",config_hash="sha256:abc",'
        'environment="prod"} 1\n'
    ) in m.build_info
    assert "# TYPE switchyard_build_info gauge" in m.build_info
    assert "build_info" not in m.render()  # not summed across workers: added once


def _one(metrics: Metrics, route: str, status: str, seconds: float) -> None:
    metrics.requests.inc((route, "p", status))
    metrics.latency.observe((route, "p"), seconds)


def test_merge_sums_counters_and_histograms_and_keeps_own_gauges() -> None:
    a, b = Metrics(), Metrics()
    _one(a, "r", "200", 0.02)
    _one(b, "r", "200", 3.0)
    _one(b, "s", "500", 0.02)
    gauge = "# HELP g A gauge.\n# TYPE g gauge\ng 7\n"
    other_gauge = "# HELP g A gauge.\n# TYPE g gauge\ng 5\n"
    text = merge(a.render() + gauge, [b.render() + other_gauge])
    assert 'switchyard_requests_total{route="r",provider="p",status="200"} 2\n' in text
    assert 'switchyard_requests_total{route="s",provider="p",status="500"} 1\n' in text
    assert 'switchyard_request_duration_seconds_count{route="r",provider="p"} 2\n' in text
    assert 'switchyard_request_duration_seconds_bucket{route="r",provider="p",le="0.025"} 1\n' in (
        text
    )
    assert 'switchyard_request_duration_seconds_bucket{route="r",provider="p",le="+Inf"} 2\n' in (
        text
    )
    assert 'switchyard_request_duration_seconds_sum{route="r",provider="p"} 3.02\n' in text
    assert "\ng 7\n" in text and "g 12" not in text
    assert text.count("# TYPE switchyard_requests_total counter") == 1


def test_worker_snapshots_keep_exited_workers_and_replace_earlier_lives(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    gone = root / "h-99999999-12345"  # an earlier `serve` of this host: its process is gone
    gone.mkdir(parents=True)
    (gone / "5.prom").write_text("x")
    other_host = root / "g-99999999-12345"  # another replica on the shared volume
    other_host.mkdir()
    # Another `serve` on this host and data dir, still running: its numbers stay.
    alive = WorkerSnapshots(tmp_path, os.getppid(), host="h")
    alive.dir.mkdir()

    mine = WorkerSnapshots(tmp_path, os.getpid(), host="h")
    mine.prepare()
    assert not gone.exists() and other_host.exists() and alive.dir.exists()
    (mine.dir / "99999999.prom").write_text("exited worker")  # a worker that is gone
    mine.write("first", 2)
    mine.write("late and older", 1)  # an older snapshot finishing late changes nothing
    assert mine.path.read_text() == "first"
    assert mine.others() == ["exited worker"]
    assert sorted(p.name for p in mine.dir.iterdir()) == sorted(["99999999.prom", mine.path.name])
