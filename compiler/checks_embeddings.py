"""Checks of embedding models and routes (E080–E085; docs/api-embeddings-config.md).

A model with the capability `embeddings` is an embedding model: it declares the length of the
vectors it returns (`dimensions`), nothing a chat model has, and is served by embedding routes
only. A route's kind is decided by its first candidate; every other candidate must be of the
same kind and, on an embedding route, return vectors of the same length: a fallback to another
size would put vectors into an index that cannot compare them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from compiler.diagnostics import Diagnostic, Path, error
from compiler.resolve import EMBEDDINGS, lookup, route_kind

if TYPE_CHECKING:
    from compiler.checks import CheckContext

# Adapters whose provider has no embeddings API (Anthropic serves no embedding model).
NO_EMBEDDINGS_API = frozenset({"anthropic"})
# Adapters that serve /v1/embeddings, as the hints name them.
_EMBEDDING_ADAPTERS = "openai, gemini, openai-compatible or mock"
_WHAT = {"chat": "a chat model", "embeddings": "an embedding model"}
_ROUTE = {"chat": "a chat route", "embeddings": "an embedding route"}


def check_embedding_models(ctx: CheckContext) -> Iterator[Diagnostic]:
    """`dimensions` exactly on embedding models; no chat capability or `max_output_tokens`
    on them; no embedding model on a provider without an embeddings API."""
    for pid, p in ctx.config.providers.items():
        for name, m in p.models.items():
            base: Path = ("providers", pid, "models", name)
            if EMBEDDINGS not in m.capabilities:
                if m.dimensions is not None:
                    yield error(
                        "E080",
                        (*base, "dimensions"),
                        f"`dimensions` is for embedding models, and '{name}' has no "
                        "`embeddings` capability",
                        "remove `dimensions`, or make it an embedding model: "
                        "`capabilities: [embeddings]`",
                        at_key=True,
                    )
                continue
            at_capability: Path = (*base, "capabilities", m.capabilities.index(EMBEDDINGS))
            if m.dimensions is None:
                yield error(
                    "E080",
                    base,
                    f"embedding model '{name}' has no `dimensions`: the length of the vectors "
                    "it returns",
                    "add `dimensions:` with the size the model returns as configured, e.g. "
                    "1536 for text-embedding-3-small (the routes that list it must agree on it)",
                    at_key=True,
                )
            chat = [c for c in m.capabilities if c != EMBEDDINGS]
            if chat:
                yield error(
                    "E081",
                    (*base, "capabilities", m.capabilities.index(chat[0])),
                    f"embedding model '{name}' also lists chat capabilities: "
                    + ", ".join(f"'{c}'" for c in chat),
                    "an embedding model only embeds: write `capabilities: [embeddings]` (declare "
                    "a chat model of the provider as a model of its own)",
                )
            if m.max_output_tokens is not None:
                yield error(
                    "E081",
                    (*base, "max_output_tokens"),
                    f"embedding model '{name}' generates no tokens, so `max_output_tokens` does "
                    "not apply",
                    "remove it; `context_window` is the model's input limit per text",
                    at_key=True,
                )
            if p.adapter in NO_EMBEDDINGS_API:
                yield error(
                    "E082",
                    at_capability,
                    f"the {p.adapter} adapter has no embeddings API, so '{name}' cannot embed",
                    f"serve embeddings from an {_EMBEDDING_ADAPTERS} provider",
                )


def check_embedding_routes(ctx: CheckContext) -> Iterator[Diagnostic]:
    """One kind of model per route, as its first candidate decides; one vector length per
    embedding route; no chat-only setting on an embedding route."""
    config = ctx.config
    for rname, route in config.routes.items():
        kind, first = route_kind(config, route)
        if first is None:
            continue  # no candidate is declared: E020/E021 say so
        base: Path = ("routes", rname)
        for i, cand in enumerate(route.candidates):
            if i <= first.index:
                continue
            provider, _, model = cand.model.partition("/")
            rc = lookup(config, provider, model, i, cand.model, cand.weight)
            if rc is None or rc.ref == first.ref:
                continue  # undeclared (E020/E021) or listed twice (E034)
            path: Path = (*base, "candidates", i)
            if rc.kind != kind:
                yield error(
                    "E083",
                    path,
                    f"'{rc.ref}' is {_WHAT[rc.kind]}, but route '{rname}' is {_ROUTE[kind]}: "
                    f"its first candidate, {first.ref}, is {_WHAT[kind]} (the first candidate "
                    "decides a route's kind)",
                    "remove it from this route"
                    + (
                        "; embedding models serve embedding routes only (/v1/embeddings): "
                        "list it in a route of its own"
                        if rc.kind == "embeddings"
                        else "; chat models serve chat routes only"
                    ),
                )
            elif (
                kind == "embeddings"
                and rc.dimensions is not None
                and first.dimensions is not None
                and rc.dimensions != first.dimensions
            ):
                yield error(
                    "E084",
                    path,
                    f"'{rc.ref}' returns {rc.dimensions}-dimensional vectors, but the route's "
                    f"first candidate, {first.ref}, returns {first.dimensions}: a fallback would "
                    "mix vectors of two sizes in one index",
                    f"configure `dimensions: {first.dimensions}` on "
                    f"providers.{provider}.models.{model} if the model can return that size "
                    "(text-embedding-3-* and gemini-embedding-001 can), or list it in a route "
                    "of its own",
                )
        if kind != "embeddings":
            continue
        for i, cap in enumerate(route.requires or []):
            if cap != EMBEDDINGS:
                yield error(
                    "E085",
                    (*base, "requires", i),
                    f"route '{rname}' is an embedding route (its first candidate, {first.ref}, "
                    f"is an embedding model), and '{cap}' is a chat capability",
                    "remove it: an embedding route requires nothing but `embeddings`",
                )
        if route.max_cost_per_request_usd is not None:
            yield error(
                "E085",
                (*base, "max_cost_per_request_usd"),
                f"route '{rname}' is an embedding route (its first candidate, {first.ref}, is an "
                "embedding model), and a per-request cost cap is for chat routes",
                "remove it; bound embedding spend with budgets (`limits.per_key.usd_per_day`, "
                "`limits.per_org`)",
                at_key=True,
            )
