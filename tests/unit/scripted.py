"""In-process test kit for the request path: a scripted adapter, config builders, and the
chat handler driven over ASGI without a socket.

`ScriptedAdapter` answers each call with the next step scripted for the call's model:
`Reply` (a completion), `Fail` (an UpstreamError of a class), `Stream` (chunks: text
deltas, `Fail` mid-stream, `Stall` pauses), or `Stall` (no answer for a while). Every call is
kept in `calls`, so a test also asserts who was NOT tried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from runtime.adapters import Call, Chunk, Completion, Usage
from runtime.adapters.base import FlushHook
from runtime.chat import ChatHandler
from runtime.config import (
    SCHEMA_VERSION,
    Budget,
    Limits,
    LoggingConfig,
    ModelConfig,
    OrgConfig,
    ProviderConfig,
    RouteConfig,
    RuntimeConfig,
)
from runtime.errors import ErrorClass, Unservable, UpstreamError
from runtime.keys import AuthError, KeyInfo
from runtime.limits import LocalLimiter
from runtime.metrics import Metrics
from runtime.records import RequestRecord
from runtime.router import Router
from runtime.services import Services
from runtime.vocabulary import ERROR_CLASSES, Strategy
from tests.gateway_env import model_config, route_config

# Every error class the runtime knows (the fallback policy may list any of them).
ALL_CLASSES: frozenset[str] = frozenset(ERROR_CLASSES)
TOKEN = "sy_test_k1_secret"
NO_BUDGET = Budget(None, None)
KEY = KeyInfo("k1", "test", "acme", "ci", 0.0, None, None)

# --- the script ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A non-streamed answer; `notes` are what the adapter says it changed (`call.notes`)."""

    text: str = "hello"
    usage: Usage | None = field(default_factory=lambda: Usage(12, 3))
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unserve:
    """The candidate cannot take the request at all (`Unservable`, before anything is sent)."""

    reason: str = "cannot take it"


@dataclass(frozen=True)
class Crash:
    """The adapter fails with a plain exception (a bug reading a malformed answer)."""

    message: str = "list indices must be integers"


@dataclass(frozen=True)
class Think:
    """A streamed thinking delta (`reasoning_content`): progress, not content."""

    text: str = "hmm"


@dataclass(frozen=True)
class Fail:
    """An UpstreamError of `error_class` (before the answer, or mid-stream)."""

    error_class: ErrorClass
    message: str = "scripted failure"
    status: int | None = None
    retry_after: float | None = None

    def error(self) -> UpstreamError:
        return UpstreamError(
            self.error_class, self.message, status=self.status, retry_after=self.retry_after
        )


@dataclass(frozen=True)
class Stall:
    """Silence for `seconds` (before the answer, or between chunks)."""

    seconds: float = 3600.0


@dataclass(frozen=True)
class Stream:
    """A streamed answer: a role-only chunk, then `parts` (text deltas, Fail, Stall), then a
    finish chunk and, when `usage` is set, a usage chunk."""

    parts: Sequence[str | Fail | Stall | Think | Crash] = ("hel", "lo")
    usage: Usage | None = field(default_factory=lambda: Usage(12, 2))


Step = Reply | Fail | Stall | Stream | Unserve | Crash


class ScriptedAdapter:
    """An adapter whose answers per model are the steps scripted for it, in order."""

    def __init__(self, provider: ProviderConfig, script: dict[str, list[Step]]) -> None:
        self.provider = provider
        self.script = {name: list(steps) for name, steps in script.items()}
        self.calls: list[Call] = []

    def _next(self, call: Call) -> Step:
        self.calls.append(call)
        steps = self.script.get(call.model.name)
        if not steps:
            raise AssertionError(f"{self.provider.id}/{call.model.name} was not expected a call")
        return steps.pop(0)

    async def complete(self, call: Call) -> Completion:
        step = self._next(call)
        _raise_for(step)
        if isinstance(step, Stall):
            await asyncio.sleep(step.seconds)
            raise AssertionError("a stall must be cut by a timeout")
        assert isinstance(step, Reply), f"{step} is not a non-streamed answer"
        call.notes.extend(step.notes)
        return Completion(
            {"role": "assistant", "content": step.text}, "stop", step.usage, call.model.upstream
        )

    async def open_stream(self, call: Call) -> ScriptedStream:
        step = self._next(call)
        _raise_for(step)
        if isinstance(step, Stall):
            await asyncio.sleep(step.seconds)
            raise AssertionError("a stall must be cut by a timeout")
        assert isinstance(step, Stream), f"{step} is not a streamed answer"
        return ScriptedStream(step, call.model.upstream)


def _raise_for(step: Step) -> None:
    if isinstance(step, Fail):
        raise step.error()
    if isinstance(step, Unserve):
        raise Unservable(step.reason)
    if isinstance(step, Crash):
        raise IndexError(step.message)


class ScriptedStream:
    """The chunks of a scripted `Stream`."""

    def __init__(self, step: Stream, model: str) -> None:
        self.step = step
        self.usage: Usage | None = None
        self.model: str | None = model
        self.closed = False

    def watch_idle(self, hook: FlushHook) -> bool:
        return False

    async def __aiter__(self) -> Any:
        yield Chunk([_choice({"role": "assistant", "content": ""})], False)
        for part in self.step.parts:
            if isinstance(part, Fail):
                raise part.error()
            if isinstance(part, Crash):
                raise IndexError(part.message)
            if isinstance(part, Stall):
                await asyncio.sleep(part.seconds)
                continue
            if isinstance(part, Think):
                yield Chunk([_choice({"reasoning_content": part.text})], False, reasoning=True)
                continue
            yield Chunk([_choice({"content": part})], True)
        yield Chunk([_choice({}, "stop")], False)
        if self.step.usage is not None:
            self.usage = self.step.usage
            yield Chunk([], False, self.step.usage)

    async def aclose(self) -> None:
        self.closed = True


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


# --- config builders -------------------------------------------------------------------------


def model(
    name: str,
    *,
    window: int = 100_000,
    max_output: int | None = None,
    caps: Sequence[str] = ("streaming", "tools"),
    price: tuple[float, float] | None = (1.0, 2.0),
) -> ModelConfig:
    """A model named `name` (upstream id `up-<name>`); price in USD per 1M tokens."""
    return model_config(
        name, f"up-{name}", list(caps), window=window, price=price, max_out=max_output
    )


def provider(pid: str, *models: ModelConfig) -> ProviderConfig:
    """A provider of `models`, whose credential is the secret <PID>_KEY."""
    return ProviderConfig(
        id=pid,
        adapter="scripted",
        base_url=None,
        credentials={"api_key": f"{pid.upper()}_KEY"},
        credentials_optional=False,
        timeout_s=5.0,
        connect_timeout_s=1.0,
        models={m.name: m for m in models},
    )


def route(
    name: str,
    candidates: Sequence[tuple[str, str] | tuple[str, str, float]],
    *,
    strategy: Strategy = "priority",
    on: Sequence[str] = tuple(ALL_CLASSES),
    max_attempts: int = 3,
    first_byte_timeout_s: float = 1.0,
    cap: float | None = None,
) -> RouteConfig:
    """A route over (provider, model[, weight]) candidates."""
    return route_config(
        name,
        [(c[0], c[1]) for c in candidates],
        strategy=strategy,
        on=list(on),
        max_attempts=max_attempts,
        cap=cap,
        weights=[c[2] if len(c) > 2 else None for c in candidates],
        first_byte_timeout_s=first_byte_timeout_s,
    )


def config(
    providers: Sequence[ProviderConfig],
    routes: Sequence[RouteConfig],
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    key_budget: Budget = NO_BUDGET,
    request_timeout_s: float = 30.0,
) -> RuntimeConfig:
    """A runtime config of environment `test` with one org, `acme`, allowed every route."""
    return RuntimeConfig(
        schema_version=SCHEMA_VERSION,
        config_hash="cfg-hash",
        project="unit",
        environment="test",
        compose_project="unit-test",
        port=8000,
        workers=1,
        request_timeout_s=request_timeout_s,
        data_dir="",
        allow_explicit_models=True,
        key_prefix="sy_test_",
        providers={p.id: p for p in providers},
        routes={r.name: r for r in routes},
        orgs={"acme": OrgConfig("acme", None, None, frozenset(), None)},
        limits=Limits(rpm, tpm, key_budget, NO_BUDGET, {}),
        logging=LoggingConfig("sqlite", None, 30, 100, 100),
        price_table_hash="price-hash",
        secrets={},
    )


# --- services and the handler, in process ------------------------------------------------------


class ListSink:
    """A record sink that keeps the records."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def submit(self, record: RequestRecord) -> None:
        self.records.append(record)


class OneKey:
    """A key verifier that knows one key, TOKEN."""

    def verify(self, token: str | None) -> KeyInfo:
        if token != TOKEN:
            raise AuthError("invalid_api_key", "invalid API key")
        return KEY


def router(
    cfg: RuntimeConfig,
    adapters: dict[str, ScriptedAdapter],
    *,
    seed: int = 0,
    without_credentials: Sequence[str] = (),
) -> Router:
    """A router over scripted adapters, with a seeded random source."""
    creds: dict[str, dict[str, str] | None] = {
        pid: None if pid in without_credentials else {"api_key": "secret"} for pid in cfg.providers
    }
    return Router(cfg, dict(adapters), creds, rng=random.Random(seed))


@dataclass
class Gateway:
    """The chat handler over in-memory services."""

    services: Services
    sink: ListSink
    handler: ChatHandler


def gateway(cfg: RuntimeConfig, adapters: dict[str, ScriptedAdapter], *, seed: int = 0) -> Gateway:
    """Services (seeded router, limits, metrics, a list sink, one key) and the chat handler."""
    sink = ListSink()
    services = Services(
        config=cfg,
        router=router(cfg, adapters, seed=seed),
        limits=LocalLimiter(cfg.limits, cfg.workers),
        records=sink,
        metrics=Metrics(),
        keys=OneKey(),
    )
    return Gateway(services, sink, ChatHandler(services))


@dataclass
class Response:
    """What the client got."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def events(self) -> list[Any]:
        """The `data:` payloads of an SSE body, decoded (except [DONE])."""
        out: list[Any] = []
        for block in self.body.split(b"\n\n"):
            if block.startswith(b"data: "):
                data = block[6:]
                out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
        return out


async def post(handler: ChatHandler, body: dict[str, Any], token: str = TOKEN) -> Response:
    """POST /v1/chat/completions to `handler` over ASGI, in this event loop."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", b"Bearer " + token.encode())],
    }
    sent = False
    forever = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
        await forever.wait()  # the client stays connected
        raise AssertionError("unreachable")

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await handler(scope, receive, send)
    start = messages[0]
    assert start["type"] == "http.response.start"
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Response(start["status"], headers, b"".join(m.get("body", b"") for m in messages[1:]))


def chat(model_name: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    """A chat-completions body."""
    return {"model": model_name, "messages": [{"role": "user", "content": text}], **extra}
