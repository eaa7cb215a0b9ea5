"""Services are built once at start, whole; before that the chat path only says "starting"."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from runtime.app import Gateway, create_app
from runtime.keys import Authenticator
from runtime.records import RecordWriter
from runtime.router import Router
from tests.unit.scripted import config, model, provider, route

CFG = dataclasses.replace(
    config(
        [dataclasses.replace(provider("m", model("echo")), adapter="mock", credentials={})],
        [route("r", [("m", "echo")])],
    ),
    key_prefix="sy_test_",
)


def test_start_builds_every_service(tmp_path: Path) -> None:
    async def go() -> None:
        gw = Gateway(CFG, tmp_path, {})
        services = await gw.start()
        try:
            assert all(getattr(services, f.name) is not None for f in dataclasses.fields(services))
            assert isinstance(services.router, Router)
            assert isinstance(services.keys, Authenticator)
            assert isinstance(services.records, RecordWriter)
            assert services.limits is gw.limits and services.metrics is gw.metrics
            assert gw.services is services
            assert gw.readiness()[0]
        finally:
            await gw.stop()

    asyncio.run(go())


def test_before_the_lifespan_ran_chat_answers_503_starting(tmp_path: Path) -> None:
    app = create_app(CFG, tmp_path, {})
    messages: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert messages[0]["status"] == 503
    assert b'"code":"starting"' in messages[1]["body"]


def test_the_transport_reads_bodies_up_to_the_configured_limit(tmp_path: Path) -> None:
    """runtime.max_upstream_body_mb reaches the transport the adapters share."""
    small = dataclasses.replace(CFG, max_upstream_body_bytes=2 * 1024 * 1024)

    async def go() -> None:
        gw = Gateway(small, tmp_path, {})
        await gw.start()
        try:
            assert gw._transport is not None and gw._transport.max_body == 2 * 1024 * 1024
        finally:
            await gw.stop()

    asyncio.run(go())
