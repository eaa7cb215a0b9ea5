"""`explain` and `diff`: what a route does in an environment, and what differs between two."""

from __future__ import annotations

from typing import Any

from compiler.models import GatewayConfig
from compiler.render import runtime_config
from compiler.resolve import resolve_environment


def explain_route(config: GatewayConfig, route: str, env_name: str) -> dict[str, Any]:
    """The resolved candidate chain of `route` in `env_name`, and every dropped candidate.

    `kind` is `chat` or `embeddings`; an embedding candidate carries its `dimensions`, and its
    `reference_cost_usd` is that of 1,000 input tokens (embeddings bill no output)."""
    resolved = resolve_environment(config, env_name)
    rr = resolved.routes[route]
    r = rr.route
    return {
        "route": route,
        "environment": env_name,
        "kind": rr.kind,
        "strategy": r.strategy,
        "requires": list(rr.requires),
        "requires_source": "declared"
        if rr.requires_declared
        else (f"implied by {rr.primary_ref}" if rr.primary_ref else "none"),
        "min_context_window": r.min_context_window,
        "max_cost_per_request_usd": r.max_cost_per_request_usd,
        "fallback": r.fallback.model_dump(),
        "candidates": [
            {
                "ref": c.ref,
                "upstream": c.upstream,
                "weight": c.weight,
                "capabilities": list(c.capabilities),
                "context_window": c.context_window,
                "max_output_tokens": c.max_output_tokens,
                "dimensions": c.dimensions,
                "price": c.price.model_dump() if c.price else None,
                "reference_cost_usd": c.reference_cost_usd,
            }
            for c in rr.candidates
        ],
        "dropped": [{"ref": d.ref, "kind": d.kind, "reason": d.reason} for d in rr.dropped],
    }


_STRATEGY_NOTES = {
    "cheapest": "order: per request, cheapest first for that request (listed here as written)",
    "weighted": "order: the first pick is random by weight, the rest follow as written",
}


def explain_text(doc: dict[str, Any]) -> str:
    """The `explain_route` document for a person: header, candidate table, dropped list."""
    embeddings = doc["kind"] == "embeddings"
    if embeddings:
        sizes = sorted({c["dimensions"] for c in doc["candidates"] if c["dimensions"]})
        vectors = f", {'/'.join(map(str, sizes))}-dimensional vectors" if sizes else ""
        lines = [
            f"route {doc['route']} in {doc['environment']}: embeddings (/v1/embeddings), "
            f"strategy {doc['strategy']}{vectors}"
        ]
    else:
        lines = [
            f"route {doc['route']} in {doc['environment']}: strategy {doc['strategy']}, "
            f"requires [{', '.join(doc['requires'])}] ({doc['requires_source']})",
        ]
    extra = []
    if doc["min_context_window"]:
        extra.append(f"min_context_window {doc['min_context_window']:,}")
    if doc["max_cost_per_request_usd"]:
        extra.append(f"cost cap ${doc['max_cost_per_request_usd']:g}/request")
    note = _STRATEGY_NOTES.get(doc["strategy"])
    if note:
        extra.append(note)
    fb = doc["fallback"]
    extra.append(
        f"fallback on {', '.join(fb['on'])}; max {fb['max_attempts']} attempts; "
        f"first byte within {fb['first_byte_timeout_s']:g}s"
    )
    lines += [f"  {e}" for e in extra]
    lines.append("")
    if embeddings:
        lines += _embedding_table(doc)
    else:
        lines += _chat_table(doc)
    if doc["dropped"]:
        width = max(len(d["ref"]) for d in doc["dropped"])
        lines.append("")
        lines.append("  dropped:")
        for d in doc["dropped"]:
            lines.append(f"    {d['ref']:<{width}}  {d['kind']}: {d['reason']}")
    return "\n".join(lines) + "\n"


_NO_CANDIDATE = "  (none: the route cannot serve requests here)"


def _weight(doc: dict[str, Any], c: dict[str, Any]) -> str:
    if c["weight"] is not None and doc["strategy"] == "weighted":
        return f" (weight {c['weight']})"
    return ""


def _embedding_table(doc: dict[str, Any]) -> list[str]:
    """An embedding route's candidates: vector length, input limit per text, input price."""
    rows = [
        [
            str(i),
            c["ref"] + _weight(doc, c),
            str(c["dimensions"]),
            f"{c['context_window']:,}",
            f"${c['price']['input']:g}" if c["price"] else "unpriced",
            f"${c['reference_cost_usd']:.6f}" if c["reference_cost_usd"] is not None else "-",
        ]
        for i, c in enumerate(doc["candidates"], 1)
    ]
    if not rows:
        return [_NO_CANDIDATE]
    return _table(
        ["#", "candidate", "dimensions", "input limit", "input per 1M", "1k input cost"],
        rows,
        right={2, 3, 4, 5},
    )


def _chat_table(doc: dict[str, Any]) -> list[str]:
    rows = []
    for i, c in enumerate(doc["candidates"], 1):
        rows.append(
            [
                str(i),
                c["ref"] + _weight(doc, c),
                f"{c['context_window']:,}",
                _price_cell(c["price"]),
                f"${c['reference_cost_usd']:.4f}" if c["reference_cost_usd"] is not None else "-",
                ", ".join(c["capabilities"]),
            ]
        )
    if not rows:
        return [_NO_CANDIDATE]
    return _table(
        ["#", "candidate", "context", "price (in/out per 1M)", "1k+1k cost", "capabilities"],
        rows,
        right={2, 4},
    )


def _rates(p: dict[str, Any]) -> str:
    text = f"${p['input']:g} / ${p['output']:g}"
    extra = []
    if p.get("cached_input") is not None:
        extra.append(f"cached ${p['cached_input']:g}")
    if p.get("cache_write") is not None:
        extra.append(f"cache write ${p['cache_write']:g}")
    if p.get("cache_write_1h") is not None:
        extra.append(f"1h write ${p['cache_write_1h']:g}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _price_cell(p: dict[str, Any] | None) -> str:
    """`$in / $out (cached $x, cache write $y, 1h write $z)`, then each tier after `;`."""
    if not p:
        return "unpriced"
    parts = [_rates(p)]
    parts += [f"above {t['above_input_tokens']:,}: {_rates(t)}" for t in p.get("tiers") or []]
    return "; ".join(parts)


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Columns as wide as their widest cell; the columns in `right` are right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  "
        + "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]


# ---------------------------------------------------------------------------------------
# diff


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = value
    return out


def _comparable(config: GatewayConfig, env_name: str) -> dict[str, dict[str, Any]]:
    resolved = resolve_environment(config, env_name)
    doc = runtime_config(config, resolved)
    env = config.environments[env_name]
    routes = {
        name: {
            "chain": " -> ".join(
                f"{c.provider}/{c.model}" + (f"@{c.weight}" if c.weight is not None else "")
                for c in r.candidates
            )
            or "(none)",
            "strategy": r.strategy,
            "requires": ", ".join(sorted(r.requires)),
            "max_cost_per_request_usd": r.max_cost_per_request_usd,
            "fallback": r.fallback.to_dict(),
        }
        for name, r in doc.routes.items()
    }
    return {
        "deployment": {
            "target": env.target,
            "host": env.host,
            "port": env.port,
            "replicas": env.replicas,
            "compose_project": doc.compose_project,
            "health_timeout_s": env.health_timeout_s,
        },
        "policy": {"allowed_providers": ", ".join(resolved.allowed_providers) or "(none)"},
        "providers": {
            pid: {"models": ", ".join(sorted(p.models)), "base_url": p.base_url}
            for pid, p in doc.providers.items()
        },
        "routes": routes,
        "limits": doc.limits.to_dict(),
        "state": {
            "limits": doc.state.limits_store,
            "on_redis_unavailable": doc.state.on_redis_unavailable,
            "keys": doc.state.keys_store,
            "records": doc.logging.sink,
        },
        "secrets": {
            name: ("optional" if s.optional else "required") for name, s in doc.secrets.items()
        },
    }


ABSENT = "<absent>"


def diff_environments(config: GatewayConfig, env_a: str, env_b: str) -> list[dict[str, Any]]:
    """Every setting whose value differs between two environments' resolved configs.

    A provider, route or secret that only one side has is one change (`<absent>` on the
    other side), not one per field.
    """
    a, b = _comparable(config, env_a), _comparable(config, env_b)
    out: list[dict[str, Any]] = []
    for section in a:
        for item in sorted(set(a[section]) | set(b[section])):
            key = f"{section}.{item}"
            if item not in a[section] or item not in b[section]:
                out.append(
                    {
                        "key": key,
                        env_a: _summary(a[section].get(item, ABSENT)),
                        env_b: _summary(b[section].get(item, ABSENT)),
                    }
                )
                continue
            fa, fb = _flatten(a[section][item], key), _flatten(b[section][item], key)
            for k in sorted(set(fa) | set(fb)):
                va, vb = fa.get(k, ABSENT), fb.get(k, ABSENT)
                if va != vb:
                    out.append({"key": k, env_a: va, env_b: vb})
    return out


def _summary(value: Any) -> Any:
    """A whole item on one line: `models: a, b; base_url: https://…`."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_show(v)}" for k, v in _flatten(value).items())
    return value


def diff_text(env_a: str, env_b: str, changes: list[dict[str, Any]]) -> str:
    """The changes of `diff_environments`, grouped by section, `-` for A and `+` for B."""
    if not changes:
        return f"{env_a} and {env_b} resolve to the same routes, providers and limits\n"
    lines = [
        f"{len(changes)} difference{'s' if len(changes) != 1 else ''} from {env_a} to {env_b}:"
    ]
    section = None
    for ch in changes:
        top = ch["key"].split(".", 1)[0]
        if top != section:
            section = top
            lines.append(f"\n{section}:")
        key = ch["key"].split(".", 1)[1] if "." in ch["key"] else ch["key"]
        lines.append(f"  {key}")
        lines.append(f"    - {env_a}: {_show(ch[env_a])}")
        lines.append(f"    + {env_b}: {_show(ch[env_b])}")
    return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if value == ABSENT:
        return "(absent)"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return str(value)
