"""Generate a large, realistic, valid gateway.yaml for benchmarking the compiler.

Deterministic: the same arguments (and `--seed`) always give byte-identical output.

    python bench/gen_config.py --routes 2000 --models 300 --providers 30 --out large.yaml

The config validates with no errors and no warnings: every route keeps at least one
candidate in every environment, fallbacks are capability-compatible, every model is priced
(so cost caps, budgets and the cheapest strategy all work), and the three environments share
one SSH host with distinct ports and their own secret sources.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.vocabulary import FALLBACK_ERROR_CLASSES

ADAPTER_MIX = ("openai", "anthropic", "gemini", "openai-compatible")
# Nested capability tiers: a model of tier k has every capability of the tiers below it, so a
# route whose candidates are ordered by tier is always fallback-compatible.
TIERS: tuple[tuple[str, ...], ...] = (
    ("streaming",),
    ("streaming", "json_mode"),
    ("streaming", "tools", "json_mode"),
    ("streaming", "tools", "json_mode", "json_schema", "parallel_tool_calls"),
    ("streaming", "tools", "json_mode", "json_schema", "parallel_tool_calls", "vision"),
    (
        "streaming",
        "tools",
        "json_mode",
        "json_schema",
        "parallel_tool_calls",
        "vision",
        "reasoning",
    ),
)
TIER_WEIGHTS = (1, 1, 2, 3, 3, 2)
CONTEXT_WINDOWS = (8192, 32768, 65536, 128000, 200000, 1048576)
FAMILIES = {
    "openai": ("gpt", "o"),
    "anthropic": ("claude-haiku", "claude-sonnet", "claude-opus"),
    "gemini": ("gemini-flash", "gemini-pro", "gemini-flash-lite"),
    "openai-compatible": ("llama", "qwen", "mistral", "deepseek", "mixtral"),
}
HOSTS = (
    "api.together.xyz/v1",
    "api.groq.com/openai/v1",
    "api.fireworks.ai/inference/v1",
    "vllm.internal.example/v1",
)
TEAMS = (
    "support",
    "search",
    "billing",
    "docs",
    "sales",
    "ops",
    "growth",
    "legal",
    "mobile",
    "risk",
)
TASKS = (
    "chat",
    "summarize",
    "extract",
    "classify",
    "translate",
    "rerank",
    "draft",
    "qa",
    "agent",
    "moderate",
)
ENVIRONMENTS = ("staging", "canary", "production")
SSH_HOST = "gw1.internal.example.com"


@dataclass(frozen=True)
class _Model:
    provider: str
    name: str
    tier: int
    context_window: int
    price_in: float
    price_out: float

    @property
    def ref(self) -> str:
        return f"{self.provider}/{self.name}"

    @property
    def reference_cost(self) -> float:
        """Cost of the compiler's reference request (1k input + 1k output tokens)."""
        return (self.price_in * 1000 + self.price_out * 1000) / 1_000_000


def _secret(pid: str) -> str:
    return pid.upper().replace("-", "_") + "_API_KEY"


def _providers(rng: random.Random, n: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(n):
        adapter = ADAPTER_MIX[i % len(ADAPTER_MIX)]
        pid = (
            f"{adapter.split('-')[0]}-{i:02d}"
            if adapter != "openai-compatible"
            else f"compat-{i:02d}"
        )
        spec: dict[str, Any] = {"adapter": adapter}
        if adapter == "openai-compatible":
            spec["base_url"] = f"https://{rng.choice(HOSTS)}"
        creds: dict[str, str] = {"api_key": _secret(pid)}
        if adapter == "openai" and i % 3 == 0:
            creds["organization"] = pid.upper().replace("-", "_") + "_ORG_ID"
        spec["credentials"] = creds
        spec["timeout_s"] = rng.choice((30, 60, 120))
        spec["models"] = {}
        out[pid] = spec
    return out


def _models(rng: random.Random, providers: dict[str, dict[str, Any]], n: int) -> list[_Model]:
    pids = list(providers)
    models: list[_Model] = []
    for i in range(n):
        pid = pids[i % len(pids)]
        spec = providers[pid]
        family = rng.choice(FAMILIES[spec["adapter"]])
        minor = rng.randrange(10)
        size = rng.choice(("mini", "base", "large", "xl"))
        name = f"{family}-{1 + i // len(pids)}.{minor}-{size}"
        tier = rng.choices(range(len(TIERS)), weights=TIER_WEIGHTS)[0]
        window = rng.choice(CONTEXT_WINDOWS)
        price_in = round(rng.uniform(0.05, 15.0), 2)
        price_out = round(price_in * rng.choice((2, 3, 4, 5)), 2)
        m = _Model(pid, name, tier, window, price_in, price_out)
        body: dict[str, Any] = {}
        if rng.random() < 0.3:
            body["upstream"] = f"{name}-20250{rng.randrange(1, 10)}{rng.randrange(10, 29)}"
        body["context_window"] = window
        body["max_output_tokens"] = min(window, rng.choice((4096, 8192, 16384, 32768, 65536)))
        body["capabilities"] = list(TIERS[tier])
        body["price"] = {"input": price_in, "output": price_out}
        spec["models"][name] = body
        models.append(m)
    return models


def _routes(
    rng: random.Random, n: int, models: list[_Model], core: set[str]
) -> dict[str, dict[str, Any]]:
    by_tier = [[m for m in models if m.tier >= t] for t in range(len(TIERS))]
    core_by_tier = [[m for m in ms if m.provider in core] for ms in by_tier]
    routes: dict[str, dict[str, Any]] = {}
    strategies = ("priority", "cheapest", "weighted")
    for i in range(n):
        name = f"{TEAMS[i % len(TEAMS)]}-{TASKS[(i // len(TEAMS)) % len(TASKS)]}-{i:05d}"
        strategy = strategies[i % 3] if rng.random() < 0.9 else "priority"
        declared = rng.random() < 0.6
        tier = rng.choices(range(len(TIERS)), weights=(3, 2, 3, 3, 2, 1))[0]
        pool = by_tier[tier]
        count = min(rng.randint(3, 6), len(pool))
        # At least one candidate from a provider every environment allows.
        anchor = rng.choice(core_by_tier[tier] or by_tier[0])
        picked = [anchor, *rng.sample([m for m in pool if m is not anchor], count - 1)]
        if declared:
            rng.shuffle(picked)
        else:
            # Without `requires`, the first candidate left in an environment sets the
            # requirements, so order by tier: later candidates have everything earlier ones do.
            picked.sort(key=lambda m: m.tier)
        body: dict[str, Any] = {"description": f"{name.replace('-', ' ')} traffic"}
        body["strategy"] = strategy
        if strategy == "weighted":
            weights = [rng.choice((0, 5, 10, 20, 30, 50, 70)) for _ in picked]
            weights[0] = max(weights[0], 10)
            body["candidates"] = [
                {"model": m.ref, "weight": w} for m, w in zip(picked, weights, strict=True)
            ]
        else:
            body["candidates"] = [m.ref for m in picked]
        if declared:
            caps = list(TIERS[tier])
            body["requires"] = sorted(rng.sample(caps, rng.randint(1, len(caps))))
        if rng.random() < 0.2:
            body["min_context_window"] = min(m.context_window for m in picked)
        if rng.random() < 0.25:
            cap = max(m.reference_cost for m in picked) * 1.25
            body["max_cost_per_request_usd"] = math.ceil(cap * 10_000) / 10_000
        if rng.random() < 0.5:
            fallback: dict[str, Any] = {"max_attempts": rng.randint(1, max(1, min(count, 5)))}
            if rng.random() < 0.5:
                fallback["on"] = sorted(
                    rng.sample(FALLBACK_ERROR_CLASSES, rng.randint(2, len(FALLBACK_ERROR_CLASSES)))
                )
            if rng.random() < 0.5:
                fallback["first_byte_timeout_s"] = rng.choice((5, 10, 20, 30))
            body["fallback"] = fallback
        routes[name] = body
    return routes


def _orgs(
    rng: random.Random, n: int, route_names: list[str], core: list[str]
) -> dict[str, dict[str, Any]]:
    orgs: dict[str, dict[str, Any]] = {}
    for i in range(n):
        oid = f"org-{i:03d}"
        body: dict[str, Any] = {"description": f"Tenant {i}"}
        if i % 3 == 1:
            body["routes"] = sorted(
                rng.sample(route_names, min(len(route_names), rng.randint(3, 40)))
            )
        if i % 4 == 2:
            body["allow_explicit_models"] = False
        if i % 5 == 3:
            body["byok"] = {
                "providers": sorted(rng.sample(core, min(len(core), 2))),
                "encryption_key": oid.upper().replace("-", "_") + "_BYOK_KEY",
            }
        orgs[oid] = body
    return orgs


def generate(
    routes: int, models: int, providers: int, *, seed: int = 0, orgs: int | None = None
) -> dict[str, Any]:
    """The config as plain data, ready to dump as YAML."""
    if providers < 1 or models < providers or routes < 1:
        raise ValueError("need at least one provider, one model per provider and one route")
    rng = random.Random(seed)
    provs = _providers(rng, providers)
    model_list = _models(rng, provs, models)
    pids = list(provs)
    # Providers every environment allows (and BYOK may use); the rest are subject to policy.
    core = pids[: max(1, len(pids) // 3)]
    rest = pids[len(core) :]
    route_map = _routes(rng, routes, model_list, set(core))
    org_map = _orgs(rng, orgs if orgs is not None else max(3, routes // 50), list(route_map), core)

    blocked_in = {
        "staging": [],
        "canary": sorted(rng.sample(rest, len(rest) // 4)) if rest else [],
        "production": [],
    }
    production_allowed = (
        sorted([*core, *rng.sample(rest, len(rest) // 2)]) if rest else sorted(core)
    )
    budgeted = [oid for oid in org_map][: max(1, len(org_map) // 4)]
    byok_keys = sorted(b["byok"]["encryption_key"] for b in org_map.values() if "byok" in b)

    envs: dict[str, Any] = {}
    for k, env_name in enumerate(ENVIRONMENTS):
        allowed = (
            production_allowed
            if env_name == "production"
            else [p for p in pids if p not in blocked_in[env_name]]
        )
        names: list[str] = []
        for pid in allowed:
            creds = provs[pid]["credentials"]
            names += [
                creds["api_key"],
                *([creds["organization"]] if "organization" in creds else []),
            ]
        names += byok_keys
        secrets: dict[str, Any] = {}
        for secret in sorted(names):
            if env_name == "production":
                secrets[secret] = {"file": f"~/.config/switchyard/{env_name}/{secret.lower()}.key"}
            else:
                secrets[secret] = {"env": f"{env_name.upper()}_{secret}"}
                if env_name == "canary" and secret in byok_keys:
                    secrets[secret]["optional"] = True
        env: dict[str, Any] = {
            "description": f"{env_name.capitalize()} gateway",
            "target": "ssh",
            "host": SSH_HOST,
            "ssh_user": "deploy",
            "port": 8200 + 100 * k,
        }
        if env_name == "production":
            env["replicas"] = 3
            env["allowed_providers"] = production_allowed
            env["health_timeout_s"] = 120
            env["keep_releases"] = 10
        if blocked_in[env_name]:
            env["blocked_providers"] = blocked_in[env_name]
        if env_name != "production":
            env["limits"] = {
                "per_key": {"requests_per_minute": 60 * (k + 1), "usd_per_day": 10 * (k + 1)},
                "orgs": {budgeted[0]: {"usd_per_day": 25}},
            }
        env["secrets"] = secrets
        envs[env_name] = env

    return {
        "version": 1,
        "project": "bench-gateway",
        "description": f"Generated benchmark config: {routes} routes, {models} models, "
        f"{providers} providers (seed {seed}).",
        "providers": provs,
        "routes": route_map,
        "orgs": org_map,
        "limits": {
            "per_key": {
                "requests_per_minute": 600,
                "tokens_per_minute": 400000,
                "usd_per_day": 100,
            },
            "per_org": {"usd_per_day": 500, "usd_per_month": 10000},
            "orgs": {oid: {"usd_per_month": 1000 + 250 * i} for i, oid in enumerate(budgeted)},
        },
        "logging": {"sink": "sqlite", "retention_days": 30, "batch_size": 512},
        "runtime": {
            "base_image": "python:3.11-slim-bookworm",
            "workers": 2,
            "allow_explicit_models": True,
        },
        "environments": envs,
    }


def render(config: dict[str, Any]) -> str:
    """The config as YAML text: block style, leaf lists and mappings inline, keys in order."""
    body = yaml.safe_dump(
        config, sort_keys=False, default_flow_style=None, width=10_000, allow_unicode=True
    )
    return "# Generated by bench/gen_config.py — do not edit.\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--routes", type=int, default=2000)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--providers", type=int, default=30)
    parser.add_argument("--orgs", type=int, default=None, help="default: routes / 50 (at least 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="-", help="output file, or - for stdout")
    args = parser.parse_args(argv)
    try:
        text = render(
            generate(args.routes, args.models, args.providers, seed=args.seed, orgs=args.orgs)
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
