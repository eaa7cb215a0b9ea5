"""The gateway.yaml v1 models: the one source of truth for the config's shape.

These are the *raw* models (the file as written, unknown keys forbidden). The JSON Schema
and the reference docs are generated from them; `compiler.resolve` turns them into the
per-environment runtime config. Every field carries a description and an example.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from runtime.vocabulary import (
    FALLBACK_ERROR_CLASSES,
    Adapter,
    Capability,
    FallbackErrorClass,
    LogSink,
    OnUnavailable,
    Strategy,
)

# ---------------------------------------------------------------------------------------
# Names. Each pattern has a sentence the diagnostics quote (see NAME_RULES).

PROJECT_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
ID_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
ENV_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
ROUTE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
REF_PATTERN = r"^[a-z][a-z0-9_-]{0,62}/[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
SECRET_PATTERN = r"^[A-Z][A-Z0-9_]{0,127}$"

NAME_RULES: dict[str, tuple[str, str]] = {
    PROJECT_PATTERN: (
        "project name",
        "lowercase letters, digits and '-', starting with a letter, at most 40 characters",
    ),
    ID_PATTERN: ("name", "lowercase letters, digits, '-' and '_', starting with a letter"),
    ENV_PATTERN: (
        "environment name",
        "lowercase letters, digits and '-', starting with a letter, at most 31 characters",
    ),
    ROUTE_PATTERN: (
        "route name",
        "letters, digits, '.', '_', ':' and '-' (no '/': that is how clients name an explicit "
        "provider/model)",
    ),
    MODEL_PATTERN: ("model name", "letters, digits, '.', '_', ':', '@' and '-' (no '/')"),
    REF_PATTERN: ("model reference", "'<provider>/<model>', e.g. 'openai/gpt-4o'"),
    SECRET_PATTERN: (
        "secret name",
        "UPPER_SNAKE_CASE, e.g. OPENAI_API_KEY — the NAME of a secret, never its value",
    ),
}

ProjectName = Annotated[str, StringConstraints(pattern=PROJECT_PATTERN)]
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_PATTERN)]
RouteName = Annotated[str, StringConstraints(pattern=ROUTE_PATTERN)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_PATTERN)]
ModelRef = Annotated[str, StringConstraints(pattern=REF_PATTERN)]
SecretName = Annotated[str, StringConstraints(pattern=SECRET_PATTERN)]


def _string_or_object(schema: dict[str, Any], pattern: str) -> None:
    """Let the schema accept the `provider/model` string shorthand as well as the mapping."""
    obj = {k: schema.pop(k) for k in list(schema) if k not in ("title", "description")}
    schema["anyOf"] = [{"type": "string", "pattern": pattern}, obj]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ---------------------------------------------------------------------------------------
# providers


class PriceTier(_Section):
    """Prices that apply instead of the model's own when a request's prompt is larger than
    `above_input_tokens` (every token of that request is billed at them)."""

    above_input_tokens: int = Field(
        ge=1,
        description="The tier applies to requests with MORE input tokens than this (cached and "
        "cache-written ones included).",
        examples=[200000],
    )
    input: float = Field(ge=0, description="USD per 1M uncached input tokens.", examples=[2.5])
    output: float = Field(ge=0, description="USD per 1M output tokens.", examples=[15.0])
    cached_input: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens read from the cache. Defaults to this tier's `input`.",
        examples=[0.25],
    )
    cache_write: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens written to Anthropic's 5-minute cache. Defaults to "
        "1.25 × this tier's `input`.",
        examples=[7.5],
    )
    cache_write_1h: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens written to Anthropic's 1-hour cache. Defaults to "
        "2 × this tier's `input`.",
        examples=[12.0],
    )


class Price(_Section):
    """List price in USD per one million tokens."""

    input: float = Field(
        ge=0, description="USD per 1M uncached input (prompt) tokens.", examples=[2.5]
    )
    output: float = Field(
        ge=0,
        description="USD per 1M output (completion) tokens, reasoning tokens included. An "
        "embedding model bills input only: write `output: 0`.",
        examples=[10.0],
    )
    cached_input: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens read from the provider's prompt cache. Defaults "
        "to `input` (`check` warns where the provider reports cache reads).",
        examples=[1.25],
    )
    cache_write: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens written to Anthropic's 5-minute cache. Defaults to "
        "1.25 × `input`, Anthropic's rate.",
        examples=[3.75],
    )
    cache_write_1h: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens written to Anthropic's 1-hour cache. Defaults to "
        "2 × `input`, Anthropic's rate.",
        examples=[6.0],
    )
    tiers: list[PriceTier] = Field(
        default_factory=list,
        description="Prices for long prompts, sorted by `above_input_tokens`: a request with "
        "more input tokens than a tier's threshold is billed at the highest such tier.",
        examples=[[{"above_input_tokens": 200000, "input": 2.5, "output": 15.0}]],
    )


class ModelSpec(_Section):
    """One model a provider serves: a chat model, or an embedding model (`embeddings`).

    An embedding model lists the capability `embeddings` alone and declares `dimensions`;
    `context_window` is then its input limit per text (docs/api-embeddings-config.md)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={
            "if": {
                "properties": {"capabilities": {"contains": {"const": "embeddings"}}},
                "required": ["capabilities"],
            },
            "then": {
                "required": ["dimensions"],
                "properties": {"capabilities": {"items": {"const": "embeddings"}}},
                "not": {"required": ["max_output_tokens"]},
            },
            "else": {"not": {"required": ["dimensions"]}},
        },
    )

    upstream: str | None = Field(
        default=None,
        min_length=1,
        description="The provider's own model id. Defaults to the model's name in this file.",
        examples=["claude-sonnet-4-20250514"],
    )
    context_window: int = Field(
        ge=1,
        description="Total tokens (prompt plus output) the model accepts. For an embedding "
        "model: the most tokens of ONE input text (8192 for OpenAI's text-embedding-3-*, 2048 "
        "for gemini-embedding-001).",
        examples=[128000],
    )
    max_output_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens the model can generate in one response. Not for an embedding "
        "model (it generates none).",
        examples=[16384],
    )
    capabilities: list[Capability] = Field(
        default_factory=list,
        description="What the model supports, from a closed set. Routing and fallback "
        "validation rely on it. `embeddings` makes it an embedding model, served only by "
        "embedding routes at /v1/embeddings: it lists no other capability and needs "
        "`dimensions`.",
        examples=[["streaming", "tools", "vision"]],
    )
    dimensions: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Embedding models only (and required for them): the length of the vectors "
        "the model returns as configured here — for a model with a choice of sizes, the size the "
        "gateway asks for (OpenAI's `dimensions`, Gemini's `outputDimensionality`). Every "
        "candidate of an embedding route must return the same length.",
        examples=[1536],
    )
    price: Price | None = Field(
        default=None,
        description="List price; required for cost caps, budgets and the `cheapest` strategy.",
        examples=[{"input": 2.5, "output": 10.0}],
    )
    description: str | None = Field(
        default=None, description="Free text for people.", examples=["Fast, cheap"]
    )


class Credentials(_Section):
    """Names of the secrets that hold a provider's credentials (never the values)."""

    api_key: SecretName = Field(
        description="Name of the secret holding the API key.",
        examples=["OPENAI_API_KEY"],
    )
    organization: SecretName | None = Field(
        default=None,
        description="Name of the secret holding an OpenAI organization id, if used.",
        examples=["OPENAI_ORG_ID"],
    )


class Provider(_Section):
    """An upstream LLM provider and the models the gateway may call on it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"adapter": {"const": "mock"}}},
                    "else": {"required": ["credentials"]},
                },
                {
                    "if": {"properties": {"adapter": {"const": "openai-compatible"}}},
                    "then": {"required": ["base_url"]},
                },
            ]
        },
    )

    adapter: Adapter = Field(
        description="Which wire format to speak. `openai-compatible` covers vLLM, Together, "
        "Groq and the like; `mock` is offline and needs no credentials.",
        examples=["openai"],
    )
    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="API base URL. Defaults per adapter (OpenAI, Anthropic, Gemini); required "
        "for `openai-compatible`.",
        examples=["https://api.openai.com/v1"],
    )
    credentials: Credentials | None = Field(
        default=None,
        description="Secret names for this provider's credentials. Required for every "
        "adapter except `mock`.",
        examples=[{"api_key": "OPENAI_API_KEY"}],
    )
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Total timeout for one upstream request, in seconds.",
        examples=[60],
    )
    connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Timeout to open a connection, in seconds.",
        examples=[5],
    )
    models: dict[ModelName, ModelSpec] = Field(
        min_length=1,
        description="The models this provider serves, by the name routes use.",
        examples=[{"gpt-4o": {"context_window": 128000, "capabilities": ["streaming", "tools"]}}],
    )
    description: str | None = Field(
        default=None, description="Free text for people.", examples=["Primary vendor"]
    )


# ---------------------------------------------------------------------------------------
# routes


class Candidate(_Section):
    """One `provider/model` a route may send a request to."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra=lambda schema: _string_or_object(schema, REF_PATTERN),
    )

    model: ModelRef = Field(
        description="`<provider>/<model>` as declared under providers.", examples=["openai/gpt-4o"]
    )
    weight: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Relative share of traffic; only for the `weighted` strategy.",
        examples=[70],
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # `- openai/gpt-4o` is shorthand for `- model: openai/gpt-4o`.
        return {"model": value} if isinstance(value, str) else value


class Fallback(_Section):
    """When and how a route moves on to its next candidate."""

    on: list[FallbackErrorClass] = Field(
        default_factory=lambda: list(FALLBACK_ERROR_CLASSES),  # type: ignore[arg-type]
        description="Error classes that fall back to the next candidate; default: every class, "
        "so a request one candidate cannot take never ends a chain another could serve. A class "
        "left out ends the chain with that error. `context_length` only ever falls back to a "
        "candidate with a larger context window.",
        examples=[["rate_limited", "server_error", "timeout"]],
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Most candidates tried for one request.",
        examples=[3],
    )
    first_byte_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="How long to wait for the first content chunk (streaming) or the response "
        "(non-streaming) before treating the attempt as timed out.",
        examples=[10],
    )


class Route(_Section):
    """A meta-model clients call by name (`"model": "<route>"`): a chat or an embedding route.

    Its kind follows from its first candidate: an embedding route (its first candidate is an
    embedding model, served at /v1/embeddings) or a chat route (every other); every candidate
    must be of that kind, and an embedding route's must all return vectors of one length."""

    candidates: list[Candidate] = Field(
        min_length=1,
        description="Ordered `provider/model` references (or `{model, weight}`).",
        examples=[["openai/gpt-4o", "anthropic/claude-sonnet-4"]],
    )
    strategy: Strategy = Field(
        default="priority",
        description="`priority`: in order; `cheapest`: by price for the request; `weighted`: "
        "random by weight, the rest as fallbacks.",
        examples=["priority"],
    )
    requires: list[Capability] | None = Field(
        default=None,
        description="Capabilities every candidate must have. When absent, every fallback must "
        "have the capabilities of the first candidate. On an embedding route only `embeddings` "
        "may be listed.",
        examples=[["tools", "streaming"]],
    )
    min_context_window: int | None = Field(
        default=None,
        ge=1,
        description="Smallest context window a candidate may have (on an embedding route: the "
        "smallest per-text input limit).",
        examples=[128000],
    )
    max_cost_per_request_usd: float | None = Field(
        default=None,
        gt=0,
        description="Skip candidates whose estimated cost for a request exceeds this (USD). "
        "Chat routes only: an embedding route is bounded by budgets (`limits`).",
        examples=[0.05],
    )
    fallback: Fallback = Field(
        default_factory=Fallback, description="Fallback policy.", examples=[{"max_attempts": 3}]
    )
    description: str | None = Field(
        default=None, description="Free text for people.", examples=["Main chat"]
    )


# ---------------------------------------------------------------------------------------
# orgs and limits


class Byok(_Section):
    """Bring-your-own-key: an org may store its own provider credentials."""

    providers: list[Id] = Field(
        min_length=1,
        description="Providers the org may bring its own credentials for.",
        examples=[["openai", "anthropic"]],
    )
    encryption_key: SecretName = Field(
        description="Name of the secret that encrypts this org's stored credentials at rest "
        "(separate from any admin key).",
        examples=["GLOBEX_BYOK_ENCRYPTION_KEY"],
    )


class Org(_Section):
    """A tenant: the boundary for keys, limits and BYOK."""

    routes: list[RouteName] | None = Field(
        default=None,
        description="Routes the org's keys may call. Absent: all routes.",
        examples=[["chat", "summarize"]],
    )
    allow_explicit_models: bool | None = Field(
        default=None,
        description=(
            "May the org's keys name `provider/model` directly? Absent: the runtime default."
        ),
        examples=[False],
    )
    byok: Byok | None = Field(
        default=None,
        description="Bring-your-own-key settings.",
        examples=[{"providers": ["openai"], "encryption_key": "GLOBEX_BYOK_ENCRYPTION_KEY"}],
    )
    description: str | None = Field(
        default=None, description="Free text for people.", examples=["Acme Corp"]
    )


class KeyLimits(_Section):
    """Limits applied to each gateway key."""

    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per minute.", examples=[600]
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Input plus output tokens per minute.", examples=[200000]
    )
    usd_per_day: float | None = Field(
        default=None, gt=0, description="Spend per UTC day, USD.", examples=[50]
    )
    usd_per_month: float | None = Field(
        default=None, gt=0, description="Spend per calendar month, USD.", examples=[1000]
    )


class OrgLimits(_Section):
    """Budgets applied to an org as a whole."""

    usd_per_day: float | None = Field(
        default=None, gt=0, description="Spend per UTC day, USD.", examples=[200]
    )
    usd_per_month: float | None = Field(
        default=None, gt=0, description="Spend per calendar month, USD.", examples=[4000]
    )


class Limits(_Section):
    """Rate limits and budgets."""

    per_key: KeyLimits = Field(
        default_factory=KeyLimits,
        description="Defaults for every gateway key.",
        examples=[{"requests_per_minute": 600}],
    )
    per_org: OrgLimits = Field(
        default_factory=OrgLimits,
        description="Defaults for every org.",
        examples=[{"usd_per_month": 4000}],
    )
    orgs: dict[Id, OrgLimits] = Field(
        default_factory=dict,
        description="Per-org budgets, merged over `per_org` for that org (set only what differs).",
        examples=[{"acme": {"usd_per_month": 10000}}],
    )


# ---------------------------------------------------------------------------------------
# logging and runtime


class Logging(_Section):
    """Where the record of every request goes."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={
            "if": {"properties": {"sink": {"const": "postgres"}}, "required": ["sink"]},
            "then": {"required": ["url_secret"]},
        },
    )

    sink: LogSink = Field(
        default="sqlite",
        description="`sqlite`: embedded, in the environment's data volume. `postgres`: a "
        "database whose URL is a secret. An environment with `state.postgres` writes its "
        "records there instead.",
        examples=["sqlite"],
    )
    url_secret: SecretName | None = Field(
        default=None,
        description="Name of the secret holding the Postgres URL (sink: postgres).",
        examples=["REQUEST_LOG_DATABASE_URL"],
    )
    retention_days: int = Field(
        default=30, ge=1, le=3650, description="Days records are kept.", examples=[30]
    )
    batch_size: int = Field(
        default=256, ge=1, le=100_000, description="Records written per batch.", examples=[256]
    )
    flush_interval_ms: int = Field(
        default=200,
        ge=1,
        le=60_000,
        description="Longest a record waits before it is written.",
        examples=[200],
    )


class Proxy(_Section):
    """The reverse proxy (HAProxy) in front of every deployed environment: it alone publishes
    the environment's port, health-checks the gateways, switches between releases without
    dropping a connection, and holds the edge against slow and oversized requests."""

    base_image: str = Field(
        default="haproxy:2.8",
        min_length=1,
        pattern=r"^[^\s]+$",
        description=(
            "Base image of the proxy image: an image with HAProxy 2.6 or newer (the official "
            "`haproxy` "
            "images), or a Debian/Ubuntu image, into which HAProxy is installed from its packages."
        ),
        examples=["haproxy:2.8"],
    )
    request_head_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description=(
            "Longest a client may take to send a request's head (request line and headers). A "
            "slower "
            "one (a slowloris, a byte-by-byte header) gets 408 and is closed."
        ),
        examples=[10],
    )
    request_head_max_bytes: int = Field(
        default=16384,
        ge=4096,
        le=1048576,
        description=(
            "Largest request head (request line plus headers) in bytes; a larger one is refused "
            "with 400."
        ),
        examples=[16384],
    )
    request_body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "Longest a client may take to send a request's body (the whole of it, or the first "
            "request_head_max_bytes of a larger one); a slower one gets 408."
        ),
        examples=[60],
    )
    client_idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "Longest a client may stay silent while it is expected to send (the rest of a large "
            "body) "
            "or to read (a response it does not take)."
        ),
        examples=[60],
    )
    keep_alive_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description=(
            "Longest an idle keep-alive connection is kept open for the client's next request."
        ),
        examples=[10],
    )
    max_connections: int = Field(
        default=4096,
        ge=16,
        le=1000000,
        description=(
            "Client connections served at once; more wait in the kernel's queue until one closes."
        ),
        examples=[4096],
    )


class Runtime(_Section):
    """How the gateway service is built and run."""

    base_image: str = Field(
        default="python:3.11-slim-bookworm",
        min_length=1,
        pattern=r"^[^\s]+$",
        description="Container base image with Python 3.11+ and venv.",
        examples=["python:3.11-slim-bookworm"],
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Gateway worker processes per replica.", examples=[2]
    )
    allow_explicit_models: bool = Field(
        default=True,
        description="May clients name `provider/model` instead of a route?",
        examples=[True],
    )
    request_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="Longest a client request may take, in seconds.",
        examples=[300],
    )
    max_upstream_body_mb: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Largest non-streamed provider answer the gateway reads, in MiB (decoded); "
        "a larger one is an upstream error, not a timeout. Streams have no limit.",
        examples=[64],
    )
    proxy: Proxy = Field(
        default_factory=Proxy,
        description="The reverse proxy in front of the gateways (HAProxy).",
        examples=[{"request_head_timeout_s": 10}],
    )


# ---------------------------------------------------------------------------------------
# environments


class SecretSource(_Section):
    """Where deploy reads a secret's value: an environment variable or a file outside the repo."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={"oneOf": [{"required": ["env"]}, {"required": ["file"]}]},
    )

    env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = Field(
        default=None,
        description="The operator's environment variable holding the value.",
        examples=["STAGING_OPENAI_API_KEY"],
    )
    file: str | None = Field(
        default=None,
        min_length=1,
        description="Absolute (or `~/`) path of a file holding the value, outside the repository.",
        examples=["~/.config/switchyard/production/openai.key"],
    )
    optional: bool = Field(
        default=False,
        description="When the source is unset, start anyway and skip the providers that need it.",
        examples=[True],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise PydanticCustomError(
                "E013",
                "a secret source needs exactly one of `env` or `file`",
            )
        return self


class State(_Section):
    """Shared state of the replicas and hosts of an environment: Redis and PostgreSQL.

    Rate limits and budget reservations in Redis; records, keys and BYOK in PostgreSQL. Each
    store's URL is a secret, named here and given a source under the environment's `secrets`.
    Absent: the embedded defaults (limits in each gateway process, keys and BYOK in SQLite,
    records by the top-level `logging`)."""

    redis: SecretName | None = Field(
        default=None,
        description="Name of the secret holding the Redis URL: rate limits and budget "
        "reservations are counted there, exact across every process, replica and host of the "
        "environment. Absent: each gateway process counts its own.",
        examples=["PRODUCTION_REDIS_URL"],
    )
    postgres: SecretName | None = Field(
        default=None,
        description="Name of the secret holding the PostgreSQL URL: request records, gateway "
        "keys and BYOK credentials are kept there (records go there instead of the top-level "
        "`logging` sink). Absent: SQLite files in the environment's data volume.",
        examples=["PRODUCTION_DATABASE_URL"],
    )
    on_redis_unavailable: OnUnavailable = Field(
        default="closed",
        description="While Redis cannot be reached: `closed` answers 503 "
        "`limits_unavailable`; `open` serves on each process's own counters (limits and "
        "budgets are then not exact). Visible in metrics and `/readyz` either way.",
        examples=["closed"],
    )
    shared_with: list[EnvName] = Field(
        default_factory=list,
        description="Environments allowed to use the same Redis or PostgreSQL (the same "
        "secret source). Sharing a store is an error unless BOTH environments list each other.",
        examples=[["staging"]],
    )


class Environment(_Section):
    """One deployment of the gateway: a host, a port, secrets and policy."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"target": {"const": "ssh"}}},
                    "then": {"required": ["host"]},
                },
                {
                    "if": {"properties": {"target": {"const": "local"}}},
                    "then": {"not": {"required": ["host"]}},
                },
            ]
        },
    )

    target: Literal["local", "ssh"] = Field(
        description="`local`: this machine. `ssh`: a remote host reached over SSH.",
        examples=["ssh"],
    )
    host: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[A-Za-z0-9_.:\[\]-]+$",
        description="SSH host name or address (target: ssh).",
        examples=["gw1.internal.example.com"],
    )
    ssh_user: str | None = Field(
        default=None,
        min_length=1,
        description="SSH user (default: the operator's).",
        examples=["deploy"],
    )
    ssh_port: int = Field(default=22, ge=1, le=65535, description="SSH port.", examples=[22])
    port: int = Field(
        ge=1024,
        le=65535,
        description="Port the gateway publishes on 127.0.0.1 of the host (1024–65535).",
        examples=[8200],
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Gateway containers; the environment's proxy balances requests across them.",
        examples=[2],
    )
    compose_project: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Compose project name on the host. Default: `<project>-<environment>`.",
        examples=["acme-assistant-staging"],
    )
    secrets: dict[SecretName, SecretSource] = Field(
        default_factory=dict,
        description="Where deploy reads each secret named in this file.",
        examples=[{"OPENAI_API_KEY": {"env": "STAGING_OPENAI_API_KEY"}}],
    )
    allowed_providers: list[Id] | None = Field(
        default=None,
        description="Only these providers may serve requests here. Absent: all.",
        examples=[["openai", "anthropic"]],
    )
    blocked_providers: list[Id] = Field(
        default_factory=list,
        description="These providers never serve requests here.",
        examples=[["mock"]],
    )
    limits: Limits | None = Field(
        default=None,
        description="Limit overrides for this environment, merged field by field.",
        examples=[{"per_key": {"requests_per_minute": 60}}],
    )
    state: State | None = Field(
        default=None,
        description="Shared state for several replicas or hosts: Redis for limits, "
        "PostgreSQL for records, keys and BYOK. Absent: the embedded stores.",
        examples=[{"redis": "PRODUCTION_REDIS_URL", "postgres": "PRODUCTION_DATABASE_URL"}],
    )
    health_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=1800,
        description="How long deploy waits for the new release to be healthy.",
        examples=[60],
    )
    drain_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description=(
            "How long a deploy lets the old release's gateways finish the requests and streams "
            "they "
            "are serving before it stops them. Default: runtime.request_timeout_s (no request is "
            "cut)."
        ),
        examples=[300],
    )
    keep_releases: int = Field(
        default=5, ge=2, le=100, description="Releases kept on the host for rollback.", examples=[5]
    )
    deploy_dir: str = Field(
        default="/srv/switchyard",
        pattern=r"^(/|~/)[A-Za-z0-9._/-]*$",
        description=(
            "Directory on the host for releases, the secrets file, locks and history "
            "(`~/` = the SSH user's home). Environments sharing a host should share it, "
            "so that their port and project claims are checked against each other."
        ),
        examples=["/srv/switchyard"],
    )
    description: str | None = Field(
        default=None, description="Free text for people.", examples=["Shared staging"]
    )


# ---------------------------------------------------------------------------------------


class GatewayConfig(_Section):
    """gateway.yaml, version 1."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={"$id": "https://switchyard.dev/schema/gateway.schema.json"},
        title="Switchyard gateway.yaml",
    )

    version: Literal[1] = Field(description="Config format version. Always 1.", examples=[1])

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: Any) -> Any:
        # Literal[1] compares by equality, so 1.0 and true would pass; the version is an integer.
        if value == 1 and (isinstance(value, bool) or not isinstance(value, int)):
            raise PydanticCustomError(
                "E016",
                "the version must be the integer 1 (`version: 1`), not {shown}",
                {"shown": repr(value)},
            )
        return value

    project: ProjectName = Field(
        description="Project name; each environment deploys as compose project `<project>-<env>`.",
        examples=["acme-assistant"],
    )
    description: str | None = Field(
        default=None, description="Free text for people.", examples=["Acme's LLM gateway"]
    )
    providers: dict[Id, Provider] = Field(
        min_length=1,
        description="Upstream providers by id.",
        examples=[
            {
                "openai": {
                    "adapter": "openai",
                    "credentials": {"api_key": "OPENAI_API_KEY"},
                    "models": {"gpt-4o": {"context_window": 128000}},
                }
            }
        ],
    )
    routes: dict[RouteName, Route] = Field(
        min_length=1,
        description="Meta-models clients call by name.",
        examples=[{"chat": {"candidates": ["openai/gpt-4o"]}}],
    )
    orgs: dict[Id, Org] = Field(
        default_factory=dict, description="Tenants by id.", examples=[{"acme": {}}]
    )
    limits: Limits = Field(
        default_factory=Limits,
        description="Rate limits and budgets.",
        examples=[{"per_key": {"requests_per_minute": 600}}],
    )
    logging: Logging = Field(
        default_factory=Logging,
        description="The request-record sink.",
        examples=[{"sink": "sqlite"}],
    )
    runtime: Runtime = Field(
        default_factory=Runtime,
        description="How the gateway is built and run.",
        examples=[{"workers": 1}],
    )
    environments: dict[EnvName, Environment] = Field(
        min_length=1,
        description="Where the gateway is deployed, by name.",
        examples=[{"dev": {"target": "local", "port": 8080}}],
    )
