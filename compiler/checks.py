"""Semantic checks on a shape-valid config. Each check is a pure function yielding diagnostics.

Codes are stable; docs/diagnostics.md lists them all.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import PurePath
from typing import Any

from compiler.checks_embeddings import check_embedding_models, check_embedding_routes
from compiler.diagnostics import COMMENT, Diagnostic, Path, did_you_mean, error, warning
from compiler.loader import comments
from compiler.models import GatewayConfig, Limits, Price, PriceTier, SecretSource
from compiler.resolve import (
    EMBEDDINGS,
    REFERENCE_INPUT_TOKENS,
    REFERENCE_OUTPUT_TOKENS,
    ResolvedEnvironment,
    ResolvedRoute,
    compose_project,
    lookup,
    required_secrets,
    resolve_environments,
    route_kind,
)
from compiler.secret_values import (
    COMMENT_SECRET_HINT,
    describe_comment_secret,
    describe_secret,
    has_known_secret,
    looks_like_secret,
    secret_hint,
)

Check = Callable[["CheckContext"], Iterator[Diagnostic]]


class CheckContext:
    """What every semantic check reads: the validated config, the document as loaded, the
    items dropped as malformed, the config file's directory and every environment resolved."""

    def __init__(
        self,
        config: GatewayConfig,
        data: dict[str, Any],
        broken: set[tuple[str, str]],
        source_dir: PurePath | None,
        resolved: dict[str, ResolvedEnvironment] | None = None,
        shape_failed: bool = False,
        repaired: set[Path] | None = None,
    ) -> None:
        self.config = config
        # Bad values set aside (to their default or a stand-in): a check that reads one skips it.
        self.repaired = repaired or set()
        # A malformed item or section was dropped from the checks: a "not used" warning could
        # then only repeat that failure. (An unknown key or a repaired value drops nothing.)
        self.shape_failed = shape_failed
        self.data = data
        self.broken = broken
        self.source_dir = source_dir
        # Every environment, sorted by name (the checks report in this order).
        self.resolved = (
            resolved
            if resolved is not None
            else resolve_environments(config, sorted(config.environments))
        )

    def is_broken(self, section: str, name: str) -> bool:
        return (section, name) in self.broken or (section, "*") in self.broken


def run_all(
    config: GatewayConfig,
    data: dict[str, Any],
    *,
    broken: set[tuple[str, str]] | None = None,
    source_dir: PurePath | None = None,
    resolved: dict[str, ResolvedEnvironment] | None = None,
    shape_failed: bool = False,
    repaired: set[Path] | None = None,
) -> list[Diagnostic]:
    """Every semantic check; `resolved` (all environments, sorted by name) is computed when not
    given."""
    ctx = CheckContext(config, data, broken or set(), source_dir, resolved, shape_failed, repaired)
    out: list[Diagnostic] = []
    for check in CHECKS:
        out.extend(check(ctx))
    return out


# ---------------------------------------------------------------------------------------
# providers


def check_providers(ctx: CheckContext) -> Iterator[Diagnostic]:
    for pid, p in ctx.config.providers.items():
        path: Path = ("providers", pid)
        if p.adapter != "mock" and p.credentials is None:
            yield error(
                "E012",
                (*path, "credentials"),
                f"provider '{pid}' (adapter {p.adapter}) needs credentials",
                "add `credentials: {api_key: "
                + pid.upper().replace("-", "_")
                + "_API_KEY}` naming a secret",
            )
        if p.adapter == "mock" and p.credentials is not None:
            yield warning(
                "W012",
                (*path, "credentials"),
                "the mock adapter uses no credentials",
                "remove `credentials`",
            )
        if p.adapter == "openai-compatible" and p.base_url is None:
            yield error(
                "E012",
                (*path, "base_url"),
                f"provider '{pid}' (adapter openai-compatible) needs a base_url",
                "e.g. base_url: https://api.together.xyz/v1",
            )
        for name, m in p.models.items():
            if m.max_output_tokens is not None and m.max_output_tokens > m.context_window:
                yield error(
                    "E014",
                    (*path, "models", name, "max_output_tokens"),
                    f"max_output_tokens {m.max_output_tokens:,} exceeds context_window "
                    f"{m.context_window:,}",
                    "the output is part of the context window; check both numbers against the "
                    "model's documentation",
                )
    used = {c.model.split("/", 1)[0] for r in ctx.config.routes.values() for c in r.candidates}
    used |= {p for o in ctx.config.orgs.values() if o.byok for p in o.byok.providers}
    if not ctx.config.runtime.allow_explicit_models and not ctx.shape_failed:
        for pid in sorted(set(ctx.config.providers) - used):
            yield warning(
                "W003",
                ("providers", pid),
                f"provider '{pid}' is not used by any route or org",
                "remove it, or add it to a route's candidates",
                at_key=True,
            )


# ---------------------------------------------------------------------------------------
# routes: references, duplicates, strategy


def check_route_references(ctx: CheckContext) -> Iterator[Diagnostic]:
    providers = ctx.config.providers
    for rname, route in ctx.config.routes.items():
        seen: dict[str, int] = {}
        base: Path = ("routes", rname)
        for i, cand in enumerate(route.candidates):
            path: Path = (*base, "candidates", i)
            provider, _, model = cand.model.partition("/")
            if provider not in providers:
                if ctx.is_broken("providers", provider):
                    continue
                yield error(
                    "E020",
                    path,
                    f"unknown provider '{provider}' in '{cand.model}'",
                    did_you_mean(provider, providers)
                    or f"declared providers: {', '.join(sorted(providers))}",
                )
            elif model not in providers[provider].models:
                models = providers[provider].models
                yield error(
                    "E021",
                    path,
                    f"provider '{provider}' has no model '{model}'",
                    did_you_mean(model, models) or f"its models: {', '.join(sorted(models))}",
                )
            if cand.model in seen:
                yield error(
                    "E034",
                    path,
                    f"'{cand.model}' is listed twice (first at candidates[{seen[cand.model]}])",
                    "remove the duplicate: a candidate is tried at most once per request",
                )
            else:
                seen[cand.model] = i
        weights = [c.weight for c in route.candidates]
        if route.strategy == "weighted":
            missing = [i for i, w in enumerate(weights) if w is None]
            for i in missing:
                yield error(
                    "E037",
                    (*base, "candidates", i),
                    "the weighted strategy needs a weight on every candidate",
                    f"write `- {{model: {route.candidates[i].model}, weight: 50}}`",
                )
            if not missing and sum(w or 0 for w in weights) == 0:
                yield error(
                    "E037",
                    (*base, "candidates"),
                    "the weights of a weighted route add up to 0",
                    "give at least one candidate a positive weight",
                )
        elif any(w is not None for w in weights):
            i = next(i for i, w in enumerate(weights) if w is not None)
            yield warning(
                "W037",
                (*base, "candidates", i, "weight"),
                f"weights are ignored by the '{route.strategy}' strategy",
                "set `strategy: weighted` or remove the weights",
            )
        if route.strategy == "cheapest":
            for i, cand in enumerate(route.candidates):
                p, _, m = cand.model.partition("/")
                spec = providers.get(p)
                if spec is not None and m in spec.models and spec.models[m].price is None:
                    yield error(
                        "E039",
                        (*base, "candidates", i),
                        f"the cheapest strategy cannot rank '{cand.model}': it has no price",
                        f"add `price: {{input: …, output: …}}` under providers.{p}.models.{m}",
                    )


# ---------------------------------------------------------------------------------------
# fallback compatibility per environment


def check_routes_per_environment(ctx: CheckContext) -> Iterator[Diagnostic]:
    # A problem that holds in every environment is reported once; one that only some
    # environments have names them.
    found: dict[tuple[str, Path, str], list[str]] = defaultdict(list)
    details: dict[tuple[str, Path, str], tuple[str, str | None]] = {}
    envs = sorted(ctx.resolved)
    for env_name in envs:
        resolved = ctx.resolved[env_name]
        for rname, rr in resolved.routes.items():
            base: Path = ("routes", rname)
            if _only_the_cost_cap(rr):
                # One mistake, one diagnostic: the cap, not each candidate nor the empty route.
                yield _cost_cap_unreachable(ctx, rname, rr)
                continue
            for d in rr.dropped:
                path: Path = (*base, "candidates", d.index)
                if d.kind == "missing_capability":
                    code = "E030" if rr.requires_declared else "E031"
                    hint: str | None = (
                        (
                            f"remove {d.ref} from this route, or list the capability under its "
                            "model's "
                            "`capabilities` if the model really has it"
                        )
                        if rr.requires_declared
                        else (
                            "declare `requires:` on the route with what every candidate must "
                            "support, "
                            "or move a compatible model first"
                        )
                    )
                    key = (code, path, f"{d.ref} {d.reason}")
                    found[key].append(env_name)
                    details[key] = (f"{d.ref} {d.reason}", hint)
                elif d.kind == "context_window":
                    key = ("E032", path, f"{d.ref} has a {d.reason}")
                    found[key].append(env_name)
                    details[key] = (key[2], "remove it from this route or lower min_context_window")
                elif d.kind == "cost_cap":
                    key = ("W035", path, f"{d.ref} is skipped by the cost cap: {d.reason}")
                    found[key].append(env_name)
                    details[key] = (
                        key[2],
                        "raise max_cost_per_request_usd, or remove the candidate from this route",
                    )
            no_provider = not resolved.allowed_providers  # reported once, for the environment
            if (
                not rr.candidates
                and not no_provider
                and not any(d.kind in _REPORTED_ELSEWHERE for d in rr.dropped)
            ):
                reasons = "; ".join(f"{d.ref}: {d.reason}" for d in rr.dropped) or "no candidates"
                yield error(
                    "E033",
                    ("environments", env_name),
                    f"route '{rname}' has no candidate left in environment '{env_name}' "
                    f"({reasons})",
                    "allow one of its providers in this environment, or add a candidate",
                    at_key=True,
                )
    for key, env_list in found.items():
        code, path, _ = key
        message, hint = details[key]
        if len(env_list) < len(envs):
            message += f" (in environment{'s' if len(env_list) > 1 else ''} {', '.join(env_list)})"
        yield (warning if code.startswith("W") else error)(code, path, message, hint)


# Drops that are errors of the route as written (E021, E083, E084): an empty route because of
# them is not reported again per environment.
_REPORTED_ELSEWHERE = frozenset({"unknown_model", "route_kind", "dimensions"})


def _only_the_cost_cap(rr: ResolvedRoute) -> bool:
    """Is the route empty only because no candidate meets its cost cap?"""
    return not rr.candidates and bool(rr.dropped) and all(d.kind == "cost_cap" for d in rr.dropped)


def _cost_cap_unreachable(ctx: CheckContext, rname: str, rr: ResolvedRoute) -> Diagnostic:
    cap = rr.route.max_cost_per_request_usd or 0.0
    costs = []
    for d in rr.dropped:
        provider, _, model = d.ref.partition("/")
        rc = lookup(ctx.config, provider, model, d.index, d.ref, None)
        cost = rc.reference_cost_usd if rc is not None else None
        if cost is not None:
            costs.append((cost, d.ref))
    cheapest = min(costs) if costs else None
    detail = (
        (
            f"; the cheapest, {cheapest[1]}, costs ${cheapest[0]:.4f} for a reference request of "
            f"{REFERENCE_INPUT_TOKENS:,} input + {REFERENCE_OUTPUT_TOKENS:,} output tokens"
        )
        if cheapest
        else ""
    )
    return error(
        "E035",
        ("routes", rname, "max_cost_per_request_usd"),
        f"no candidate of route '{rname}' can meet its ${cap:g} cost cap{detail}",
        "raise the cap or add a cheaper candidate",
    )


# ---------------------------------------------------------------------------------------
# costs


def _has_usd_limits(limits: Limits) -> bool:
    groups = [
        limits.per_key.usd_per_day,
        limits.per_key.usd_per_month,
        limits.per_org.usd_per_day,
        limits.per_org.usd_per_month,
    ]
    groups += [v for o in limits.orgs.values() for v in (o.usd_per_day, o.usd_per_month)]
    return any(v is not None for v in groups)


def check_prices(ctx: CheckContext) -> Iterator[Diagnostic]:
    providers = ctx.config.providers
    for rname, route in ctx.config.routes.items():
        if route.max_cost_per_request_usd is None or route_kind(ctx.config, route)[0] != "chat":
            continue  # a cap on an embedding route is refused on its own (E085)
        for i, cand in enumerate(route.candidates):
            p, _, m = cand.model.partition("/")
            if p in providers and m in providers[p].models and providers[p].models[m].price is None:
                yield error(
                    "E036",
                    ("routes", rname, "candidates", i),
                    f"route '{rname}' has a cost cap but '{cand.model}' has no price, so its cost "
                    "cannot be checked",
                    f"add `price:` under providers.{p}.models.{m}",
                )
    budget_envs = [e for e, r in ctx.resolved.items() if _has_usd_limits(r.limits)]
    if not budget_envs:
        return
    reported: set[str] = set()
    for env_name in budget_envs:
        for rr in ctx.resolved[env_name].routes.values():
            for c in rr.candidates:
                if c.price is None and c.ref not in reported:
                    reported.add(c.ref)
                    yield error(
                        "E036",
                        ("providers", c.provider, "models", c.model),
                        f"USD budgets are set but '{c.ref}' has no price, so its spend cannot be "
                        "counted",
                        "add `price: {input: …, output: …}` (USD per 1M tokens); use 0 for free "
                        "models",
                        at_key=True,
                    )


# Which usage parts each adapter reports (runtime/adapters/*): a rate for a part an adapter
# never reports is never used; an unset cache-read rate where the provider discounts cache
# reads overcharges them at the full input rate.
_REPORTS_CACHE_READS = frozenset({"openai", "openai-compatible", "anthropic", "gemini"})
_DISCOUNTS_CACHE_READS = frozenset({"openai", "anthropic", "gemini"})
_REPORTS_CACHE_WRITES = frozenset({"anthropic"})


def check_price_tables(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Tiers sorted with distinct thresholds below the context window; cache rates that the
    provider's adapter can use, and set where it reports discounted cache reads."""
    for pid, p in ctx.config.providers.items():
        for name, m in p.models.items():
            if m.price is None:
                continue
            base: Path = ("providers", pid, "models", name, "price")
            thresholds = [t.above_input_tokens for t in m.price.tiers]
            for i in range(1, len(thresholds)):
                if thresholds[i] <= thresholds[i - 1]:
                    same = thresholds[i] == thresholds[i - 1]
                    yield error(
                        "E060",
                        (*base, "tiers", i, "above_input_tokens"),
                        f"tier threshold {thresholds[i]} "
                        + ("repeats the one before it" if same else "is below the one before it")
                        + f" ({thresholds[i - 1]})",
                        "list tiers once each, sorted by `above_input_tokens`",
                    )
            for i, t in enumerate(m.price.tiers):
                if t.above_input_tokens >= m.context_window:
                    yield warning(
                        "W061",
                        (*base, "tiers", i, "above_input_tokens"),
                        f"this tier never applies: its threshold {t.above_input_tokens} is not "
                        f"below the model's context_window of {m.context_window}",
                        "lower the threshold or raise context_window",
                    )
            rates: list[tuple[Path, Price | PriceTier]] = [(base, m.price)]
            rates += [((*base, "tiers", i), t) for i, t in enumerate(m.price.tiers)]
            for path, r in rates:
                yield from _cache_rates(p.adapter, path, r, EMBEDDINGS in m.capabilities)


def _cache_rates(
    adapter: str, path: Path, r: Price | PriceTier, embedding: bool
) -> Iterator[Diagnostic]:
    if r.cached_input is not None and adapter not in _REPORTS_CACHE_READS:
        yield warning(
            "W063",
            (*path, "cached_input"),
            f"the {adapter} adapter reports no cache reads, so this rate is never used",
            "remove it",
        )
    for key in ("cache_write", "cache_write_1h"):
        if getattr(r, key) is not None and adapter not in _REPORTS_CACHE_WRITES:
            yield warning(
                "W063",
                (*path, key),
                f"the {adapter} adapter reports no cache writes (only Anthropic bills them "
                "apart), so this rate is never used",
                "remove it",
            )
    # Embeddings have no prompt cache: their usage reports input tokens only.
    if (
        r.cached_input is None
        and r.input > 0
        and adapter in _DISCOUNTS_CACHE_READS
        and not embedding
    ):
        yield warning(
            "W062",
            path,
            f"no `cached_input` price: the {adapter} provider reports cache reads, which are "
            f"then billed at the full input price of ${r.input:g}",
            "add `cached_input:` from the provider's price list",
            at_key=True,
        )


# ---------------------------------------------------------------------------------------
# orgs, limits, environment policy references


def _suggest(name: str, known: Iterable[str], what: str) -> str:
    """ "did you mean" when a name is close, else the names that exist."""
    names = sorted(known)
    return did_you_mean(name, names) or (
        f"declared {what}: {', '.join(names)}" if names else f"no {what} are declared"
    )


def check_org_and_policy_references(ctx: CheckContext) -> Iterator[Diagnostic]:
    cfg = ctx.config
    for oid, org in cfg.orgs.items():
        for i, route in enumerate(org.routes or []):
            if route not in cfg.routes and not ctx.is_broken("routes", route):
                yield error(
                    "E022",
                    ("orgs", oid, "routes", i),
                    f"unknown route '{route}'",
                    _suggest(route, cfg.routes, "routes"),
                )
        if org.byok is not None:
            for i, pid in enumerate(org.byok.providers):
                path: Path = ("orgs", oid, "byok", "providers", i)
                if pid not in cfg.providers:
                    if not ctx.is_broken("providers", pid):
                        yield error(
                            "E021",
                            path,
                            f"unknown provider '{pid}'",
                            _suggest(pid, cfg.providers, "providers"),
                        )
                elif cfg.providers[pid].adapter == "mock":
                    yield error(
                        "E021",
                        path,
                        f"provider '{pid}' uses the mock adapter, which takes no credentials",
                        "remove it from byok.providers",
                    )
    for oid in cfg.limits.orgs:
        if oid not in cfg.orgs and not ctx.is_broken("orgs", oid):
            yield error(
                "E022",
                ("limits", "orgs", oid),
                f"unknown org '{oid}'",
                _suggest(oid, cfg.orgs, "orgs"),
                at_key=True,
            )
    for env_name, env in cfg.environments.items():
        base: Path = ("environments", env_name)
        for field in ("allowed_providers", "blocked_providers"):
            for i, pid in enumerate(getattr(env, field) or []):
                if pid not in cfg.providers and not ctx.is_broken("providers", pid):
                    yield error(
                        "E021",
                        (*base, field, i),
                        f"unknown provider '{pid}'",
                        _suggest(pid, cfg.providers, "providers"),
                    )
        both = set(env.allowed_providers or []) & set(env.blocked_providers)
        for pid in sorted(both):
            i = env.blocked_providers.index(pid)
            yield error(
                "E038",
                (*base, "blocked_providers", i),
                f"provider '{pid}' is in both allowed_providers and blocked_providers",
                "remove it from one of the two lists (as written, blocked wins)",
            )
        if env.limits is not None:
            for oid in env.limits.orgs:
                if oid not in cfg.orgs and not ctx.is_broken("orgs", oid):
                    yield error(
                        "E022",
                        (*base, "limits", "orgs", oid),
                        f"unknown org '{oid}'",
                        _suggest(oid, cfg.orgs, "orgs"),
                        at_key=True,
                    )
        if not ctx.resolved[env_name].allowed_providers:
            where = (
                "allowed_providers" if env.allowed_providers is not None else "blocked_providers"
            )
            yield error(
                "E033",
                (*base, where),
                f"environment '{env_name}' allows no provider at all, so no route can serve a "
                "request",
                "allow at least one declared provider (check allowed_providers and "
                "blocked_providers)",
                at_key=True,
            )


# ---------------------------------------------------------------------------------------
# secrets


_CREDENTIAL_KEYS = {"api_key", "organization", "encryption_key", "url_secret"}


def _walk(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
        return
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for k, v in items:
        if isinstance(v, str):  # most leaves: no generator of their own
            yield (*path, k), v
        elif isinstance(v, dict | list):
            yield from _walk(v, (*path, k))


def check_literal_secrets(ctx: CheckContext) -> Iterator[Diagnostic]:
    return literal_secrets(ctx.data)


def literal_secrets(data: Any) -> Iterator[Diagnostic]:
    """Secret values anywhere in the document as loaded; needs no valid shape."""
    for path, value in _walk(data, ()):
        last = path[-1] if path else ""
        credential_position = (
            last in _CREDENTIAL_KEYS
            or (
                len(path) == 5
                and path[0] == "environments"
                and path[2] == "secrets"
                and last == "env"
            )
            or (
                len(path) == 4
                and path[0] == "environments"
                and path[2] == "state"
                and last in ("redis", "postgres")
            )
        )
        if has_known_secret(value) or (credential_position and looks_like_secret(value)):
            yield error("E040", path, describe_secret(value), secret_hint(path))


def comment_secrets(text: str | None) -> Iterator[Diagnostic]:
    """Well-known secret formats in the comments of `text` (the file as decoded), each at its
    comment's `#`; needs neither a valid shape nor a document that parses to the end."""
    if text is None or not has_known_secret(text):  # one scan for the common case
        return
    for line, column, comment in comments(text):
        message = describe_comment_secret(comment)
        if message is not None:
            yield error("E040", COMMENT, message, COMMENT_SECRET_HINT).located(line, column)


def _normalise_file(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def check_secrets(ctx: CheckContext) -> Iterator[Diagnostic]:
    cfg = ctx.config
    sources: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    known = _secret_names(ctx)
    for env_name, env in cfg.environments.items():
        base: Path = ("environments", env_name)
        needs = required_secrets(cfg, ctx.resolved[env_name])
        unused = sorted(set(env.secrets) - set(needs))
        paired: set[str] = set()  # unused names taken for a misspelling of a needed one
        for secret, needed_by in sorted(needs.items()):
            if secret in env.secrets:
                continue
            message = (
                f"environment '{env_name}' needs secret {secret} (named by {needed_by}) but "
                "gives no source for it"
            )
            near = _close_name(secret, [u for u in unused if u not in paired])
            if near is not None:  # one misspelling, one diagnostic: at the name that has a source
                paired.add(near)
                yield error(
                    "E042",
                    (*base, "secrets", near),
                    message,
                    f"did you mean {near}? this environment gives a source for {near}, which "
                    f"nothing uses: spell the name the same here and at {needed_by}",
                    at_key=True,
                )
                continue
            near = _close_name(secret, known - {secret})
            add = (
                f"add `{secret}: {{env: {_variable_for(env_name, secret)}}}` under "
                f"environments.{env_name}.secrets"
            )
            yield error(
                "E042",
                (*base, "secrets") if env.secrets else base,
                message,
                add
                if near is None
                else f"did you mean {near}, the name used elsewhere in this file? correct it at "
                f"{needed_by}; if {secret} is right, {add}",
                at_key=not env.secrets,
            )
        for secret, src in sorted(env.secrets.items()):
            spath: Path = (*base, "secrets", secret)
            # When part of the file failed to validate, what uses a secret may be what failed.
            if secret not in needs and secret not in paired and not ctx.shape_failed:
                yield warning(
                    "W044",
                    spath,
                    f"secret {secret} is not used in environment '{env_name}'",
                    "remove it",
                    at_key=True,
                )
            if src.env is not None and not looks_like_secret(src.env):  # else E040 says it all
                sources[("env", src.env)].append((env_name, secret))
            if src.file is not None:
                f = src.file
                if not (f.startswith("/") or f.startswith("~/")):
                    yield error(
                        "E043",
                        (*spath, "file"),
                        f"secret file '{f}' is a relative path",
                        "use an absolute or ~/ path outside the repository, so the secret never "
                        "lands in git",
                    )
                    continue
                if ctx.source_dir is not None and f.startswith("/"):
                    try:
                        PurePath(_normalise_file(f)).relative_to(ctx.source_dir)
                    except ValueError:
                        pass
                    else:
                        yield error(
                            "E043",
                            (*spath, "file"),
                            f"secret file '{f}' is inside the repository",
                            "keep secret files outside the repository",
                        )
                        continue
                sources[("file", _normalise_file(f))].append((env_name, secret))
    stores = _store_secrets(ctx)
    for (kind, where), users in sources.items():
        first_env, first_secret = users[0]
        for env_name, secret in users[1:]:
            if env_name == first_env:
                continue
            store = stores[env_name].get(secret)
            if store is not None and store == stores[first_env].get(first_secret):
                continue  # one store used by both: check_state_stores says whether they may
            what = "environment variable" if kind == "env" else "file"
            yield error(
                "E041",
                ("environments", env_name, "secrets", secret, kind),
                f"environments '{first_env}' and '{env_name}' both read a secret from the {what} "
                f"'{where}'",
                _own_source_hint(kind, where, secret, (first_env, env_name), cfg.environments),
            )


def _secret_names(ctx: CheckContext) -> set[str]:
    """Every secret name the file gives a source for or names, in any environment."""
    names = {s for env in ctx.config.environments.values() for s in env.secrets}
    for resolved in ctx.resolved.values():
        names |= set(required_secrets(ctx.config, resolved))
    return names


def _close_name(name: str, names: Iterable[str]) -> str | None:
    """The one of `names` that `name` is most likely a misspelling of (GEMINI_APIKEY for
    GEMINI_API_KEY), or None."""
    found = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.8)
    return found[0] if found else None


def _variable_for(env_name: str, secret: str) -> str:
    """The operator's variable a hint suggests: the secret's name, prefixed by the
    environment's unless it already is (PRODUCTION_REDIS_URL, not PRODUCTION_PRODUCTION_...)."""
    prefix = env_name.upper().replace("-", "_") + "_"
    return secret if secret.startswith(prefix) else prefix + secret


def _own_source_hint(
    kind: str, where: str, secret: str, envs: tuple[str, str], all_envs: Iterable[str]
) -> str:
    if kind == "env":
        a, b = (_variable_for(e, secret) for e in envs)
    else:
        a, b = (_own_file(where, e, set(all_envs)) for e in envs)
    return f"give each environment its own key and its own source, e.g. {a} and {b}"


def _own_file(where: str, env_name: str, all_envs: set[str]) -> str:
    """The shared file `where` made environment `env_name`'s own: a folder or a part of the
    file's name that names an environment is swapped for `env_name`
    (`~/.keys/staging/openai.key` -> `~/.keys/production/openai.key`, not
    `~/.keys/staging/production/openai.key`); otherwise a folder of its own is added."""
    folder, name = posixpath.split(where)
    parts = folder.split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in all_envs:
            return posixpath.join("/".join([*parts[:i], env_name, *parts[i + 1 :]]), name)
    words = re.split(r"([-_.])", name)
    for i, word in enumerate(words):
        if word in all_envs:
            return posixpath.join(folder, "".join([*words[:i], env_name, *words[i + 1 :]]))
    return posixpath.join(folder, env_name, name)


# ---------------------------------------------------------------------------------------
# shared state: environments.<env>.state


_STORE_WORDS = {"redis": "Redis", "postgres": "PostgreSQL"}


def _store_secrets(ctx: CheckContext) -> dict[str, dict[str, str]]:
    """Per environment: secret name -> the store whose URL it holds (`redis`, `postgres`);
    the top-level `logging.url_secret` counts as the PostgreSQL of environments without
    their own `state.postgres`."""
    out: dict[str, dict[str, str]] = {}
    for env_name, resolved in ctx.resolved.items():
        st = resolved.state
        found: dict[str, str] = {}
        if st.records_sink == "postgres" and st.records_secret is not None:
            found[st.records_secret] = "postgres"
        if st.redis_secret is not None:
            found.setdefault(st.redis_secret, "redis")
        out[env_name] = found
    return out


def _store_source(src: SecretSource) -> tuple[str, str] | None:
    """The source a store's URL is read from, as `check_secrets` compares them (None for one
    it already refuses: a relative file, a variable name that is itself a secret)."""
    if src.env is not None:
        return None if looks_like_secret(src.env) else ("env", src.env)
    if src.file is not None and (src.file.startswith("/") or src.file.startswith("~/")):
        return ("file", _normalise_file(src.file))
    return None


def _shared_with(config: GatewayConfig, env_name: str) -> list[str]:
    state = config.environments[env_name].state
    return [] if state is None else state.shared_with


def _state_example(env_name: str, store: str) -> str:
    return f"{env_name.upper().replace('-', '_')}_{'REDIS' if store == 'redis' else 'DATABASE'}_URL"


def check_state_stores(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Stores shared between environments only where both allow it; `shared_with` naming
    environments that exist and share something; one secret per store; exact limits where
    several processes serve an environment."""
    cfg = ctx.config
    stores = _store_secrets(ctx)
    users: dict[tuple[str, tuple[str, str]], list[tuple[str, str]]] = defaultdict(list)
    shares: set[tuple[str, str]] = set()
    for env_name in cfg.environments:  # document order: the later one is reported
        env = cfg.environments[env_name]
        for secret, store in stores[env_name].items():
            src = env.secrets.get(secret)
            where = None if src is None else _store_source(src)
            if src is None or where is None:
                continue  # no source (E042) or a refused one (E040, E043)
            if src.optional:
                yield error(
                    "E073",
                    ("environments", env_name, "secrets", secret, "optional"),
                    f"secret {secret} holds the {_STORE_WORDS[store]} URL of environment "
                    f"'{env_name}', which cannot start without it",
                    f"remove `optional: true`; to run without {_STORE_WORDS[store]}, remove "
                    f"{'state.redis' if store == 'redis' else 'state.postgres'} from this "
                    "environment",
                )
            earlier = users[(store, where)]
            refused = [
                other
                for other, _other_secret in earlier
                if other != env_name
                and not (
                    other in _shared_with(cfg, env_name) and env_name in _shared_with(cfg, other)
                )
            ]
            shares.update((env_name, other) for other, _s in earlier if other != env_name)
            shares.update((other, env_name) for other, _s in earlier if other != env_name)
            if refused:  # one diagnostic per source, naming the first environment it shares with
                yield _shared_store(ctx, store, where, (refused[0], env_name), secret)
            earlier.append((env_name, secret))
    yield from _shared_with_names(ctx, shares)
    yield from _store_secret_reuse(ctx)
    yield from _exact_limits(ctx)


def _shared_store(
    ctx: CheckContext, store: str, where: tuple[str, str], envs: tuple[str, str], secret: str
) -> Diagnostic:
    first, second = envs
    kind, value = where
    what = "environment variable" if kind == "env" else "file"
    word = _STORE_WORDS[store]
    first_ok = second in _shared_with(ctx.config, first)
    second_ok = first in _shared_with(ctx.config, second)
    if first_ok or second_ok:
        agreed, missing = (first, second) if first_ok else (second, first)
        hint = (
            f"environments.{agreed}.state lists '{missing}' in shared_with, but "
            f"environments.{missing}.state does not list '{agreed}': sharing takes both; add "
            f"`shared_with: [{agreed}]` under environments.{missing}.state, or give each "
            f"environment its own {word}"
        )
    else:
        hint = (
            f"give each environment its own {word} (its own URL, e.g. "
            f"{_state_example(first, store)} and {_state_example(second, store)}), or, if they "
            f"are meant to share it, add `shared_with: [{second}]` under "
            f"environments.{first}.state and `shared_with: [{first}]` under "
            f"environments.{second}.state"
        )
    return error(
        "E070",
        ("environments", second, "secrets", secret, kind),
        f"environments '{first}' and '{second}' share one {word}: both read its URL from the "
        f"{what} '{value}'",
        hint,
    )


def _shared_with_names(ctx: CheckContext, shares: set[tuple[str, str]]) -> Iterator[Diagnostic]:
    envs = ctx.config.environments
    for env_name, env in envs.items():
        if env.state is None:
            continue
        for i, other in enumerate(env.state.shared_with):
            path: Path = ("environments", env_name, "state", "shared_with", i)
            if other == env_name:
                yield error(
                    "E071",
                    path,
                    f"environment '{env_name}' lists itself in shared_with",
                    "list the OTHER environments that may use the same Redis or PostgreSQL",
                )
            elif other not in envs:
                if not ctx.is_broken("environments", other):
                    yield error(
                        "E071",
                        path,
                        f"unknown environment '{other}' in shared_with",
                        _suggest(other, envs, "environments"),
                    )
            elif (env_name, other) not in shares:
                yield warning(
                    "W071",
                    path,
                    f"environments '{env_name}' and '{other}' share no store, so this entry "
                    "allows nothing",
                    "remove it (a stale allowance lets a later edit share a store unnoticed)",
                )


def _store_secret_reuse(ctx: CheckContext) -> Iterator[Diagnostic]:
    for env_name, resolved in ctx.resolved.items():
        state = resolved.env.state
        if state is None:
            continue
        base: Path = ("environments", env_name, "state")
        if "on_redis_unavailable" in state.model_fields_set and state.redis is None:
            yield warning(
                "W072",
                (*base, "on_redis_unavailable"),
                "on_redis_unavailable has no effect without `redis`: limits are kept in each "
                "gateway process",
                f"add `redis: {_state_example(env_name, 'redis')}` or remove on_redis_unavailable",
            )
        needs = required_secrets(ctx.config, resolved)
        stores = resolved.state
        database = stores.records_secret if stores.records_sink == "postgres" else None
        for store in ("redis", "postgres"):
            secret = getattr(state, store)
            if secret is None:
                continue
            if store == "redis" and secret == database:  # state.postgres or logging.url_secret
                yield error(
                    "E072",
                    (*base, store),
                    f"{secret} is named for both the Redis and the PostgreSQL URL",
                    "each store needs its own secret, e.g. "
                    f"{_state_example(env_name, 'redis')} and "
                    f"{_state_example(env_name, 'postgres')}",
                )
                continue
            used_by = needs.get(secret, "")
            if not used_by.startswith("environments."):
                yield error(
                    "E072",
                    (*base, store),
                    f"{secret} holds the {_STORE_WORDS[store]} URL but is also named by {used_by}",
                    f"name a secret of its own, e.g. {_state_example(env_name, store)}",
                )


def _has_limits(limits: Limits) -> bool:
    k = limits.per_key
    return (
        k.requests_per_minute is not None
        or k.tokens_per_minute is not None
        or _has_usd_limits(limits)
    )


def _exact_limits(ctx: CheckContext) -> Iterator[Diagnostic]:
    workers = ctx.config.runtime.workers
    for env_name, resolved in ctx.resolved.items():
        env = resolved.env
        processes = env.replicas * workers
        if processes <= 1 or resolved.state.limits_store == "redis":
            continue
        if not _has_limits(resolved.limits):
            continue
        yield warning(
            "W070",
            ("environments", env_name, "replicas")
            if env.replicas > 1
            else ("environments", env_name),
            f"environment '{env_name}' runs {processes} gateway processes ({env.replicas} "
            f"replica{'s' if env.replicas > 1 else ''} × {workers} worker"
            f"{'s' if workers > 1 else ''}) that each count rate limits and budgets on their "
            "own, so these are not exact: concurrent requests can overshoot a budget",
            f"add `state: {{redis: {_state_example(env_name, 'redis')}}}` (and its source under "
            "secrets) so every process counts in one place",
            at_key=env.replicas == 1,
        )


def check_logging(ctx: CheckContext) -> Iterator[Diagnostic]:
    log = ctx.config.logging
    if log.sink == "postgres" and log.url_secret is None:
        yield error(
            "E012",
            ("logging", "url_secret"),
            "the postgres sink needs `url_secret`, the secret holding the database URL",
            "add `url_secret: REQUEST_LOG_DATABASE_URL` and give its source under "
            "environments.<env>.secrets",
        )


# ---------------------------------------------------------------------------------------
# hosts


_THIS_MACHINE = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _host_key(env_target: str, host: str | None) -> str:
    """Environments on the same machine share ports: `local` and SSH to loopback are one."""
    if env_target == "local" or (host or "").lower() in _THIS_MACHINE:
        return "this machine"
    return str(host).lower()


def check_hosts(ctx: CheckContext) -> Iterator[Diagnostic]:
    cfg = ctx.config
    ports: dict[tuple[str, int], str] = {}
    projects: dict[tuple[str, str], str] = {}
    for env_name, env in cfg.environments.items():  # document order: the later one is reported
        base: Path = ("environments", env_name)
        if env.target == "ssh" and env.host is None:
            yield error(
                "E012",
                (*base, "host"),
                f"environment '{env_name}' has target ssh but no host",
                "add `host: gw1.example.com`",
            )
            continue
        if env.target == "local" and env.host is not None:
            yield error(
                "E054",
                (*base, "host"),
                "a local target takes no host",
                "remove `host`, or set `target: ssh`",
                at_key=True,
            )
        host = _host_key(env.target, env.host)
        other = ports.get((host, env.port))
        if (*base, "port") in ctx.repaired:
            pass  # its port is a stand-in for a bad value (E011 says so)
        elif other is not None:
            yield error(
                "E050",
                (*base, "port"),
                f"port {env.port} on {host} is already used by environment '{other}'",
                "give each environment on a host its own port",
            )
        else:
            ports[(host, env.port)] = env_name
        proj = compose_project(cfg, env_name)
        other = projects.get((host, proj))
        if other is not None:
            yield error(
                "E051",
                (*base, "compose_project") if env.compose_project else base,
                f"compose project '{proj}' on {host} is already used by environment '{other}'",
                "each environment needs its own compose project name on a host",
                at_key=env.compose_project is None,
            )
        else:
            projects[(host, proj)] = env_name


def check_policy_only(ctx: CheckContext) -> Iterator[Diagnostic]:
    # Providers allowed but never reachable are fine; a blocked provider named by an org's BYOK
    # is worth a warning.
    for env_name in ctx.config.environments:
        why = ctx.resolved[env_name].policy_drops
        for oid, org in ctx.config.orgs.items():
            if org.byok is None:
                continue
            for i, pid in enumerate(org.byok.providers):
                if pid in why:
                    yield warning(
                        "W038",
                        ("orgs", oid, "byok", "providers", i),
                        f"org '{oid}' may bring keys for '{pid}', but {why[pid]} in environment "
                        f"'{env_name}'",
                        f"allow '{pid}' in that environment if the org should use its own keys "
                        "there",
                    )


CHECKS: tuple[Check, ...] = (
    check_providers,
    check_embedding_models,
    check_route_references,
    check_embedding_routes,
    check_routes_per_environment,
    check_prices,
    check_price_tables,
    check_org_and_policy_references,
    check_literal_secrets,
    check_secrets,
    check_logging,
    check_state_stores,
    check_hosts,
    check_policy_only,
)
