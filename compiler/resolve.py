"""Resolve the raw config for one environment: policy applied, names linked, defaults filled.

The result is what the gateway in that environment will actually do: the concrete
candidate chain of every route (and every candidate dropped, with the reason), the merged
limits, the providers it may call and the secret names it needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from compiler.models import (
    Environment,
    GatewayConfig,
    KeyLimits,
    Limits,
    OrgLimits,
    Price,
    Route,
)
from runtime.config import Price as RuntimePrice
from runtime.config import PriceTier as RuntimePriceTier
from runtime.vocabulary import (
    DEFAULT_BASE_URLS,
    KeysStore,
    LimitsStore,
    LogSink,
    OnUnavailable,
    RouteKind,
)

# The "typical request" a cost cap is checked against before any request exists.
REFERENCE_INPUT_TOKENS = 1000
REFERENCE_OUTPUT_TOKENS = 1000

# The capability that makes a model an embedding model, and a route of them an embedding route.
EMBEDDINGS = "embeddings"


def runtime_price(p: Price) -> RuntimePrice:
    """The price as runtime.json carries it (unset rates stay unset: the gateway's `Price`
    applies their defaults, so the rule lives in one place)."""
    return RuntimePrice(
        p.input,
        p.output,
        p.cached_input,
        p.cache_write,
        p.cache_write_1h,
        tuple(
            RuntimePriceTier(
                t.above_input_tokens,
                t.input,
                t.output,
                t.cached_input,
                t.cache_write,
                t.cache_write_1h,
            )
            for t in p.tiers
        ),
    )


@dataclass(frozen=True, slots=True)
class Dropped:
    """A candidate that cannot serve a route in an environment, and why."""

    ref: str
    index: int
    # environment_policy | missing_capability | context_window | cost_cap | unknown_model, and
    # for a config `check` refuses: route_kind (a chat model on an embedding route or the
    # reverse) | dimensions (an embedding candidate of another vector length than the first)
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class ResolvedCandidate:
    ref: str
    index: int  # position in the route's `candidates` as written
    provider: str
    model: str
    upstream: str
    adapter: str
    weight: int | None
    context_window: int
    max_output_tokens: int | None
    capabilities: tuple[str, ...]
    price: Price | None
    dimensions: int | None = None  # an embedding model's vector length

    @property
    def kind(self) -> RouteKind:
        """The kind of route the model serves: `embeddings` for an embedding model."""
        return "embeddings" if EMBEDDINGS in self.capabilities else "chat"

    @property
    def reference_cost_usd(self) -> float | None:
        """Cost of the reference request (1k input + 1k output tokens; an embedding model's:
        1k input tokens, it bills no output), or None if unpriced."""
        if self.price is None:
            return None
        output = 0 if self.kind == "embeddings" else REFERENCE_OUTPUT_TOKENS
        return runtime_price(self.price).cost(REFERENCE_INPUT_TOKENS, output)


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    name: str
    route: Route
    requires: tuple[str, ...]
    requires_declared: bool
    primary_ref: str | None  # where implied requirements came from
    candidates: tuple[ResolvedCandidate, ...]
    dropped: tuple[Dropped, ...]
    # What the route serves, decided by its first declared candidate (`route_kind`).
    kind: RouteKind = "chat"


@dataclass(frozen=True, slots=True)
class ResolvedState:
    """Where an environment's shared state lives (runtime.json `state` and `logging.sink`):
    its `state` block, or the embedded defaults with records by the top-level `logging`."""

    limits_store: LimitsStore
    redis_secret: str | None
    on_redis_unavailable: OnUnavailable
    keys_store: KeysStore
    postgres_secret: str | None
    records_sink: LogSink
    records_secret: str | None


def resolve_state(config: GatewayConfig, env: Environment) -> ResolvedState:
    """The stores of one environment: `state.redis` moves limits to Redis; `state.postgres`
    moves keys, BYOK and records to PostgreSQL; otherwise records follow `logging`."""
    state = env.state
    redis = None if state is None else state.redis
    postgres = None if state is None else state.postgres
    return ResolvedState(
        limits_store="memory" if redis is None else "redis",
        redis_secret=redis,
        on_redis_unavailable="closed" if state is None else state.on_redis_unavailable,
        keys_store="sqlite" if postgres is None else "postgres",
        postgres_secret=postgres,
        records_sink=config.logging.sink if postgres is None else "postgres",
        records_secret=config.logging.url_secret if postgres is None else postgres,
    )


@dataclass(frozen=True, slots=True)
class ResolvedEnvironment:
    name: str
    env: Environment
    compose_project: str
    allowed_providers: tuple[str, ...]  # providers that may serve requests here, sorted
    state: ResolvedState  # where its limits, keys, BYOK and records live
    policy_drops: dict[str, str] = field(default_factory=dict)  # provider -> why it may not
    routes: dict[str, ResolvedRoute] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)


def provider_policy(
    config: GatewayConfig, env: Environment
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Which providers an environment allows, and for the rest, why not."""
    allowed: list[str] = []
    why: dict[str, str] = {}
    blocked = set(env.blocked_providers)
    only = None if env.allowed_providers is None else set(env.allowed_providers)
    for pid in sorted(config.providers):
        if pid in blocked:
            why[pid] = f"provider '{pid}' is in blocked_providers"
        elif only is not None and pid not in only:
            why[pid] = f"provider '{pid}' is not in allowed_providers"
        else:
            allowed.append(pid)
    return tuple(allowed), why


def lookup(
    config: GatewayConfig, provider: str, model: str, index: int, ref: str, weight: int | None
) -> ResolvedCandidate | None:
    p = config.providers.get(provider)
    if p is None or model not in p.models:
        return None
    m = p.models[model]
    return ResolvedCandidate(
        ref=ref,
        index=index,
        provider=provider,
        model=model,
        upstream=m.upstream or model,
        adapter=p.adapter,
        weight=weight,
        context_window=m.context_window,
        max_output_tokens=m.max_output_tokens,
        capabilities=tuple(m.capabilities),
        price=m.price,
        dimensions=m.dimensions,
    )


# A route's candidates looked up once for every environment: (provider, index, ref,
# candidate) per distinct reference, in order; the candidate is None when it is not declared.
_Links = tuple[tuple[str, int, str, ResolvedCandidate | None], ...]


def _link(config: GatewayConfig, route: Route) -> _Links:
    links: list[tuple[str, int, str, ResolvedCandidate | None]] = []
    seen: set[str] = set()
    for i, cand in enumerate(route.candidates):
        if cand.model in seen:
            continue  # reported by the checks; the first occurrence stands
        seen.add(cand.model)
        provider, _, model = cand.model.partition("/")
        links.append(
            (provider, i, cand.model, lookup(config, provider, model, i, cand.model, cand.weight))
        )
    return tuple(links)


def route_kind(config: GatewayConfig, route: Route) -> tuple[RouteKind, ResolvedCandidate | None]:
    """What a route serves, and the candidate that decides it: its first candidate declared
    under providers (an embedding model makes an embedding route, anything else a chat route;
    `chat` when none is declared). The same in every environment."""
    first = _deciding(_link(config, route))
    return ("chat" if first is None else first.kind), first


def _deciding(links: _Links) -> ResolvedCandidate | None:
    return next((rc for _p, _i, _ref, rc in links if rc is not None), None)


def _wrong_kind(rc: ResolvedCandidate, first: ResolvedCandidate) -> Dropped | None:
    """Why `rc` cannot serve a route whose kind `first` decided (None when it can)."""
    if rc.kind != first.kind:
        what = {"chat": "a chat model", "embeddings": "an embedding model"}
        return Dropped(
            rc.ref,
            rc.index,
            "route_kind",
            f"is {what[rc.kind]}, but the route's first candidate {first.ref} is "
            f"{what[first.kind]}",
        )
    if (
        rc.kind == "embeddings"
        and None not in (rc.dimensions, first.dimensions)
        and rc.dimensions != first.dimensions
    ):
        return Dropped(
            rc.ref,
            rc.index,
            "dimensions",
            f"returns {rc.dimensions}-dimensional vectors, the route's first candidate "
            f"{first.ref} {first.dimensions}-dimensional ones",
        )
    return None


def _resolve_linked(
    name: str, route: Route, links: _Links, verdict: dict[str, str | None]
) -> ResolvedRoute:
    """The candidate chain of one route, from its looked-up candidates and an environment's
    provider policy (`verdict[provider]` is None when allowed, else why not)."""
    linked: list[ResolvedCandidate] = []
    dropped: list[Dropped] = []
    first = _deciding(links)
    kind: RouteKind = "chat" if first is None else first.kind
    for provider, i, ref, rc in links:
        if rc is None:
            dropped.append(
                Dropped(ref, i, "unknown_model", f"'{ref}' is not declared under providers")
            )
            continue
        wrong = None if first is None else _wrong_kind(rc, first)
        if wrong is not None:
            dropped.append(wrong)
            continue
        why = verdict[provider]
        if why is not None:
            dropped.append(Dropped(ref, i, "environment_policy", why))
            continue
        linked.append(rc)

    declared = route.requires is not None
    primary = linked[0] if linked else None
    requires: tuple[str, ...]
    if route.requires is not None:
        # A chat capability required of an embedding route is refused on its own (E085).
        requires = tuple(c for c in route.requires if kind == "chat" or c == EMBEDDINGS)
    elif primary is not None:
        requires = primary.capabilities
    else:
        requires = ()

    kept: list[ResolvedCandidate] = []
    for rc in linked:
        missing = [c for c in requires if c not in rc.capabilities]
        if missing:
            source = (
                "this route"
                if declared
                else f"the primary candidate {primary.ref if primary else ''}"
            )
            dropped.append(
                Dropped(
                    rc.ref,
                    rc.index,
                    "missing_capability",
                    f"lacks {', '.join(repr(c) for c in missing)}, required by {source}",
                )
            )
            continue
        if route.min_context_window is not None and rc.context_window < route.min_context_window:
            dropped.append(
                Dropped(
                    rc.ref,
                    rc.index,
                    "context_window",
                    f"context window {rc.context_window:,} < min_context_window "
                    f"{route.min_context_window:,}",
                )
            )
            continue
        cost = rc.reference_cost_usd
        # A cost cap is for chat routes (`check` refuses one on an embedding route).
        cap = route.max_cost_per_request_usd if kind == "chat" else None
        if cap is not None and cost is not None and cost > cap:
            dropped.append(
                Dropped(
                    rc.ref,
                    rc.index,
                    "cost_cap",
                    f"a typical request ({REFERENCE_INPUT_TOKENS:,} input + "
                    f"{REFERENCE_OUTPUT_TOKENS:,} output tokens) costs ${cost:.4f}, over the "
                    f"${cap:g} cap",
                )
            )
            continue
        kept.append(rc)
    return ResolvedRoute(
        name=name,
        route=route,
        requires=requires,
        requires_declared=declared,
        primary_ref=None if declared or primary is None else primary.ref,
        candidates=tuple(kept),
        dropped=tuple(sorted(dropped, key=lambda d: d.index)),
        kind=kind,
    )


def merge_limits(base: Limits, override: Limits | None) -> Limits:
    """Environment limit overrides merged field by field over the top-level limits; each
    org's own budgets merged over `per_org` (an org override changes only what it sets)."""
    merged = _merge_env_limits(base, override)
    orgs = {
        oid: OrgLimits.model_validate(
            {
                **merged.per_org.model_dump(),
                **{k: v for k, v in lim.model_dump().items() if v is not None},
            }
        )
        for oid, lim in sorted(merged.orgs.items())
    }
    return Limits(per_key=merged.per_key, per_org=merged.per_org, orgs=orgs)


def _merge_env_limits(base: Limits, override: Limits | None) -> Limits:
    if override is None:
        return base
    per_key = KeyLimits.model_validate(
        {**base.per_key.model_dump(), **override.per_key.model_dump(exclude_unset=True)}
    )
    per_org = OrgLimits.model_validate(
        {**base.per_org.model_dump(), **override.per_org.model_dump(exclude_unset=True)}
    )
    orgs = dict(base.orgs)
    for org, lim in override.orgs.items():
        prior = orgs.get(org, OrgLimits())
        orgs[org] = OrgLimits.model_validate(
            {**prior.model_dump(), **lim.model_dump(exclude_unset=True)}
        )
    return Limits(per_key=per_key, per_org=per_org, orgs=orgs)


def compose_project(config: GatewayConfig, env_name: str) -> str:
    env = config.environments[env_name]
    return env.compose_project or f"{config.project}-{env_name}"


def resolve_environment(config: GatewayConfig, env_name: str) -> ResolvedEnvironment:
    """Everything the gateway of `env_name` will do, before any request arrives."""
    return resolve_environments(config, [env_name])[env_name]


def resolve_environments(
    config: GatewayConfig, env_names: Iterable[str] | None = None
) -> dict[str, ResolvedEnvironment]:
    """`resolve_environment` for each of `env_names` (default: all, in file order), sharing the
    work.

    Candidates are looked up once per route, and a route whose providers two environments
    treat alike resolves to one shared (immutable) `ResolvedRoute`, so resolving every
    environment costs little more than resolving one.
    """
    names = list(config.environments) if env_names is None else list(env_names)
    links = {name: _link(config, route) for name, route in sorted(config.routes.items())}
    shared: dict[tuple[str, tuple[str | None, ...]], ResolvedRoute] = {}
    out: dict[str, ResolvedEnvironment] = {}
    for env_name in names:
        env = config.environments[env_name]
        allowed, why = provider_policy(config, env)
        allowed_set = set(allowed)
        verdict: dict[str, str | None] = {}
        routes: dict[str, ResolvedRoute] = {}
        for name, route_links in links.items():
            for pid, _i, _ref, _rc in route_links:
                if pid not in verdict:
                    verdict[pid] = None if pid in allowed_set else why.get(pid, "not allowed")
            key = (name, tuple([verdict[pid] for pid, _i, _ref, _rc in route_links]))
            rr = shared.get(key)
            if rr is None:
                rr = shared[key] = _resolve_linked(name, config.routes[name], route_links, verdict)
            routes[name] = rr
        out[env_name] = ResolvedEnvironment(
            name=env_name,
            env=env,
            compose_project=compose_project(config, env_name),
            allowed_providers=allowed,
            state=resolve_state(config, env),
            policy_drops=why,
            routes=routes,
            limits=merge_limits(config.limits, env.limits),
        )
    return out


def base_url(adapter: str, configured: str | None) -> str | None:
    return configured or DEFAULT_BASE_URLS.get(adapter)


def used_providers(resolved: ResolvedEnvironment, config: GatewayConfig) -> tuple[str, ...]:
    """Providers reachable in the environment: through a route, or by BYOK of an org."""
    used = {c.provider for r in resolved.routes.values() for c in r.candidates}
    if config.runtime.allow_explicit_models:
        used.update(resolved.allowed_providers)
    for org in config.orgs.values():
        if org.byok is not None:
            used.update(p for p in org.byok.providers if p in resolved.allowed_providers)
    return tuple(sorted(used))


def required_secrets(config: GatewayConfig, resolved: ResolvedEnvironment) -> dict[str, str]:
    """Secret name -> what needs it, for everything reachable in the environment."""
    needs: dict[str, str] = {}
    for pid in used_providers(resolved, config):
        creds = config.providers[pid].credentials
        if (
            creds is None or config.providers[pid].adapter == "mock"
        ):  # mock ignores credentials (W012)
            continue
        needs.setdefault(creds.api_key, f"providers.{pid}.credentials.api_key")
        if creds.organization:
            needs.setdefault(creds.organization, f"providers.{pid}.credentials.organization")
    for oid, org in sorted(config.orgs.items()):
        if org.byok is not None:
            needs.setdefault(org.byok.encryption_key, f"orgs.{oid}.byok.encryption_key")
    stores = resolved.state
    where = f"environments.{resolved.name}.state"
    if stores.redis_secret is not None:
        needs.setdefault(stores.redis_secret, f"{where}.redis")
    if stores.postgres_secret is not None:
        needs.setdefault(stores.postgres_secret, f"{where}.postgres")
    elif stores.records_sink == "postgres" and stores.records_secret:
        needs.setdefault(stores.records_secret, "logging.url_secret")
    return needs
