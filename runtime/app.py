"""The gateway's ASGI application: `create_app(config)`.

`POST /v1/chat/completions` is the hot path and is served by a lean ASGI handler
(runtime/chat.py); everything else — models, health, readiness, metrics, and OpenAI-shaped
errors for unknown paths — is a FastAPI app behind it. All state (HTTP sessions, adapters,
key cache, record writer) is built in the lifespan, never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import paths, scrub
from runtime.adapters import ADAPTERS, Adapter
from runtime.adapters.transport import Transport
from runtime.byok_cache import ByokCache
from runtime.chat import ChatHandler, next_request_id, request_id_prefix
from runtime.config import ConfigError, RuntimeConfig, ShutdownTimeline
from runtime.embeddings import EmbeddingsHandler
from runtime.errors import GatewayError
from runtime.frontends.messages import (
    COUNT_TOKENS_ESTIMATE_HEADER,
    COUNT_TOKENS_ESTIMATE_VALUE,
    MessagesFrontend,
)
from runtime.frontends.responses import ResponsesFrontend
from runtime.keys import Authenticator
from runtime.limits import build_limiter
from runtime.metrics import SNAPSHOT_INTERVAL_S, Metrics, WorkerSnapshots, merge
from runtime.records import (
    CHAT_ENDPOINT,
    COUNT_TOKENS_ENDPOINT,
    EMBEDDINGS_ENDPOINT,
    MESSAGES_ENDPOINT,
    MODELS_ENDPOINT,
    RESPONSES_ENDPOINT,
    RecordWriter,
    RequestRecord,
    Spend,
    read_spend,
)
from runtime.records_pg import PgRecordWriter
from runtime.records_pg import read_spend as read_spend_pg
from runtime.router import Router
from runtime.services import Services, authenticate
from runtime.shutdown import Drain
from runtime.stores import open_byok_store, open_key_store

log = logging.getLogger("switchyard")

# Set by `serve --workers N` (runtime/cli.py) in every worker: the supervisor's pid, which
# names the directory where the replica's workers share their metrics.
SUPERVISOR_ENV = "SWITCHYARD_SUPERVISOR_PID"
# How often the key and BYOK caches check their store for a change (one cheap read: SQLite's
# data_version, or PostgreSQL's per-environment change counter): a revocation through any
# replica or host is refused by all within a second, BYOK changes within about one.
KEYS_REFRESH_S = 0.25
BYOK_REFRESH_S = 1.0


class Gateway:
    """One worker process's lifecycle: builds the `Services` at start, stops them at the end,
    and answers readiness. The request path gets the `Services`, never the Gateway."""

    def __init__(self, config: RuntimeConfig, data_dir: Path, environ: Mapping[str, str]) -> None:
        self.config = config
        self.data_dir = data_dir
        self.metrics = Metrics()
        self.metrics.set_build_info(config.environment, config.config_hash)
        self.environ = environ
        self.limits = build_limiter(config, environ, self._read_others_spend, self._read_spend)
        problems = unsendable_credentials(config, environ)
        if problems:
            raise ConfigError("; ".join(problems))
        self.credentials, self.not_ready = _credentials(config, environ)
        # Every configured secret's value is scrubbed from provider text (runtime/scrub.py).
        names = set(config.secrets).union(
            *(p.credentials.values() for p in config.providers.values())
        )
        scrub.register(environ.get(name) for name in names)
        self.started = time.time()
        self._stop = threading.Event()
        self._services: Services | None = None
        self._transport: Transport | None = None
        self._auth: Authenticator | None = None
        self._writer: RecordWriter | PgRecordWriter | None = None
        self._byok: ByokCache | None = None
        supervisor = environ.get(SUPERVISOR_ENV, "")
        self.snapshots = (
            WorkerSnapshots(data_dir, int(supervisor)) if supervisor.isdigit() else None
        )
        self._snapshot_seq = 0
        self._snapshot_task: asyncio.Task[None] | None = None

    @property
    def services(self) -> Services:
        """The services built by `start()` (the ASGI server runs the lifespan before serving)."""
        if self._services is None:
            raise RuntimeError("the gateway has not started")
        return self._services

    async def start(self) -> Services:
        """Open the transport, adapters, key cache, BYOK cache and record writer."""
        cfg = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        transport = self._transport = Transport(max_body=cfg.max_upstream_body_bytes)
        adapters: dict[str, Adapter] = {
            pid: ADAPTERS[p.adapter](p, transport) for pid, p in cfg.providers.items()
        }
        if any(o.byok_providers for o in cfg.orgs.values()):
            byok = open_byok_store(cfg, cfg.environment, self.data_dir, self.environ)
            self._byok = ByokCache(byok, cfg.environment, cfg.orgs, self.environ)
            self._byok.start_background_refresh(BYOK_REFRESH_S)
        router = Router(cfg, adapters, self.credentials, self._byok)
        keys = open_key_store(cfg, cfg.environment, self.data_dir, self.environ)
        auth = self._auth = Authenticator(keys, cfg.environment, cfg.key_prefix)
        auth.start_background_refresh(KEYS_REFRESH_S)
        writer: RecordWriter | PgRecordWriter
        if cfg.logging.sink == "postgres":
            # Records must not stop serving: an unreachable database is retried by the
            # writer (records held in memory); only an unusable schema refuses to start.
            writer = PgRecordWriter(
                self._records_url(),
                cfg.environment,
                cfg.logging.batch_size,
                cfg.logging.flush_interval_ms,
                cfg.logging.retention_days,
                buffer_max_records=cfg.logging.buffer_max_records,
            )
        else:
            writer = RecordWriter(
                self.data_dir / paths.REQUESTS_DB,
                cfg.logging.batch_size,
                cfg.logging.flush_interval_ms,
                cfg.logging.retention_days,
            )
        self._writer = writer
        writer.start()
        services = self._services = Services(
            config=cfg,
            router=router,
            limits=self.limits,
            records=writer,
            metrics=self.metrics,
            keys=auth,
        )
        # Everything built so far lives as long as the process: move it out of the cyclic
        # collector's sight, and collect young objects less often (each request allocates a
        # few hundred short-lived objects; a gen-0 pass every 700 of them is pure overhead).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        if self.snapshots is not None:
            self.snapshots.prepare()
            await self._snapshot()
            self._snapshot_task = asyncio.ensure_future(self._snapshot_loop())
        await self.limits.start()
        return services

    async def stop(self) -> None:
        """Stop the refresh threads, close the transport, write what the writer holds."""
        self._stop.set()
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
        await self.limits.close()
        if self._auth is not None:
            self._auth.stop()
        if self._byok is not None:
            self._byok.stop()
        if self._transport is not None:
            await self._transport.close()
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._writer.close)
        if self.snapshots is not None:
            await self._snapshot()  # the final numbers: the replica's totals never go down

    def _records_url(self) -> str:
        """The PostgreSQL URL of the records sink, from the secret `logging.url_secret`."""
        name = self.config.logging.url_secret
        url = self.environ.get(name, "") if name else ""
        if not url:
            raise ConfigError(
                f"logging.sink is postgres: set the environment variable {name or '(unnamed)'}"
                " to the database URL (logging.url_secret names it)"
            )
        return url

    def _read_spend(self, day_start: float, month_start: float, exclude: str = "") -> Spend:
        """The spend in the request log since the starts of the UTC day and month, without
        the records whose request id starts with `exclude` (blocking: called in a thread)."""
        if self.config.logging.sink == "postgres":
            return read_spend_pg(
                self._records_url(),
                day_start,
                month_start,
                self.config.environment,
                exclude_prefix=exclude,
            )
        return read_spend(self.data_dir / paths.REQUESTS_DB, day_start, month_start, exclude)

    def _read_others_spend(self, day_start: float, month_start: float) -> Spend:
        """The spend of every other process: the in-process limiter counts its own in memory
        (so a record still queued in the writer is neither missed nor counted twice)."""
        return self._read_spend(day_start, month_start, request_id_prefix())

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the /readyz body)."""
        problems = list(self.not_ready)
        services = self._services
        if services is None:
            problems.append("starting")
        usable = sum(
            1
            for r in (services.router.routes.values() if services is not None else ())
            if any(c.credentials is not None for c in r.candidates)
        )
        if self.config.routes and usable == 0:
            problems.append("no route has a provider with credentials")
        warnings = self._byok.problems() if self._byok is not None else []
        if isinstance(self._writer, PgRecordWriter):
            warnings = [*warnings, *self._writer.problems()]
        if self._auth is not None:
            warnings += self._auth.warnings()
        limit_problems, limit_warnings = self.limits.readiness()
        problems += limit_problems
        warnings = warnings + limit_warnings
        return not problems, {
            "ready": not problems,
            "problems": problems,
            "warnings": warnings,
            "environment": self.config.environment,
            "config_hash": self.config.config_hash,
            "routes_usable": usable,
            "instance": _INSTANCE,
        }

    def process_metrics(self) -> str:
        """This process's counters, histograms and gauges in Prometheus text (no build info):
        what `/metrics` shows with one worker and what each worker's snapshot holds."""
        return self.metrics.render() + self.writer_metrics() + self.limits.render_metrics()

    async def render_metrics(self) -> str:
        """`/metrics`: the whole replica. With several workers this process's live numbers are
        written as its snapshot first (so a later scrape answered by another worker never
        sees less), then summed with every other worker's last snapshot (in a thread: file
        I/O); then the build info."""
        own = self.process_metrics()
        snapshots = self.snapshots
        if snapshots is None:
            return own + self.metrics.build_info
        self._snapshot_seq += 1
        seq = self._snapshot_seq

        def exchange() -> list[str]:
            with contextlib.suppress(OSError):
                snapshots.write(own, seq)
            return snapshots.others()

        others = await asyncio.get_running_loop().run_in_executor(None, exchange)
        return merge(own, others) + self.metrics.build_info

    async def _snapshot(self) -> None:
        snapshots = self.snapshots
        if snapshots is None:
            return
        self._snapshot_seq += 1
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, snapshots.write, self.process_metrics(), self._snapshot_seq
            )
        except OSError as exc:
            log.warning("could not write the metrics snapshot %s: %s", snapshots.path, exc)

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)
            await self._snapshot()

    def writer_metrics(self) -> str:
        """The record writer's counters in Prometheus text (empty before start)."""
        return _writer_metrics(self._writer) if self._writer is not None else ""


def _credentials(
    config: RuntimeConfig, environ: Mapping[str, str]
) -> tuple[dict[str, dict[str, str] | None], list[str]]:
    """Provider credential values from the environment (read once), and readiness problems."""
    creds: dict[str, dict[str, str] | None] = {}
    for pid, p in config.providers.items():
        values = {field: environ.get(name, "") for field, name in p.credentials.items()}
        creds[pid] = values if all(values.values()) else None
    problems = [
        f"required secret {name} is not set (needed by {spec.needed_by})"
        for name, spec in sorted(config.secrets.items())
        if not spec.optional and not environ.get(name)
    ]
    return creds, problems


def unsendable_credentials(config: RuntimeConfig, environ: Mapping[str, str]) -> list[str]:
    """Provider credentials that cannot travel in an HTTP header (a character outside
    Latin-1, or a line break), one line each naming the provider and the secret — never the
    value. The gateway refuses to start with any (`serve` prints them)."""
    out = []
    for pid, p in sorted(config.providers.items()):
        for field, name in sorted(p.credentials.items()):
            value = environ.get(name, "")
            why = None
            if "\r" in value or "\n" in value:
                why = "contains a line break"
            else:
                try:
                    value.encode("latin-1")
                except UnicodeEncodeError:
                    why = "contains a character outside Latin-1"
            if why is not None:
                out.append(
                    f"secret {name} ({field} of provider {pid}) {why} and cannot be sent in an "
                    "HTTP header; set it to the provider's key exactly"
                )
    return out


# Which process answered: the container's hostname (its short id) in a deployed gateway. Deploy
# reads it from /readyz through the proxy to see which release serves.
_INSTANCE = socket.gethostname()


def create_app(
    config: RuntimeConfig,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    shutdown_timeout_s: float | None = None,
    hook_signals: bool = False,
) -> ASGIApp:
    """The gateway as an ASGI app. `data_dir` defaults per runtime.paths.data_dir.

    `hook_signals` (what `serve` passes): begin draining the chat requests in flight when the
    server gets SIGTERM/SIGINT (runtime/shutdown.py); `shutdown_timeout_s` how long they may
    still run then (default: ShutdownTimeline's, request_timeout_s + a margin)."""
    drain = Drain(ShutdownTimeline.of(config.request_timeout_s, shutdown_timeout_s).drain_s)
    gw = Gateway(
        config,
        data_dir or paths.data_dir(config.environment, configured=config.data_dir),
        environ if environ is not None else os.environ,
    )

    # The API handlers by path (chat completions, responses, messages, embeddings); until the
    # lifespan built the services, those requests are answered "starting" (an ASGI server runs
    # the lifespan before it serves, so only a misused app sees that).
    handlers: dict[str, ASGIApp] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services = await gw.start()
        handlers.update(
            {
                CHAT_ENDPOINT: ChatHandler(services, drain),
                RESPONSES_ENDPOINT: ChatHandler(services, drain, ResponsesFrontend()),
                MESSAGES_ENDPOINT: ChatHandler(services, drain, MessagesFrontend()),
                EMBEDDINGS_ENDPOINT: EmbeddingsHandler(services, drain),
            }
        )
        if hook_signals:
            drain.hook_signals()
        try:
            yield
        finally:
            # Every request in flight ends and hands over its record before the writer closes.
            if not await drain.close():
                log.error("requests still in flight at shutdown; their records are lost")
            await gw.stop()

    api = FastAPI(
        title="Switchyard gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    api.state.gateway = gw

    @api.get("/healthz")
    async def healthz() -> Response:
        return _json(
            200,
            {"status": "ok", "environment": config.environment, "config_hash": config.config_hash},
        )

    @api.get("/readyz")
    async def readyz() -> Response:
        ok, detail = gw.readiness()
        return _json(200 if ok else 503, detail)

    @api.get("/metrics")
    async def metrics() -> Response:
        text = await gw.render_metrics()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/v1/models")
    async def models(request: Request) -> Response:
        # Every request gets a record, like a chat request (endpoint "/v1/models").
        start = time.perf_counter()
        services = gw.services
        rec = _models_record(config)
        try:
            key = authenticate(services.keys, request.headers, rec)
            rec.key_id, rec.org = key.id, key.org
            org = config.orgs.get(key.org)
            created = int(gw.started)
            anthropic = _anthropic_client(request)
            data = [
                _model_object(mid, created, anthropic) for mid in services.router.model_ids(org)
            ]
            if anthropic:  # Anthropic's page: the whole list at once
                first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
                page = {"data": data, "has_more": False, "first_id": first, "last_id": last}
                response = _json(200, page)
            else:
                response = _json(200, {"object": "list", "data": data})
            rec.status = 200
        except GatewayError as exc:
            rec.status, rec.error_code = exc.status, exc.code
            response = _anthropic_error(exc) if _anthropic_client(request) else _error(exc)
        response.headers["x-request-id"] = rec.request_id
        rec.latency_ms = rec.ttfb_ms = (time.perf_counter() - start) * 1000
        services.records.submit(rec)
        return response

    @api.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> Response:
        # One model by id; a `provider/model` id arrives URL-encoded (openai%2Fgpt-4o) or not.
        start = time.perf_counter()
        services = gw.services
        rec = _models_record(config)
        anthropic = _anthropic_client(request)
        try:
            key = authenticate(services.keys, request.headers, rec)
            rec.key_id, rec.org = key.id, key.org
            org = config.orgs.get(key.org)
            if model_id not in services.router.model_ids(org):
                raise GatewayError(
                    404,
                    "model_not_found",
                    f"'{model_id}' is not a model this key can use; GET /v1/models lists them",
                    param="model",
                )
            response = _json(200, _model_object(model_id, int(gw.started), anthropic))
            rec.status = 200
        except GatewayError as exc:
            rec.status, rec.error_code = exc.status, exc.code
            response = _anthropic_error(exc) if anthropic else _error(exc)
        response.headers["x-request-id"] = rec.request_id
        rec.latency_ms = rec.ttfb_ms = (time.perf_counter() - start) * 1000
        services.records.submit(rec)
        return response

    @api.post(COUNT_TOKENS_ENDPOINT)
    async def count_tokens(request: Request) -> Response:
        # Anthropic's token counting: an estimate (runtime/tokens.py), flagged as one.
        start = time.perf_counter()
        services = gw.services
        rec = _models_record(config, COUNT_TOKENS_ENDPOINT)
        try:
            key = authenticate(services.keys, request.headers, rec)
            rec.key_id, rec.org = key.id, key.org
            counted = _MESSAGES.count_tokens(await request.body())
            response = _json(200, counted)
            response.headers[COUNT_TOKENS_ESTIMATE_HEADER] = COUNT_TOKENS_ESTIMATE_VALUE
            rec.status = 200
        except GatewayError as exc:
            rec.status, rec.error_code = exc.status, exc.code
            response = _anthropic_error(exc)
        response.headers["x-request-id"] = rec.request_id
        rec.latency_ms = rec.ttfb_ms = (time.perf_counter() - start) * 1000
        services.records.submit(rec)
        return response

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and request.url.path.startswith(RESPONSES_ENDPOINT + "/"):
            err = GatewayError(
                404,
                "not_found",
                "this gateway does not store responses, so there is none to retrieve, cancel "
                "or delete; send the whole conversation in `input` (docs/api-responses.md)",
            )
        elif exc.status_code == 404:
            err = GatewayError(
                404,
                "not_found",
                f"{request.method} {request.url.path} is not served here; this gateway serves "
                + ", ".join(SERVED),
            )
        else:
            code = {405: "method_not_allowed"}.get(exc.status_code, "error")
            err = GatewayError(exc.status_code, code, str(exc.detail))
        if request.url.path.startswith(MESSAGES_ENDPOINT):
            return _anthropic_error(err)
        return _error(err)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await api(scope, receive, send)
            return
        handler = handlers.get(scope["path"])
        if handler is not None:
            await handler(scope, receive, send)
        elif scope["path"] in API_PATHS:
            await _not_started(scope, receive, send)
        else:
            await api(scope, receive, _with_request_id(send))

    app.gateway = gw  # type: ignore[attr-defined]
    return app


async def _not_started(scope: Scope, receive: Receive, send: Send) -> None:
    await _error(GatewayError(503, "starting", "the gateway is starting"))(
        scope, receive, _with_request_id(send)
    )


# What the gateway serves, for the 404 of any other path.
SERVED = (
    f"POST {CHAT_ENDPOINT}",
    f"POST {RESPONSES_ENDPOINT}",
    f"POST {MESSAGES_ENDPOINT}",
    f"POST {COUNT_TOKENS_ENDPOINT}",
    f"POST {EMBEDDINGS_ENDPOINT}",
    f"GET {MODELS_ENDPOINT}",
    f"GET {MODELS_ENDPOINT}/{{id}}",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
)
API_PATHS = frozenset({CHAT_ENDPOINT, RESPONSES_ENDPOINT, MESSAGES_ENDPOINT, EMBEDDINGS_ENDPOINT})


def _with_request_id(send: Send) -> Send:
    """`send` that gives a response without an `x-request-id` one (every response has one:
    health, metrics, 404s; the recorded endpoints set their record's)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(k.lower() == b"x-request-id" for k, _ in headers):
                headers.append((b"x-request-id", next_request_id().encode()))
                message = {**message, "headers": headers}
        await send(message)

    return sending


_MESSAGES = MessagesFrontend()  # for count_tokens and Anthropic-shaped errors (stateless)


def _anthropic_client(request: Request) -> bool:
    """The request comes from Anthropic's SDK (it always sends `anthropic-version`): its
    model lookups are answered in Anthropic's shape."""
    return "anthropic-version" in request.headers


def _model_object(model_id: str, created: int, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        return {"type": "model", "id": model_id, "display_name": model_id, "created_at": stamp}
    return {"id": model_id, "object": "model", "created": created, "owned_by": "switchyard"}


def _anthropic_error(exc: GatewayError) -> Response:
    headers = dict(exc.headers)
    return Response(
        _MESSAGES.error_body(exc),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(exc: GatewayError) -> Response:
    headers = dict(exc.headers)
    if exc.status == 401:
        headers["www-authenticate"] = 'Bearer realm="switchyard"'
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


def _models_record(config: RuntimeConfig, endpoint: str = MODELS_ENDPOINT) -> RequestRecord:
    """The record of a `GET /v1/models` (or another endpoint's) request, before
    authentication."""
    return RequestRecord.begin(
        next_request_id(),
        config.environment,
        config.price_table_hash,
        config.config_hash,
        endpoint,
    )


def _writer_metrics(writer: RecordWriter | PgRecordWriter) -> str:
    failures, dropped = writer.failures, writer.dropped
    return (
        "# HELP switchyard_record_write_failures_total"
        " Failed batch writes of the request log (retried).\n"
        "# TYPE switchyard_record_write_failures_total counter\n"
        f"switchyard_record_write_failures_total {failures}\n"
        "# HELP switchyard_records_dropped_total"
        " Request records given up on (write failures, a full buffer, shutdown).\n"
        "# TYPE switchyard_records_dropped_total counter\n"
        f"switchyard_records_dropped_total {dropped}\n"
    )


def app_from_env(hook_signals: bool = False) -> ASGIApp:
    """uvicorn factory for `--workers N`: the config path, data dir and shutdown timeout
    (`SWITCHYARD_SHUTDOWN_TIMEOUT_S`, optional) come from the environment."""
    from runtime.config import load_config

    config = load_config(os.environ["SWITCHYARD_CONFIG"])
    data_dir = os.environ.get("SWITCHYARD_DATA_DIR")
    shutdown = os.environ.get(SHUTDOWN_TIMEOUT_ENV)
    return create_app(
        config,
        Path(data_dir) if data_dir else None,
        shutdown_timeout_s=float(shutdown) if shutdown else None,
        hook_signals=hook_signals,
    )


SHUTDOWN_TIMEOUT_ENV = "SWITCHYARD_SHUTDOWN_TIMEOUT_S"
