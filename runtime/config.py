"""The compiled runtime config (`runtime.json`), loaded once at start into frozen objects.

The gateway reads this file and nothing else (docs/runtime-config.md is the contract). Loading
checks `schema_version` and the fields the gateway relies on; anything malformed is refused
with a message naming the field, so a bad file fails at start, never on a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSIONS = (1,)


class ConfigError(Exception):
    """The runtime config cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per 1M input tokens
    output: float  # USD per 1M output tokens

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    upstream: str
    context_window: int
    max_output_tokens: int | None
    capabilities: frozenset[str]
    price: Price | None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    id: str
    adapter: str
    base_url: str | None
    credentials: dict[str, str]  # field -> secret NAME
    credentials_optional: bool
    timeout_s: float
    connect_timeout_s: float
    models: dict[str, ModelConfig]


@dataclass(frozen=True, slots=True)
class CandidateRef:
    provider: str
    model: str
    weight: float | None


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    on: frozenset[str]
    max_attempts: int
    first_byte_timeout_s: float


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    strategy: str  # priority | cheapest | weighted
    requires: frozenset[str]
    min_context_window: int | None
    max_cost_per_request_usd: float | None
    fallback: FallbackPolicy
    candidates: tuple[CandidateRef, ...]
    dropped: tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True)
class OrgConfig:
    id: str
    routes: frozenset[str] | None  # None: every route
    allow_explicit_models: bool | None  # None: the top-level value
    byok_providers: frozenset[str]
    byok_encryption_key: str | None


@dataclass(frozen=True, slots=True)
class Budget:
    usd_per_day: float | None
    usd_per_month: float | None


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None
    tokens_per_minute: int | None
    key_budget: Budget
    org_budget: Budget  # per_org default
    org_budgets: dict[str, Budget]  # merged per org

    def budget_of_org(self, org: str) -> Budget:
        return self.org_budgets.get(org, self.org_budget)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    sink: str
    url_secret: str | None
    retention_days: int
    batch_size: int
    flush_interval_ms: int


@dataclass(frozen=True, slots=True)
class SecretSpec:
    name: str
    needed_by: str
    optional: bool


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    schema_version: int
    config_hash: str
    project: str
    environment: str
    compose_project: str
    port: int
    workers: int
    request_timeout_s: float
    data_dir: str
    allow_explicit_models: bool
    key_prefix: str
    providers: dict[str, ProviderConfig]
    routes: dict[str, RouteConfig]
    orgs: dict[str, OrgConfig]
    limits: Limits
    logging: LoggingConfig
    price_table_hash: str
    secrets: dict[str, SecretSpec]

    def explicit_models_allowed(self, org: str) -> bool:
        spec = self.orgs.get(org)
        if spec is not None and spec.allow_explicit_models is not None:
            return spec.allow_explicit_models
        return self.allow_explicit_models


def load_config(path: str | Path) -> RuntimeConfig:
    """Read and check a compiled runtime.json; raise ConfigError naming the problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the runtime config: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{p}: not valid JSON ({exc}); rebuild it with `python -m compiler build`"
        ) from None
    return parse_config(doc, source=str(p))


def parse_config(doc: Any, source: str = "runtime.json") -> RuntimeConfig:
    """Turn a decoded runtime.json document into a RuntimeConfig (see load_config)."""
    r = _Reader(source)
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    version = doc.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise ConfigError(
            f"{source}: schema_version {version!r} is not supported by this gateway "
            f"(it reads {', '.join(map(str, SCHEMA_VERSIONS))}); rebuild the config with the "
            "compiler of the same Switchyard release, or upgrade the gateway"
        )
    providers = {pid: _provider(r, pid, spec) for pid, spec in r.obj(doc, "providers").items()}
    routes = {name: _route(r, name, spec, providers) for name, spec in r.obj(doc, "routes").items()}
    orgs = {oid: _org(r, oid, spec) for oid, spec in r.obj(doc, "orgs").items()}
    server = r.obj(doc, "server")
    keys = r.obj(doc, "keys")
    log = r.obj(doc, "logging")
    return RuntimeConfig(
        schema_version=version,
        config_hash=r.text(doc, "config_hash"),
        project=r.text(doc, "project"),
        environment=r.text(doc, "environment"),
        compose_project=r.text(doc, "compose_project"),
        port=int(r.num(server, "server.port")),
        workers=int(r.num(server, "server.workers")),
        request_timeout_s=r.num(server, "server.request_timeout_s"),
        data_dir=r.text(server, "server.data_dir"),
        allow_explicit_models=bool(doc.get("allow_explicit_models", False)),
        key_prefix=r.text(keys, "keys.prefix"),
        providers=providers,
        routes=routes,
        orgs=orgs,
        limits=_limits(r, r.obj(doc, "limits")),
        logging=LoggingConfig(
            sink=r.text(log, "logging.sink"),
            url_secret=log.get("url_secret"),
            retention_days=int(r.num(log, "logging.retention_days")),
            batch_size=max(1, int(r.num(log, "logging.batch_size"))),
            flush_interval_ms=max(1, int(r.num(log, "logging.flush_interval_ms"))),
        ),
        price_table_hash=r.text(doc, "price_table_hash"),
        secrets={
            name: SecretSpec(
                name, str(spec.get("needed_by", "")), bool(spec.get("optional", False))
            )
            for name, spec in r.obj(doc, "secrets").items()
        },
    )


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, what: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {path}: {what}; rebuild it with `python -m compiler build`"
        )

    def obj(self, d: dict[str, Any], key: str, path: str | None = None) -> dict[str, Any]:
        v = d.get(key)
        if not isinstance(v, dict):
            raise self.fail(path or key, "expected an object")
        return v

    def text(self, d: dict[str, Any], path: str) -> str:
        v = d.get(path.rsplit(".", 1)[-1])
        if not isinstance(v, str):
            raise self.fail(path, "expected a string")
        return v

    def num(self, d: dict[str, Any], path: str) -> float:
        v = d.get(path.rsplit(".", 1)[-1])
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(path, "expected a number")
        return float(v)


def _price(v: Any) -> Price | None:
    if not isinstance(v, dict):
        return None
    return Price(float(v["input"]), float(v["output"]))


def _provider(r: _Reader, pid: str, spec: Any) -> ProviderConfig:
    path = f"providers.{pid}"
    if not isinstance(spec, dict):
        raise r.fail(path, "expected an object")
    models: dict[str, ModelConfig] = {}
    for name, m in r.obj(spec, "models", f"{path}.models").items():
        mp = f"{path}.models.{name}"
        if not isinstance(m, dict):
            raise r.fail(mp, "expected an object")
        models[name] = ModelConfig(
            name=name,
            upstream=r.text(m, f"{mp}.upstream"),
            context_window=int(r.num(m, f"{mp}.context_window")),
            max_output_tokens=m.get("max_output_tokens"),
            capabilities=frozenset(m.get("capabilities") or ()),
            price=_price(m.get("price")),
        )
    adapter = r.text(spec, f"{path}.adapter")
    return ProviderConfig(
        id=pid,
        adapter=adapter,
        base_url=spec.get("base_url"),
        credentials=dict(spec.get("credentials") or {}),
        credentials_optional=bool(spec.get("credentials_optional", False)),
        timeout_s=r.num(spec, f"{path}.timeout_s"),
        connect_timeout_s=r.num(spec, f"{path}.connect_timeout_s"),
        models=models,
    )


def _route(r: _Reader, name: str, spec: Any, providers: dict[str, ProviderConfig]) -> RouteConfig:
    path = f"routes.{name}"
    if not isinstance(spec, dict):
        raise r.fail(path, "expected an object")
    fb = r.obj(spec, "fallback", f"{path}.fallback")
    candidates = []
    for i, c in enumerate(spec.get("candidates") or ()):
        provider, model = c.get("provider"), c.get("model")
        if provider not in providers or model not in providers[provider].models:
            raise r.fail(f"{path}.candidates.{i}", f"{provider}/{model} is not under providers")
        candidates.append(CandidateRef(provider, model, c.get("weight")))
    return RouteConfig(
        name=name,
        strategy=r.text(spec, f"{path}.strategy"),
        requires=frozenset(spec.get("requires") or ()),
        min_context_window=spec.get("min_context_window"),
        max_cost_per_request_usd=spec.get("max_cost_per_request_usd"),
        fallback=FallbackPolicy(
            on=frozenset(fb.get("on") or ()),
            max_attempts=max(1, int(r.num(fb, f"{path}.fallback.max_attempts"))),
            first_byte_timeout_s=r.num(fb, f"{path}.fallback.first_byte_timeout_s"),
        ),
        candidates=tuple(candidates),
        dropped=tuple(spec.get("dropped") or ()),
    )


def _org(r: _Reader, oid: str, spec: Any) -> OrgConfig:
    if not isinstance(spec, dict):
        raise r.fail(f"orgs.{oid}", "expected an object")
    routes = spec.get("routes")
    byok = spec.get("byok") or {}
    return OrgConfig(
        id=oid,
        routes=None if routes is None else frozenset(routes),
        allow_explicit_models=spec.get("allow_explicit_models"),
        byok_providers=frozenset(byok.get("providers") or ()),
        byok_encryption_key=byok.get("encryption_key"),
    )


def _budget(v: Any) -> Budget:
    v = v if isinstance(v, dict) else {}
    return Budget(v.get("usd_per_day"), v.get("usd_per_month"))


def _limits(r: _Reader, doc: dict[str, Any]) -> Limits:
    per_key = doc.get("per_key") or {}
    return Limits(
        requests_per_minute=per_key.get("requests_per_minute"),
        tokens_per_minute=per_key.get("tokens_per_minute"),
        key_budget=_budget(per_key),
        org_budget=_budget(doc.get("per_org")),
        org_budgets={oid: _budget(v) for oid, v in (doc.get("orgs") or {}).items()},
    )
