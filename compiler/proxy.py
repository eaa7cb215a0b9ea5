"""The environment's reverse proxy (HAProxy): its configuration per gateway slot and its image.

Values are computed here; templates/haproxy.cfg.j2 and templates/proxy.Dockerfile.j2 only
place them. Why HAProxy, and what each setting does: docs/deploy.md ("The proxy").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jinja2

from compiler.models import GatewayConfig, Proxy

SLOTS = ("a", "b")
LISTEN_PORT = 8080  # the proxy's port inside its container
CONFIG_DIR = "/etc/switchyard/proxy"
CONFIG_FILE = f"{CONFIG_DIR}/haproxy.cfg"
# Host side of the mount, relative to a release directory: <env dir>/proxy, which holds the
# live haproxy.cfg (deploy copies a release's proxy/haproxy-<slot>.cfg there).
HOST_CONFIG_DIR = "../../proxy"
COMMAND = ["haproxy", "-W", "-db", "-f", CONFIG_FILE]
MAXREWRITE = 1024
# Only a proxy that must be recreated (its image or its compose definition changed) is
# stopped; it stops listening at once, so a short grace keeps that gap short.
STOP_GRACE_S = 5
# An old HAProxy worker outlives the drain by this much at most (hard-stop-after).
HARD_STOP_MARGIN_S = 30


@dataclass(frozen=True, slots=True)
class ErrorReply:
    status: int
    code: str
    type: str
    message: str
    retry_after: int = 0

    def body(self) -> str:
        """OpenAI's error shape, escaped for a double-quoted HAProxy string."""
        doc = {
            "error": {"message": self.message, "type": self.type, "param": None, "code": self.code}
        }
        return json.dumps(doc, separators=(",", ":")).replace("\\", "\\\\").replace('"', '\\"')


# Answers the proxy gives itself, in the API's error shape (a malformed or oversized request
# head is refused earlier, by HAProxy's HTTP parser, with its own short 400/408 page).
ERRORS = (
    ErrorReply(
        408,
        "request_timeout",
        "invalid_request_error",
        "the request body did not arrive in time (runtime.proxy.request_body_timeout_s)",
    ),
    ErrorReply(
        502,
        "bad_gateway",
        "server_error",
        "the gateway closed the connection without an answer; retry",
    ),
    ErrorReply(
        503,
        "no_gateway_ready",
        "server_error",
        "no gateway of this environment is ready to serve; retry shortly",
        1,
    ),
    ErrorReply(504, "gateway_timeout", "server_error", "the gateway did not answer in time"),
)


# `GET /metrics/replica/<n>` through the proxy is replica n's own `/metrics` (n from 1): each
# replica scraped on its own, so Prometheus's rate() is right with several replicas
# (docs/runtime.md "Metrics"). Never another replica's answer: 404 for a replica that does not
# exist, 503 while it is down.
REPLICA_METRICS_PATH = "/metrics/replica/"
REPLICA_METRICS_ERRORS = (
    ErrorReply(
        404,
        "replica_not_found",
        "invalid_request_error",
        "no such replica: /metrics/replica/<n> takes n from 1 to the environment's replicas",
    ),
    ErrorReply(503, "replica_down", "server_error", "this replica is not ready; retry shortly", 1),
)


def gateway_services(replicas: int, slot: str) -> list[str]:
    """Compose service names of one slot's gateways: gateway-a1, gateway-a2, ..."""
    return [f"gateway-{slot}{i}" for i in range(1, replicas + 1)]


def _seconds(value: float) -> str:
    """HAProxy time: whole seconds as `10s`, anything finer in milliseconds."""
    ms = round(value * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def drain_timeout_s(config: GatewayConfig, env_drain: float | None) -> float:
    """The environment's drain timeout: its own, else the longest request the gateway allows."""
    return float(env_drain if env_drain is not None else config.runtime.request_timeout_s)


def render_config(
    templates: jinja2.Environment,
    config: GatewayConfig,
    *,
    environment: str,
    compose_project: str,
    source_name: str,
    slot: str,
    servers: list[str],
    gateway_port: int,
    drain_s: float,
) -> str:
    """haproxy.cfg for one slot: the same settings, `servers` as the backend."""
    p: Proxy = config.runtime.proxy
    request_timeout = config.runtime.request_timeout_s
    return templates.get_template("haproxy.cfg.j2").render(
        source_name=source_name,
        environment=environment,
        compose_project=compose_project,
        slot=slot,
        max_connections=p.max_connections,
        hard_stop_after_s=int(drain_s) + HARD_STOP_MARGIN_S,
        head_max_bytes=p.request_head_max_bytes,
        bufsize=p.request_head_max_bytes + MAXREWRITE,
        maxrewrite=MAXREWRITE,
        head_timeout=_seconds(p.request_head_timeout_s),
        keep_alive_timeout=_seconds(p.keep_alive_timeout_s),
        client_timeout=_seconds(p.client_idle_timeout_s),
        body_timeout=_seconds(p.request_body_timeout_s),
        request_timeout=_seconds(request_timeout),
        server_timeout=_seconds(request_timeout + 10),
        errors=[
            {"status": e.status, "body": e.body(), "retry_after": e.retry_after} for e in ERRORS
        ],
        listen_port=LISTEN_PORT,
        replica_metrics_path=REPLICA_METRICS_PATH,
        replica_not_found=REPLICA_METRICS_ERRORS[0],
        replica_down=REPLICA_METRICS_ERRORS[1],
        servers=servers,
        gateway_port=gateway_port,
    )


def render_dockerfile(
    templates: jinja2.Environment, config: GatewayConfig, compose_project: str
) -> str:
    return templates.get_template("proxy.Dockerfile.j2").render(
        base_image=config.runtime.proxy.base_image,
        compose_project=compose_project,
        config_dir=CONFIG_DIR,
        listen_port=LISTEN_PORT,
        command=COMMAND,
    )
