"""The compiled runtime config (`runtime.json`): the frozen typed classes that ARE its contract.

The compiler builds these objects and writes them with `RuntimeConfig.to_json`; the gateway
reads the file with `load_config` (`RuntimeConfig.from_json`) and nothing else;
docs/runtime-config.md describes every field. The round trip is exact: `from_json` of a
compiled file, written again with `to_json`, gives the same bytes (canonical JSON: sorted
keys, two-space indent, one trailing newline).

Loading checks `schema_version` and the type of every field; anything malformed is refused
with a message naming the field, so a bad file fails at start, never on a request. Fields a
newer file may add are ignored; the optional ones an older file lacks take their defaults.

Standard library and runtime/vocabulary.py only: the compiler imports this module, so it
must stay light.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias, cast

from runtime.vocabulary import (
    ADAPTER_NAMES,
    KEYS_STORES,
    LIMITS_STORES,
    LOG_SINKS,
    ON_UNAVAILABLE,
    ROUTE_KINDS,
    STRATEGIES,
    Adapter,
    KeysStore,
    LimitsStore,
    LogSink,
    OnUnavailable,
    RouteKind,
    Strategy,
)

SCHEMA_VERSION = 1  # what the compiler of this release writes
SCHEMA_VERSIONS = (SCHEMA_VERSION,)  # what this gateway reads
DEFAULT_RECORD_BUFFER = 100_000  # logging.buffer_max_records

# A JSON value as `json.loads` returns it and `json.dumps` takes it.
JsonValue: TypeAlias = "dict[str, JsonValue] | list[JsonValue] | str | int | float | bool | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"


DEFAULT_MAX_UPSTREAM_BODY = 64 * 1024 * 1024  # bytes; runtime.max_upstream_body_mb's default

# Shutdown (docs/runtime.md, "Shutdown"): after SIGTERM, requests in flight may run until
# request_timeout_s + DRAIN margin (each one ends by its own timeout before that); whatever still
# runs then is ended (error event / 503). uvicorn's own graceful timeout is a backstop a little
# later; the container's stop grace adds the time to write the last records and exit.
SHUTDOWN_DRAIN_MARGIN_S = 2.0
SHUTDOWN_SERVER_MARGIN_S = 3.0
# The lifespan's end: up to 3 s for the last requests' records, up to 14 s for the record
# writer's close (PostgreSQL unreachable: 10 s of retries, a 3 s connect); the rest to exit.
SHUTDOWN_FLUSH_MARGIN_S = 20.0


@dataclass(frozen=True, slots=True)
class ShutdownTimeline:
    """How long each stage of a graceful shutdown may take, in seconds after SIGTERM."""

    drain_s: float  # requests in flight may run this long; then they are ended
    server_s: float  # uvicorn's timeout_graceful_shutdown (a backstop, never reached)
    stop_grace_s: int  # compose stop_grace_period: SIGKILL after this

    @classmethod
    def of(cls, request_timeout_s: float, drain_s: float | None = None) -> ShutdownTimeline:
        """The timeline for a gateway whose longest request is `request_timeout_s`
        (`drain_s` shortens or lengthens the first stage: `serve --shutdown-timeout`)."""
        drain = request_timeout_s + SHUTDOWN_DRAIN_MARGIN_S if drain_s is None else drain_s
        server = drain + SHUTDOWN_SERVER_MARGIN_S
        return cls(drain, server, math.ceil(server + SHUTDOWN_FLUSH_MARGIN_S))


class ConfigError(Exception):
    """The runtime config cannot be used; the message names the file and the field."""


def canonical_json(doc: JsonValue) -> str:
    """The canonical text of a JSON document: sorted keys, two-space indent, trailing newline."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _sorted(words: frozenset[str]) -> list[JsonValue]:
    return [w for w in sorted(words)]


# ---------------------------------------------------------------------------------------
# The classes, leaves first. Each has `to_dict` (its JSON object); RuntimeConfig also has
# `to_json`, `from_json` and `from_dict`, which read every class below through `_Reader`.


# Anthropic's cache-write multipliers of the base input price, used when a price leaves the
# cache-write rates unset (docs/runtime.md "Costs"): 5-minute writes 1.25x, 1-hour writes 2x.
CACHE_WRITE_FACTOR = 1.25
CACHE_WRITE_1H_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Rates that replace a price's own above a prompt size (`price.tiers[i]`).

    A request whose input tokens (cached and cache-written ones included) are MORE than
    `above_input_tokens` is billed every token at these rates (Gemini 2.5 Pro above 200,000
    prompt tokens, Claude Sonnet 4 long context). Unset cache rates follow the same defaults
    as the price's own, from this tier's `input`.
    """

    above_input_tokens: int
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None

    def to_dict(self) -> JsonObject:
        """`{above_input_tokens, input, output, cached_input, cache_write, cache_write_1h}`."""
        return {
            "above_input_tokens": self.above_input_tokens,
            "input": self.input,
            "output": self.output,
            "cached_input": self.cached_input,
            "cache_write": self.cache_write,
            "cache_write_1h": self.cache_write_1h,
        }


@dataclass(frozen=True, slots=True)
class Price:
    """A model's list price, USD per 1M tokens (`providers.<id>.models.<name>.price`).

    `input` bills uncached prompt tokens, `output` every generated token (reasoning included),
    `cached_input` prompt tokens read from the provider's cache (unset: `input`),
    `cache_write` / `cache_write_1h` prompt tokens written to Anthropic's 5-minute / 1-hour
    cache (unset: 1.25x / 2x `input`, Anthropic's multipliers). `tiers` (sorted by threshold)
    replace all of them for requests above a prompt size.
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    tiers: tuple[PriceTier, ...] = ()

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
    ) -> float:
        """USD cost of one request; the token counts are OpenAI-sense (runtime/adapters/base.py
        `Usage`): `input_tokens` includes the cached and cache-written ones, which are billed at
        their own rates; the tier is chosen by `input_tokens`."""
        rates: Price | PriceTier = self
        if self.tiers and input_tokens > self.tiers[0].above_input_tokens:
            for tier in self.tiers:
                if input_tokens > tier.above_input_tokens:
                    rates = tier
        base = rates.input
        if not (cached_input_tokens or cache_write_tokens or cache_write_1h_tokens):
            return (input_tokens * base + output_tokens * rates.output) / 1_000_000
        cached = rates.cached_input
        write = rates.cache_write
        write_1h = rates.cache_write_1h
        uncached = input_tokens - cached_input_tokens - cache_write_tokens - cache_write_1h_tokens
        return (
            (uncached if uncached > 0 else 0) * base
            + cached_input_tokens * (base if cached is None else cached)
            + cache_write_tokens * (base * CACHE_WRITE_FACTOR if write is None else write)
            + cache_write_1h_tokens
            * (base * CACHE_WRITE_1H_FACTOR if write_1h is None else write_1h)
            + output_tokens * rates.output
        ) / 1_000_000

    def to_dict(self) -> JsonObject:
        """`{input, output, cached_input, cache_write, cache_write_1h, tiers}` (unset: null)."""
        return {
            "input": self.input,
            "output": self.output,
            "cached_input": self.cached_input,
            "cache_write": self.cache_write,
            "cache_write_1h": self.cache_write_1h,
            "tiers": [t.to_dict() for t in self.tiers],
        }


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One model of a provider (`providers.<id>.models.<name>`); `name` is its key there."""

    name: str
    upstream: str
    context_window: int
    max_output_tokens: int | None
    capabilities: frozenset[str]
    price: Price | None
    # An embedding model (capability `embeddings`): the length of the vectors it returns as
    # configured; None for every other model.
    dimensions: int | None = None

    def to_dict(self) -> JsonObject:
        """Its JSON object (capabilities sorted; `dimensions` only for an embedding model)."""
        out: JsonObject = {
            "upstream": self.upstream,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "capabilities": _sorted(self.capabilities),
            "price": None if self.price is None else self.price.to_dict(),
        }
        if self.dimensions is not None:
            out["dimensions"] = self.dimensions
        return out


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """A provider the environment can reach (`providers.<id>`); `id` is its key there."""

    id: str
    adapter: Adapter
    base_url: str | None
    credentials: dict[str, str]  # field -> secret NAME
    credentials_optional: bool
    timeout_s: float
    connect_timeout_s: float
    models: dict[str, ModelConfig]

    def to_dict(self) -> JsonObject:
        """Its JSON object."""
        return {
            "adapter": self.adapter,
            "base_url": self.base_url,
            "credentials": dict(self.credentials),
            "credentials_optional": self.credentials_optional,
            "timeout_s": self.timeout_s,
            "connect_timeout_s": self.connect_timeout_s,
            "models": {name: m.to_dict() for name, m in self.models.items()},
        }


@dataclass(frozen=True, slots=True)
class CandidateRef:
    """One candidate of a route's chain: a model under `providers`."""

    provider: str
    model: str
    weight: float | None

    def to_dict(self) -> JsonObject:
        """`{provider, model, weight}`."""
        return {"provider": self.provider, "model": self.model, "weight": self.weight}


@dataclass(frozen=True, slots=True)
class DroppedCandidate:
    """A candidate the compiler left out of a route, and why (the gateway never routes to it)."""

    ref: str  # provider/model as written
    kind: str  # environment_policy | missing_capability | context_window | cost_cap | ...
    reason: str  # a sentence for people

    def to_dict(self) -> JsonObject:
        """`{ref, kind, reason}`."""
        return {"ref": self.ref, "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    """When a route moves on to its next candidate (`routes.<name>.fallback`)."""

    on: frozenset[str]
    max_attempts: int
    first_byte_timeout_s: float

    def to_dict(self) -> JsonObject:
        """Its JSON object (`on` sorted)."""
        return {
            "on": _sorted(self.on),
            "max_attempts": self.max_attempts,
            "first_byte_timeout_s": self.first_byte_timeout_s,
        }


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """A route with its resolved candidate chain (`routes.<name>`); `name` is its key there."""

    name: str
    strategy: Strategy
    requires: frozenset[str]
    min_context_window: int | None
    max_cost_per_request_usd: float | None
    fallback: FallbackPolicy
    candidates: tuple[CandidateRef, ...]
    dropped: tuple[DroppedCandidate, ...]
    # "embeddings": its candidates are embedding models, served at /v1/embeddings only;
    # "chat": every other route (chat completions, responses, messages).
    kind: RouteKind = "chat"

    def to_dict(self) -> JsonObject:
        """Its JSON object (`requires` sorted, the candidates in chain order; `kind` only for
        an embedding route)."""
        out: JsonObject = {
            "strategy": self.strategy,
            "requires": _sorted(self.requires),
            "min_context_window": self.min_context_window,
            "max_cost_per_request_usd": self.max_cost_per_request_usd,
            "fallback": self.fallback.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "dropped": [d.to_dict() for d in self.dropped],
        }
        if self.kind != "chat":
            out["kind"] = self.kind
        return out


@dataclass(frozen=True, slots=True)
class OrgConfig:
    """A tenant (`orgs.<id>`); `id` is its key there. No BYOK when `byok_encryption_key` is None."""

    id: str
    routes: frozenset[str] | None  # None: every route
    allow_explicit_models: bool | None  # None: the top-level value
    byok_providers: frozenset[str]
    byok_encryption_key: str | None

    def to_dict(self) -> JsonObject:
        """Its JSON object (`byok` is null without an encryption key)."""
        return {
            "routes": None if self.routes is None else _sorted(self.routes),
            "allow_explicit_models": self.allow_explicit_models,
            "byok": None
            if self.byok_encryption_key is None
            else {
                "providers": _sorted(self.byok_providers),
                "encryption_key": self.byok_encryption_key,
            },
        }


@dataclass(frozen=True, slots=True)
class Budget:
    """Spend budgets in USD; None: no limit."""

    usd_per_day: float | None
    usd_per_month: float | None

    def to_dict(self) -> JsonObject:
        """`{usd_per_day, usd_per_month}`."""
        return {"usd_per_day": self.usd_per_day, "usd_per_month": self.usd_per_month}


@dataclass(frozen=True, slots=True)
class Limits:
    """Rate limits and budgets, the environment's overrides merged in (`limits`)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    key_budget: Budget
    org_budget: Budget  # per_org default
    org_budgets: dict[str, Budget]  # merged per org

    def budget_of_org(self, org: str) -> Budget:
        """The org's effective budget: its own, else the `per_org` default."""
        return self.org_budgets.get(org, self.org_budget)

    def to_dict(self) -> JsonObject:
        """`{per_key, per_org, orgs}`."""
        return {
            "per_key": {
                "requests_per_minute": self.requests_per_minute,
                "tokens_per_minute": self.tokens_per_minute,
                **self.key_budget.to_dict(),
            },
            "per_org": self.org_budget.to_dict(),
            "orgs": {oid: b.to_dict() for oid, b in self.org_budgets.items()},
        }


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """The request-record sink (`logging`)."""

    sink: LogSink
    url_secret: str | None
    retention_days: int
    batch_size: int
    flush_interval_ms: int
    # Records held in memory while the sink cannot be written (PostgreSQL down); beyond it the
    # oldest are dropped and counted (switchyard_records_dropped_total).
    buffer_max_records: int = DEFAULT_RECORD_BUFFER

    def to_dict(self) -> JsonObject:
        """Its JSON object."""
        return {
            "sink": self.sink,
            "url_secret": self.url_secret,
            "retention_days": self.retention_days,
            "batch_size": self.batch_size,
            "flush_interval_ms": self.flush_interval_ms,
            "buffer_max_records": self.buffer_max_records,
        }


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where the environment keeps state that replicas and hosts share (runtime.json `state`).

    Records go by `logging` (`sink`, `url_secret`). `limits_store`: rate limits and budget
    reservations in this process (`memory`, the embedded default) or in Redis at the URL in
    secret `redis_url_secret`; `on_redis_unavailable`: `closed` answers 503 while Redis cannot
    be reached, `open` falls back to this process's own counters. `keys_store`: gateway keys
    and BYOK credentials in the data dir's SQLite files or in PostgreSQL at the URL in secret
    `postgres_url_secret`.
    """

    limits_store: LimitsStore = "memory"
    redis_url_secret: str | None = None
    on_redis_unavailable: OnUnavailable = "closed"
    keys_store: KeysStore = "sqlite"
    postgres_url_secret: str | None = None

    def to_dict(self) -> JsonObject:
        """`{limits: {store, url_secret, on_unavailable}, keys: {store, url_secret}}`."""
        return {
            "limits": {
                "store": self.limits_store,
                "url_secret": self.redis_url_secret,
                "on_unavailable": self.on_redis_unavailable,
            },
            "keys": {"store": self.keys_store, "url_secret": self.postgres_url_secret},
        }


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """A secret the environment needs, by NAME (`secrets.<NAME>`)."""

    name: str
    needed_by: str
    optional: bool

    def to_dict(self) -> JsonObject:
        """`{needed_by, optional}`."""
        return {"needed_by": self.needed_by, "optional": self.optional}


@dataclass(frozen=True, slots=True)
class CostReference:
    """The "typical request" the compiler checked cost caps against."""

    input_tokens: int = 1000
    output_tokens: int = 1000

    def to_dict(self) -> JsonObject:
        """`{input_tokens, output_tokens}`."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """One environment's whole runtime.json.

    `port`, `workers`, `request_timeout_s` and `data_dir` are the `server` object;
    `key_prefix` and `key_environment` the `keys` object.
    """

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
    cost_reference_request: CostReference = CostReference()
    key_environment: str | None = None  # None: `environment`
    # The largest non-streamed provider answer read whole (`runtime.max_upstream_body_mb`).
    max_upstream_body_bytes: int = DEFAULT_MAX_UPSTREAM_BODY
    state: StateConfig = StateConfig()

    def explicit_models_allowed(self, org: str) -> bool:
        """May `org`'s keys name `provider/model` instead of a route?"""
        spec = self.orgs.get(org)
        if spec is not None and spec.allow_explicit_models is not None:
            return spec.allow_explicit_models
        return self.allow_explicit_models

    def to_dict(self) -> JsonObject:
        """The runtime.json document (`config_hash` as it is; see `with_hash`)."""
        return {
            "schema_version": self.schema_version,
            "config_hash": self.config_hash,
            "project": self.project,
            "environment": self.environment,
            "compose_project": self.compose_project,
            "server": {
                "port": self.port,
                "workers": self.workers,
                "request_timeout_s": self.request_timeout_s,
                "data_dir": self.data_dir,
                "max_upstream_body_bytes": self.max_upstream_body_bytes,
            },
            "allow_explicit_models": self.allow_explicit_models,
            "keys": {
                "prefix": self.key_prefix,
                "environment": self.environment
                if self.key_environment is None
                else self.key_environment,
            },
            "providers": {pid: p.to_dict() for pid, p in self.providers.items()},
            "routes": {name: r.to_dict() for name, r in self.routes.items()},
            "orgs": {oid: o.to_dict() for oid, o in self.orgs.items()},
            "limits": self.limits.to_dict(),
            "logging": self.logging.to_dict(),
            "state": self.state.to_dict(),
            "cost_reference_request": self.cost_reference_request.to_dict(),
            "price_table_hash": self.price_table_hash,
            "secrets": {name: s.to_dict() for name, s in self.secrets.items()},
        }

    def to_json(self) -> str:
        """runtime.json's text: the canonical JSON of `to_dict()`."""
        return canonical_json(self.to_dict())

    def content_hash(self) -> str:
        """`sha256:<hex>` of the canonical JSON of the document without `config_hash`."""
        body = self.to_dict()
        del body["config_hash"]
        return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()

    def with_hash(self) -> RuntimeConfig:
        """The same config with `config_hash` set to its `content_hash()`."""
        return replace(self, config_hash=self.content_hash())

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "runtime.json") -> RuntimeConfig:
        """Parse and check runtime.json's text; raise ConfigError naming the problem."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{source}: not valid JSON ({exc}); rebuild it with `python -m compiler build`"
            ) from None
        return cls.from_dict(doc, source)

    @classmethod
    def from_dict(cls, doc: object, source: str = "runtime.json") -> RuntimeConfig:
        """Check a decoded runtime.json document and build the config from it."""
        return _parse(doc, source)


def load_config(path: str | Path) -> RuntimeConfig:
    """Read and check a compiled runtime.json; raise ConfigError naming the problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the runtime config: {exc.strerror or exc}") from None
    return RuntimeConfig.from_json(raw, source=str(p))


def parse_config(doc: object, source: str = "runtime.json") -> RuntimeConfig:
    """Turn a decoded runtime.json document into a RuntimeConfig (see load_config)."""
    return RuntimeConfig.from_dict(doc, source)


# ---------------------------------------------------------------------------------------
# Reading: every field checked, the message naming it by its dotted path.


class _Reader:
    """Typed access to a decoded document, failing with the file and the field's dotted path.

    Each method reads `key` of the object `d` found at path `where` ("" at the top level);
    the path is only put together for a message, so a valid file costs no string building.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, what: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {path}: {what}; rebuild it with `python -m compiler build`"
        )

    def fail_at(self, where: str, key: str | int, what: str) -> ConfigError:
        return self.fail(f"{where}.{key}" if where else str(key), what)

    def obj(self, d: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
        v = d.get(key)
        if type(v) is not dict:
            raise self.fail_at(where, key, "expected an object")
        return v

    def opt_obj(self, d: dict[str, Any], key: str, where: str = "") -> dict[str, Any] | None:
        v = d.get(key)
        if v is not None and type(v) is not dict:
            raise self.fail_at(where, key, "expected an object or null")
        return v

    def text(self, d: dict[str, Any], key: str, where: str = "") -> str:
        v = d.get(key)
        if type(v) is not str:
            raise self.fail_at(where, key, "expected a string")
        return v

    def opt_text(self, d: dict[str, Any], key: str, where: str = "") -> str | None:
        v = d.get(key)
        if v is not None and type(v) is not str:
            raise self.fail_at(where, key, "expected a string or null")
        return v

    def choice(self, d: dict[str, Any], key: str, words: tuple[str, ...], where: str = "") -> str:
        v = d.get(key)
        if v not in words:
            raise self.fail_at(where, key, f"expected one of {', '.join(words)}, not {v!r}")
        word: str = v
        return word

    def num(self, d: dict[str, Any], key: str, where: str = "") -> float:
        v: float | None = d.get(key)
        t = type(v)
        if v is None or (t is not float and t is not int):
            raise self.fail_at(where, key, "expected a number")
        return v  # as written: an int stays an int, so the round trip is exact

    def opt_num(self, d: dict[str, Any], key: str, where: str = "") -> float | None:
        v: float | None = d.get(key)
        t = type(v)
        if v is not None and t is not float and t is not int:
            raise self.fail_at(where, key, "expected a number or null")
        return v

    def opt_int(self, d: dict[str, Any], key: str, where: str = "") -> int | None:
        v = self.opt_num(d, key, where)
        return None if v is None else int(v)

    def flag(
        self, d: dict[str, Any], key: str, default: bool | None, where: str = ""
    ) -> bool | None:
        v = d.get(key, default)
        if v is not None and type(v) is not bool:
            raise self.fail_at(where, key, "expected true or false")
        return v

    def words(self, d: dict[str, Any], key: str, where: str = "") -> frozenset[str] | None:
        v = d.get(key)
        if v is None:
            return None
        if type(v) is not list or (v and set(map(type, v)) != {str}):
            raise self.fail_at(where, key, "expected a list of strings")
        return frozenset(v)

    def objects(self, d: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
        """A list of objects (absent or null: empty)."""
        v = d.get(key)
        if v is None:
            return []
        if type(v) is not list:
            raise self.fail_at(where, key, "expected a list")
        for i, item in enumerate(v):
            if type(item) is not dict:
                raise self.fail(f"{where}.{key}.{i}", "expected an object")
        return v


def _parse(doc: object, source: str) -> RuntimeConfig:
    r = _Reader(source)
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    version = doc.get("schema_version")
    if type(version) is not int or version not in SCHEMA_VERSIONS:
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
    reference = r.opt_obj(doc, "cost_reference_request")
    return RuntimeConfig(
        schema_version=version,
        config_hash=r.text(doc, "config_hash"),
        project=r.text(doc, "project"),
        environment=r.text(doc, "environment"),
        compose_project=r.text(doc, "compose_project"),
        port=int(r.num(server, "port", "server")),
        workers=int(r.num(server, "workers", "server")),
        request_timeout_s=r.num(server, "request_timeout_s", "server"),
        data_dir=r.text(server, "data_dir", "server"),
        max_upstream_body_bytes=r.opt_int(server, "max_upstream_body_bytes", "server")
        or DEFAULT_MAX_UPSTREAM_BODY,
        allow_explicit_models=bool(r.flag(doc, "allow_explicit_models", False)),
        key_prefix=r.text(keys, "prefix", "keys"),
        key_environment=r.opt_text(keys, "environment", "keys"),
        providers=providers,
        routes=routes,
        orgs=orgs,
        limits=_limits(r, r.obj(doc, "limits")),
        logging=LoggingConfig(
            sink=cast(LogSink, r.choice(log, "sink", LOG_SINKS, "logging")),
            url_secret=r.opt_text(log, "url_secret", "logging"),
            retention_days=int(r.num(log, "retention_days", "logging")),
            batch_size=max(1, int(r.num(log, "batch_size", "logging"))),
            flush_interval_ms=max(1, int(r.num(log, "flush_interval_ms", "logging"))),
            buffer_max_records=max(
                1,
                r.opt_int(log, "buffer_max_records", "logging") or DEFAULT_RECORD_BUFFER,
            ),
        ),
        state=_state(r, r.opt_obj(doc, "state") or {}),
        cost_reference_request=CostReference()
        if reference is None
        else CostReference(
            int(r.num(reference, "input_tokens", "cost_reference_request")),
            int(r.num(reference, "output_tokens", "cost_reference_request")),
        ),
        price_table_hash=r.text(doc, "price_table_hash"),
        secrets={name: _secret(r, name, spec) for name, spec in r.obj(doc, "secrets").items()},
    )


def _state(r: _Reader, d: dict[str, Any]) -> StateConfig:
    """runtime.json `state` (absent: the embedded defaults)."""
    limits = r.opt_obj(d, "limits", "state") or {}
    keys = r.opt_obj(d, "keys", "state") or {}
    limits_store = cast(
        LimitsStore, r.choice({"store": "memory"} | limits, "store", LIMITS_STORES, "state.limits")
    )
    keys_store = cast(
        KeysStore, r.choice({"store": "sqlite"} | keys, "store", KEYS_STORES, "state.keys")
    )
    redis_url = r.opt_text(limits, "url_secret", "state.limits")
    pg_url = r.opt_text(keys, "url_secret", "state.keys")
    if limits_store == "redis" and not redis_url:
        raise r.fail("state.limits.url_secret", "the redis store needs the secret's name")
    if keys_store == "postgres" and not pg_url:
        raise r.fail("state.keys.url_secret", "the postgres store needs the secret's name")
    return StateConfig(
        limits_store=limits_store,
        redis_url_secret=redis_url,
        on_redis_unavailable=cast(
            OnUnavailable,
            r.choice(
                {"on_unavailable": "closed"} | limits,
                "on_unavailable",
                ON_UNAVAILABLE,
                "state.limits",
            ),
        ),
        keys_store=keys_store,
        postgres_url_secret=pg_url,
    )


def _provider(r: _Reader, pid: str, spec: object) -> ProviderConfig:
    path = f"providers.{pid}"
    if type(spec) is not dict:
        raise r.fail(path, "expected an object")
    models: dict[str, ModelConfig] = {}
    for name, m in r.obj(spec, "models", path).items():
        mp = f"{path}.models.{name}"
        if type(m) is not dict:
            raise r.fail(mp, "expected an object")
        price = r.opt_obj(m, "price", mp)
        models[name] = ModelConfig(
            name=name,
            upstream=r.text(m, "upstream", mp),
            context_window=int(r.num(m, "context_window", mp)),
            max_output_tokens=r.opt_int(m, "max_output_tokens", mp),
            capabilities=r.words(m, "capabilities", mp) or frozenset(),
            price=None if price is None else _price(r, price, f"{mp}.price"),
            dimensions=r.opt_int(m, "dimensions", mp),
        )
    credentials = r.opt_obj(spec, "credentials", path) or {}
    return ProviderConfig(
        id=pid,
        adapter=cast(Adapter, r.choice(spec, "adapter", ADAPTER_NAMES, path)),
        base_url=r.opt_text(spec, "base_url", path),
        credentials={
            field: r.text(credentials, field, f"{path}.credentials") for field in credentials
        },
        credentials_optional=bool(r.flag(spec, "credentials_optional", False, path)),
        timeout_s=r.num(spec, "timeout_s", path),
        connect_timeout_s=r.num(spec, "connect_timeout_s", path),
        models=models,
    )


def _price(r: _Reader, d: dict[str, Any], path: str) -> Price:
    tiers = d.get("tiers", [])
    if type(tiers) is not list:
        raise r.fail(f"{path}.tiers", "expected a list")
    return Price(
        r.num(d, "input", path),
        r.num(d, "output", path),
        r.opt_num(d, "cached_input", path),
        r.opt_num(d, "cache_write", path),
        r.opt_num(d, "cache_write_1h", path),
        tuple(_tier(r, t, f"{path}.tiers.{i}") for i, t in enumerate(tiers)),
    )


def _tier(r: _Reader, d: object, path: str) -> PriceTier:
    if type(d) is not dict:
        raise r.fail(path, "expected an object")
    return PriceTier(
        int(r.num(d, "above_input_tokens", path)),
        r.num(d, "input", path),
        r.num(d, "output", path),
        r.opt_num(d, "cached_input", path),
        r.opt_num(d, "cache_write", path),
        r.opt_num(d, "cache_write_1h", path),
    )


def _route(
    r: _Reader, name: str, spec: object, providers: dict[str, ProviderConfig]
) -> RouteConfig:
    path = f"routes.{name}"
    if type(spec) is not dict:
        raise r.fail(path, "expected an object")
    fb = r.obj(spec, "fallback", path)
    candidates = []
    for i, c in enumerate(r.objects(spec, "candidates", path)):
        provider, model, weight = c.get("provider"), c.get("model"), c.get("weight")
        p = providers.get(provider) if type(provider) is str else None
        if p is None or type(model) is not str or model not in p.models:
            raise r.fail(f"{path}.candidates.{i}", f"{provider}/{model} is not under providers")
        if weight is not None and type(weight) is not int and type(weight) is not float:
            raise r.fail(f"{path}.candidates.{i}.weight", "expected a number or null")
        candidates.append(CandidateRef(p.id, model, weight))
    dropped = []
    for i, d in enumerate(r.objects(spec, "dropped", path)):
        ref, kind, reason = d.get("ref"), d.get("kind"), d.get("reason")
        if not (type(ref) is str and type(kind) is str and type(reason) is str):
            where = f"{path}.dropped.{i}"
            ref, kind, reason = (
                r.text(d, "ref", where),
                r.text(d, "kind", where),
                r.text(d, "reason", where),
            )
        dropped.append(DroppedCandidate(ref, kind, reason))
    return RouteConfig(
        name=name,
        strategy=cast(Strategy, r.choice(spec, "strategy", STRATEGIES, path)),
        requires=r.words(spec, "requires", path) or frozenset(),
        min_context_window=r.opt_int(spec, "min_context_window", path),
        max_cost_per_request_usd=r.opt_num(spec, "max_cost_per_request_usd", path),
        fallback=FallbackPolicy(
            on=r.words(fb, "on", f"{path}.fallback") or frozenset(),
            max_attempts=max(1, int(r.num(fb, "max_attempts", f"{path}.fallback"))),
            first_byte_timeout_s=r.num(fb, "first_byte_timeout_s", f"{path}.fallback"),
        ),
        candidates=tuple(candidates),
        dropped=tuple(dropped),
        kind=cast(
            RouteKind, r.choice(spec, "kind", ROUTE_KINDS, path) if "kind" in spec else "chat"
        ),
    )


def _org(r: _Reader, oid: str, spec: object) -> OrgConfig:
    path = f"orgs.{oid}"
    if type(spec) is not dict:
        raise r.fail(path, "expected an object")
    byok = r.opt_obj(spec, "byok", path)
    return OrgConfig(
        id=oid,
        routes=r.words(spec, "routes", path),
        allow_explicit_models=r.flag(spec, "allow_explicit_models", None, path),
        byok_providers=frozenset()
        if byok is None
        else r.words(byok, "providers", f"{path}.byok") or frozenset(),
        byok_encryption_key=None
        if byok is None
        else r.text(byok, "encryption_key", f"{path}.byok"),
    )


def _secret(r: _Reader, name: str, spec: object) -> SecretSpec:
    path = f"secrets.{name}"
    if type(spec) is not dict:
        raise r.fail(path, "expected an object")
    return SecretSpec(
        name=name,
        needed_by=r.opt_text(spec, "needed_by", path) or "",
        optional=bool(r.flag(spec, "optional", False, path)),
    )


def _budget(r: _Reader, d: dict[str, Any] | None, path: str) -> Budget:
    if d is None:
        return Budget(None, None)
    return Budget(r.opt_num(d, "usd_per_day", path), r.opt_num(d, "usd_per_month", path))


def _limits(r: _Reader, doc: dict[str, Any]) -> Limits:
    per_key = r.opt_obj(doc, "per_key", "limits")
    orgs = r.opt_obj(doc, "orgs", "limits") or {}
    for oid, v in orgs.items():
        if type(v) is not dict:
            raise r.fail(f"limits.orgs.{oid}", "expected an object")
    return Limits(
        requests_per_minute=None
        if per_key is None
        else r.opt_int(per_key, "requests_per_minute", "limits.per_key"),
        tokens_per_minute=None
        if per_key is None
        else r.opt_int(per_key, "tokens_per_minute", "limits.per_key"),
        key_budget=_budget(r, per_key, "limits.per_key"),
        org_budget=_budget(r, r.opt_obj(doc, "per_org", "limits"), "limits.per_org"),
        org_budgets={oid: _budget(r, v, f"limits.orgs.{oid}") for oid, v in orgs.items()},
    )
