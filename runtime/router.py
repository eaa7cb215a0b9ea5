"""Which candidates may serve a request, in which order, and why the others were skipped.

candidates = route candidates (environment policy already applied by the compiler)
           ∩ org policy ∩ providers whose credentials are present
           ∩ what THIS request needs (tools, vision, json mode/schema, streaming, reasoning,
             context window, output limit, cost cap), ordered by the route's strategy.
Everything here is computed from objects built once at start; nothing parses config per request.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from runtime.adapters import Adapter
from runtime.byok_cache import ByokCache
from runtime.config import (
    FallbackPolicy,
    ModelConfig,
    OrgConfig,
    ProviderConfig,
    RouteConfig,
    RuntimeConfig,
)
from runtime.embeddings_request import estimates
from runtime.errors import GatewayError
from runtime.request_check import output_limit
from runtime.tokens import prompt_tokens

DEFAULT_OUTPUT_ESTIMATE = 1000  # output tokens assumed for the cost cap when max_tokens is unset


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider model a route may send a request to, with its adapter and credentials."""

    provider: ProviderConfig
    model: ModelConfig
    weight: float | None
    adapter: Adapter
    credentials: dict[str, str] | None  # None: a credential is not set, the provider is skipped

    @property
    def ref(self) -> str:
        return f"{self.provider.id}/{self.model.name}"


@dataclass(slots=True)
class RoutePlan:
    """The candidates chosen for one request, in order, and why the others were skipped."""

    route: str | None  # None for an explicit provider/model
    policy: FallbackPolicy
    candidates: list[Candidate]
    skipped: list[dict[str, str]]
    prompt_tokens: int
    max_tokens: int | None
    # The most any candidate can cost (prompt estimate x input price + the effective output
    # limit x output price, tiers applied), reserved against budgets; None: none is priced.
    worst_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class _Route:
    config: RouteConfig
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class _Target:
    """What a request's `model` names: its chain and the policy it runs under."""

    chain: tuple[Candidate, ...]
    policy: FallbackPolicy
    cap: float | None
    strategy: str
    route: str | None  # None for an explicit provider/model
    kind: str  # "chat" or "embeddings"
    what: str  # "route" or "model", for messages


def needs_of(request: dict[str, Any]) -> frozenset[str]:
    """Capabilities a request needs, from its shape."""
    needs = set()
    if request.get("stream"):
        needs.add("streaming")
    if request.get("tools") or request.get("functions"):
        needs.add("tools")
    fmt = request.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            needs.add("json_mode")
        elif fmt.get("type") == "json_schema":
            needs.add("json_schema")
    if request.get("reasoning_effort") is not None:
        needs.add("reasoning")
    for msg in request.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    needs.add("vision")
                    break
    return frozenset(needs)


class Router:
    """Plans requests over the routes of one config; built once at start."""

    def __init__(
        self,
        config: RuntimeConfig,
        adapters: dict[str, Adapter],
        credentials: dict[str, dict[str, str] | None],
        byok: ByokCache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`rng` picks the first candidate of weighted routes; inject a seeded one in tests."""
        self.config = config
        self.byok = byok
        self._candidates: dict[tuple[str, str], Candidate] = {}
        for pid, provider in config.providers.items():
            for name, model in provider.models.items():
                self._candidates[(pid, name)] = Candidate(
                    provider, model, None, adapters[pid], credentials.get(pid)
                )
        self.routes: dict[str, _Route] = {}
        for name, route in config.routes.items():
            chain = []
            for ref in route.candidates:
                base = self._candidates[(ref.provider, ref.model)]
                chain.append(
                    Candidate(base.provider, base.model, ref.weight, base.adapter, base.credentials)
                )
            self.routes[name] = _Route(route, tuple(chain))
        self._rng = rng if rng is not None else random.Random()

    def model_ids(self, org: OrgConfig | None) -> list[str]:
        """What a key of this org can use now in `model`: its routes with at least one candidate
        whose provider has credentials (the environment's, or the org's own BYOK ones), then
        explicit provider/model ids of providers with credentials, when those are allowed.
        GET /v1/models lists these and GET /v1/models/{id} answers only for them."""
        allowed = None if org is None else org.routes
        ready = self._providers_with_credentials(org)
        ids = [
            name
            for name, route in self.routes.items()
            if (allowed is None or name in allowed)
            and any(c.provider.id in ready for c in route.candidates)
        ]
        if self.config.explicit_models_allowed(org.id if org else ""):
            ids.extend(f"{p}/{m}" for (p, m) in self._candidates if p in ready)
        return ids

    def _providers_with_credentials(self, org: OrgConfig | None) -> set[str]:
        """Providers a request of this org would not skip for "credentials not set"."""
        ready = {c.provider.id for c in self._candidates.values() if c.credentials is not None}
        byok = self.byok
        if org is not None and org.byok_providers and byok is not None:
            ready.update(p for p in org.byok_providers if byok.credentials(org.id, p) is not None)
        return ready

    def plan(
        self,
        request: dict[str, Any],
        org: OrgConfig,
        native_api: str | None = None,
        builtin_tools: tuple[str, ...] = (),
    ) -> RoutePlan:
        """Choose the candidates for one request; raise GatewayError when none may serve it.

        `request` is in chat-completions form (another API's translation, runtime/frontends/);
        `builtin_tools` are tools of that API only a candidate speaking it natively
        (`native_api` in its adapter's `native_apis`) can run: the others are skipped."""
        model = request.get("model")
        target = self._resolve(model, org)
        if target.kind != "chat":
            raise GatewayError(
                400,
                "wrong_endpoint",
                f"'{model}' is an embeddings {target.what}: use POST /v1/embeddings",
                param="model",
            )
        chain, policy, cap, strategy, route_name = (
            target.chain,
            target.policy,
            target.cap,
            target.strategy,
            target.route,
        )
        byok = self.byok
        if org.byok_providers and byok is not None:
            chain = tuple(_own_credentials(byok, c, org) for c in chain)
        needs = needs_of(request)
        est_prompt = prompt_tokens(request)
        max_tokens = output_limit(request)  # the effective output limit (request_check.py)
        out_est = max_tokens if max_tokens is not None else DEFAULT_OUTPUT_ESTIMATE
        eligible: list[tuple[Candidate, float | None]] = []
        skipped: list[dict[str, str]] = []
        for c in chain:
            reason = _skip_reason(c, needs, est_prompt, max_tokens)
            if reason is None and builtin_tools and native_api not in c.adapter.native_apis:
                reason = (
                    f"cannot run the built-in tool {', '.join(builtin_tools)}"
                    f" (only a provider serving the {native_api} API natively runs it)"
                )
            cost = c.model.price.cost(est_prompt, out_est) if c.model.price is not None else None
            if reason is None and cap is not None:
                if cost is None:
                    reason = "unpriced model under a per-request cost cap"
                elif cost > cap:
                    reason = f"estimated cost ${cost:.4f} is over the route's cap of ${cap:g}"
            if reason is not None:
                skipped.append({"provider": c.provider.id, "model": c.model.name, "reason": reason})
            else:
                eligible.append((c, cost))
        if not eligible:
            raise _no_candidate(model, skipped)
        ordered = _order(strategy, eligible, self._rng)
        worst = _worst_cost(ordered, est_prompt, max_tokens)
        return RoutePlan(route_name, policy, ordered, skipped, est_prompt, max_tokens, worst)

    def plan_embeddings(self, request: dict[str, Any], org: OrgConfig) -> RoutePlan:
        """Choose the candidates of a checked embeddings request (runtime/embeddings_request.py:
        `input` a list); raise GatewayError when none may serve it. Same org, route and
        explicit-model rules as `plan`; a chat route or model is a 400 naming its endpoint.
        Skipped: credentials not set, no `embeddings` capability, `dimensions` above the
        model's, an input longer than its context window (estimated), over the cost cap."""
        model = request.get("model")
        target = self._resolve(model, org)
        if target.kind != "embeddings":
            raise GatewayError(
                400,
                "wrong_endpoint",
                f"'{model}' is a chat {target.what}, not an embeddings one: use POST"
                " /v1/chat/completions (or /v1/responses, /v1/messages) for it",
                param="model",
            )
        chain = target.chain
        byok = self.byok
        if org.byok_providers and byok is not None:
            chain = tuple(_own_credentials(byok, c, org) for c in chain)
        sizes = estimates(request)
        est_prompt = sum(sizes)
        longest = max(sizes)
        dims = request.get("dimensions")
        eligible: list[tuple[Candidate, float | None]] = []
        skipped: list[dict[str, str]] = []
        for c in chain:
            reason = _embed_skip_reason(c, dims, longest)
            cost = c.model.price.cost(est_prompt, 0) if c.model.price is not None else None
            if reason is None and target.cap is not None:
                if cost is None:
                    reason = "unpriced model under a per-request cost cap"
                elif cost > target.cap:
                    reason = (
                        f"estimated cost ${cost:.4f} is over the route's cap of ${target.cap:g}"
                    )
            if reason is not None:
                skipped.append({"provider": c.provider.id, "model": c.model.name, "reason": reason})
            else:
                eligible.append((c, cost))
        if not eligible:
            raise _no_candidate(model, skipped)
        ordered = _order(target.strategy, eligible, self._rng)
        costs = [e[1] for e in eligible if e[1] is not None]
        worst = max(costs) if costs else None
        return RoutePlan(target.route, target.policy, ordered, skipped, est_prompt, None, worst)

    def _resolve(self, model: Any, org: OrgConfig) -> _Target:
        """The chain `model` names for `org` (a route, or an explicit provider/model), or the
        400/403/404 that says why it names none."""
        if not isinstance(model, str) or not model:
            raise GatewayError(
                400,
                "invalid_request",
                "`model` is required: a route name such as " + _some_routes(self.config),
                param="model",
            )
        route = self.routes.get(model)
        if route is not None:
            if org.routes is not None and model not in org.routes:
                raise GatewayError(
                    403,
                    "route_not_allowed",
                    f"org '{org.id}' may not use route '{model}'"
                    f" (it may use: {', '.join(sorted(org.routes)) or 'none'})",
                    param="model",
                )
            return _Target(
                route.candidates,
                route.config.fallback,
                route.config.max_cost_per_request_usd,
                route.config.strategy,
                model,
                route.config.kind,
                "route",
            )
        provider, _, name = model.partition("/")
        explicit = self._candidates.get((provider, name))
        if explicit is None:
            raise GatewayError(
                404,
                "model_not_found",
                f"'{model}' is not a route of this gateway; routes: {_some_routes(self.config)}",
                param="model",
            )
        if not self.config.explicit_models_allowed(org.id):
            raise GatewayError(
                403,
                "explicit_model_not_allowed",
                f"naming a provider model ('{model}') is not allowed here;"
                f" use a route: {_some_routes(self.config)}",
                param="model",
            )
        return _Target(
            (explicit,),
            FallbackPolicy(frozenset(), 1, explicit.provider.timeout_s),
            None,
            "priority",
            None,
            "embeddings" if "embeddings" in explicit.model.capabilities else "chat",
            "model",
        )


def _own_credentials(byok: ByokCache, c: Candidate, org: OrgConfig) -> Candidate:
    """BYOK: the org's own stored credentials for this provider replace the environment's."""
    if c.provider.id not in org.byok_providers:
        return c
    own = byok.credentials(org.id, c.provider.id)
    if own is None:
        return c
    return dataclasses.replace(c, credentials=own)


def _skip_reason(
    c: Candidate, needs: frozenset[str], est_prompt: int, max_tokens: int | None
) -> str | None:
    if c.credentials is None:
        names = ", ".join(sorted(c.provider.credentials.values()))
        return f"{_STATE_REASON} ({names})"
    missing = needs - c.model.capabilities
    if missing:
        return "lacks " + ", ".join(sorted(missing)) + " (needed by this request)"
    if (
        max_tokens is not None
        and c.model.max_output_tokens is not None
        and max_tokens > c.model.max_output_tokens
    ):
        return (
            f"max_tokens {max_tokens} is over the model's output limit"
            f" of {c.model.max_output_tokens}"
        )
    if est_prompt + (max_tokens or 0) > c.model.context_window:
        return (
            f"estimated {est_prompt} prompt tokens + {max_tokens or 0} output"
            f" exceed its context window of {c.model.context_window}"
        )
    return None


def _embed_skip_reason(c: Candidate, dims: int | None, longest: int) -> str | None:
    if c.credentials is None:
        names = ", ".join(sorted(c.provider.credentials.values()))
        return f"{_STATE_REASON} ({names})"
    if "embeddings" not in c.model.capabilities:
        return "lacks embeddings (not an embedding model)"
    size = c.model.dimensions
    if dims is not None and size is not None and dims > size:
        return f"dimensions {dims} is over the model's {size}"
    if longest > c.model.context_window:
        return (
            f"an input of an estimated {longest} tokens exceeds its context window"
            f" of {c.model.context_window}"
        )
    return None


def _worst_cost(
    candidates: list[Candidate], est_prompt: int, max_tokens: int | None
) -> float | None:
    """The highest cost any priced candidate can bill: the prompt estimate plus the effective
    output limit (`max_tokens`, else the model's output limit capped by what the context
    window leaves after the prompt). None when no candidate is priced."""
    worst: float | None = None
    for c in candidates:
        price = c.model.price
        if price is None:
            continue
        room = max(0, c.model.context_window - est_prompt)
        limit = c.model.max_output_tokens
        out = max_tokens if max_tokens is not None else room if limit is None else min(limit, room)
        cost = price.cost(est_prompt, out)
        if worst is None or cost > worst:
            worst = cost
    return worst


def _no_candidate(model: Any, skipped: list[dict[str, str]]) -> GatewayError:
    """The error when every candidate was skipped, naming every skip with its reason.

    A 400 as soon as one candidate WITH credentials was skipped for something the request
    asked (a limit, a capability, the cost cap): the same request fails the same way however
    often it is retried, even when other candidates lack credentials (those are listed too).
    A 503 only when every skip is the gateway's state: credentials not set."""
    detail = "; ".join(f"{s['provider']}/{s['model']}: {s['reason']}" for s in skipped)
    request_caused = any(not s["reason"].startswith(_STATE_REASON) for s in skipped)
    return GatewayError(
        400 if request_caused else 503,
        "no_candidate",
        f"no candidate of '{model}' can serve this request ({detail})",
        param="model",
    )


_STATE_REASON = "credentials not set"  # the one skip reason that is the gateway's state


def _order(
    strategy: str, eligible: list[tuple[Candidate, float | None]], rng: random.Random
) -> list[Candidate]:
    if strategy == "cheapest":
        inf = float("inf")
        return [c for c, _ in sorted(eligible, key=lambda e: inf if e[1] is None else e[1])]
    if strategy == "weighted" and len(eligible) > 1:
        weights = [c.weight or 0.0 for c, _ in eligible]
        if sum(weights) > 0:
            first = rng.choices(range(len(eligible)), weights=weights)[0]
            rest = [c for i, (c, _) in enumerate(eligible) if i != first]
            return [eligible[first][0], *rest]
    return [c for c, _ in eligible]


def _some_routes(config: RuntimeConfig) -> str:
    names = sorted(config.routes)
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "(none)"
