"""The shutdown timeline (docs/runtime.md, "Shutdown"), one source for every stage: the app's
drain, uvicorn's graceful timeout, compose's stop grace period and the deployer's wait for
`docker stop` — each longer than the one before, all derived from runtime.request_timeout_s.
And the `Drain` itself: which requests a SIGTERM cancels at once, which at its end.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.models import Runtime
from compiler.render import ImageInputs, render_environment
from compiler.validate import check_bytes
from deployer.steps import STOP_TIMEOUT_S
from runtime.cli import build_parser, uvicorn_options
from runtime.config import ShutdownTimeline
from runtime.records import RecordWriter
from runtime.records_pg import _CONNECT_TIMEOUT_S, PgRecordWriter
from runtime.shutdown import Drain
from tests.unit.scripted import (
    Gateway,
    Response,
    ScriptedAdapter,
    Stall,
    Step,
    Stream,
    chat,
    config,
    gateway,
    model,
    post,
    provider,
    route,
)

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_TEXT = (ROOT / "gateway.yaml").read_text()
INPUTS = ImageInputs(runtime_digest="0" * 64, requirements="fastapi==0\n")


def _stop_grace(text: str, env: str) -> str:
    result = check_bytes(text.encode())
    assert result.ok and result.config is not None, [d.message for d in result.diagnostics]
    files = render_environment(
        result.config, env, INPUTS, source_name="gateway.yaml", source_sha256="0" * 64
    )
    compose = yaml.safe_load(files["compose.yaml"])
    return str(compose["x-gateway"]["stop_grace_period"])


def test_the_timeline_of_the_default_request_timeout() -> None:
    t = ShutdownTimeline.of(300)
    assert (t.drain_s, t.server_s, t.stop_grace_s) == (302, 305, 325)
    # `serve --shutdown-timeout` moves the first stage, and the others with it.
    assert ShutdownTimeline.of(300, 1.0) == ShutdownTimeline(1.0, 4.0, 24)
    assert ShutdownTimeline.of(0.5).stop_grace_s == 26  # whole seconds, rounded up


@pytest.mark.parametrize("env", ["dev", "staging", "production"])
def test_compose_stop_grace_is_rendered_from_the_request_timeout(env: str) -> None:
    assert _stop_grace(GATEWAY_TEXT, env) == "325s"  # request_timeout_s: 300 (the default)
    assert GATEWAY_TEXT.count("  allow_explicit_models: true\n") == 1
    short = GATEWAY_TEXT.replace(
        "  allow_explicit_models: true\n",
        "  allow_explicit_models: true\n  request_timeout_s: 45\n",
    )
    assert _stop_grace(short, env) == "70s"


@pytest.mark.parametrize("timeout_s", [0.5, 30, 300, 3600])
def test_each_stage_ends_before_the_next_one_can_kill_it(timeout_s: float) -> None:
    t = ShutdownTimeline.of(timeout_s)
    graceful = uvicorn_options("127.0.0.1", 8000, "warning", t)["timeout_graceful_shutdown"]
    # A request may run request_timeout_s: the drain lets it; uvicorn's backstop comes
    # after the drain; the lifespan's end (the last records, then the writer's close, the
    # longer of SQLite's and PostgreSQL's) fits before compose's SIGKILL even after the backstop.
    settle = inspect.signature(Drain.close).parameters["settle_s"].default
    sqlite_close = inspect.signature(RecordWriter.close).parameters["timeout"].default + 1.0
    pg_close = (
        inspect.signature(PgRecordWriter.close).parameters["timeout"].default
        + _CONNECT_TIMEOUT_S
        + 1.0
    )
    assert timeout_s < t.drain_s < graceful
    assert graceful + settle + max(sqlite_close, pg_close) < t.stop_grace_s
    assert t.stop_grace_s + 30 <= STOP_TIMEOUT_S


def test_the_deployer_waits_for_docker_stop_at_the_longest_allowed_request_timeout() -> None:
    longest = next(
        m.le for m in Runtime.model_fields["request_timeout_s"].metadata if hasattr(m, "le")
    )
    assert ShutdownTimeline.of(float(longest)).stop_grace_s + 30 <= STOP_TIMEOUT_S


def test_serve_shutdown_timeout_takes_seconds_and_refuses_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--config", "x.json", "--shutdown-timeout", "2.5"])
    assert args.shutdown_timeout == 2.5
    assert parser.parse_args(["serve", "--config", "x.json"]).shutdown_timeout is None
    for bad in ("-1", "soon", "nan", "inf"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["serve", "--config", "x.json", "--shutdown-timeout", bad])
        assert exc.value.code == 2
        assert "--shutdown-timeout" in capsys.readouterr().err


async def _parked() -> None:
    await asyncio.sleep(60)


def test_begin_cancels_only_requests_still_reading_their_body_and_end_all_others() -> None:
    async def scenario() -> None:
        drain = Drain(0.05)
        reading = asyncio.ensure_future(_parked())
        running = asyncio.ensure_future(_parked())
        drain.tasks.update({reading: True, running: False})
        await asyncio.sleep(0)
        drain.begin()
        await asyncio.sleep(0.01)
        assert drain.draining and not drain.ending
        assert reading.cancelled() and not running.done()
        drain.tasks.pop(reading)
        await asyncio.sleep(0.1)  # drain_s passed
        assert drain.ending and running.cancelled()
        drain.tasks.pop(running)
        assert await drain.wait_idle(0.1)

    asyncio.run(scenario())


def test_close_ends_what_is_still_in_flight_and_says_whether_all_finished() -> None:
    async def scenario() -> None:
        drain = Drain(60)
        stuck = asyncio.ensure_future(_parked())
        drain.tasks[stuck] = False
        await asyncio.sleep(0)
        assert not await drain.close(settle_s=0.05)  # nobody removed it: still in flight
        assert stuck.cancelled() and drain.ending

    asyncio.run(scenario())


def test_the_signal_hook_chains_onto_the_servers_handler_and_never_onto_a_default() -> None:
    seen: list[int] = []
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    async def scenario() -> None:
        drain = Drain(60)
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert drain.hook_signals()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0.01)
        assert seen == [signal.SIGTERM] and drain.draining
        drain.end()

    async def defaults() -> bool:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        hooked = Drain(60).hook_signals()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        return hooked

    try:
        asyncio.run(scenario())
        assert not asyncio.run(defaults())  # no server's handler: nothing to chain onto
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])


# --- the chat handler's answers (in-process, scripted upstreams) -----------------------------

A = provider("a", model("one", price=(1.0, 2.0)))


def _gateway(steps: list[Step]) -> Gateway:
    cfg = config([A], [route("r", [("a", "one")])])
    return gateway(cfg, {"a": ScriptedAdapter(A, {"one": steps})})


def test_a_request_arriving_while_draining_gets_a_503_and_a_record_with_that_status() -> None:
    gw = _gateway([])
    gw.handler.drain.draining = True
    resp = asyncio.run(post(gw.handler, chat("r")))
    assert resp.status == 503
    assert resp.json()["error"]["code"] == "gateway_shutting_down"
    assert resp.headers["retry-after"] == "1"
    [rec] = gw.sink.records
    assert (rec.status, rec.error_code, rec.key_id) == (503, "gateway_shutting_down", "k1")


def _ended_by_the_drain(gw: Gateway, body: dict[str, Any]) -> Response:
    async def scenario() -> Response:
        call = asyncio.ensure_future(post(gw.handler, body))
        await asyncio.sleep(0.2)  # past the body, waiting on the upstream
        assert list(gw.handler.drain.tasks.values()) == [False]
        gw.handler.drain.begin()
        await asyncio.sleep(0.05)
        assert not call.done()  # draining lets it run
        gw.handler.drain.end()
        return await call

    return asyncio.run(scenario())


def test_a_stream_still_running_when_the_drain_ends_gets_an_error_event_not_done() -> None:
    gw = _gateway([Stream(["hel", "lo", Stall()])])
    resp = _ended_by_the_drain(gw, chat("r", stream=True))
    assert resp.status == 200
    events = resp.events()
    assert events[-1]["error"]["code"] == "gateway_shutting_down"
    assert b"[DONE]" not in resp.body
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "hello"
    [rec] = gw.sink.records
    assert (rec.status, rec.broke_after_commit, rec.error_code) == (
        200,
        True,
        "gateway_shutting_down",
    )
    assert rec.output_tokens is not None and rec.usage_estimated


def test_a_request_not_answered_when_the_drain_ends_gets_a_503() -> None:
    gw = _gateway([Stall()])
    resp = _ended_by_the_drain(gw, chat("r"))
    assert resp.status == 503
    assert resp.json()["error"]["code"] == "gateway_shutting_down"
    [rec] = gw.sink.records
    assert (rec.status, rec.error_code, rec.broke_after_commit) == (
        503,
        "gateway_shutting_down",
        False,
    )
    assert not gw.handler.drain.tasks
