"""Embeddings in gateway.yaml: embedding models, the kind of a route, and what `check` refuses.

The invalid examples (schema/examples/invalid/071-079) hold the exact output of each code;
these tests hold what the examples cannot show on their own: what is NOT reported beside
them, what runtime.json and `explain` carry, and the published schema's agreement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from compiler.explain import explain_route, explain_text
from compiler.render import runtime_config
from compiler.resolve import resolve_environment
from compiler.validate import CheckResult, check_bytes
from runtime.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_TEXT = (ROOT / "gateway.yaml").read_text(encoding="utf-8")

# A small file to vary: an OpenAI chat model and embedding model, a Gemini embedding model
# configured at the same size (its `outputDimensionality`), and a mock.
BASE = """\
version: 1
project: acme-search
providers:
  openai:
    adapter: openai
    credentials: {api_key: OPENAI_API_KEY}
    models:
      gpt-4o-mini:
        context_window: 128000
        capabilities: [streaming, tools]
        price: {input: 0.15, cached_input: 0.075, output: 0.60}
      text-embedding-3-small:
        context_window: 8192
        capabilities: [embeddings]
        dimensions: 1536
        price: {input: 0.02, output: 0}
  gemini:
    adapter: gemini
    credentials: {api_key: GEMINI_API_KEY}
    models:
      gemini-embedding-001:
        context_window: 2048
        capabilities: [embeddings]
        dimensions: 1536
        price: {input: 0.15, output: 0}
  mock:
    adapter: mock
    models:
      embed:
        context_window: 8192
        capabilities: [embeddings]
        dimensions: 1536
routes:
  chat:
    candidates: [openai/gpt-4o-mini]
  embed:
    candidates:
      - openai/text-embedding-3-small
      - gemini/gemini-embedding-001
      - mock/embed
environments:
  dev:
    target: local
    port: 8080
    secrets:
      OPENAI_API_KEY: {env: OPENAI_API_KEY}
      GEMINI_API_KEY: {env: GEMINI_API_KEY}
  production:
    target: ssh
    host: gw1.example.com
    port: 8300
    blocked_providers: [mock]
    secrets:
      OPENAI_API_KEY: {file: ~/.config/acme/openai.key}
      GEMINI_API_KEY: {file: ~/.config/acme/gemini.key}
"""


def check(text: str) -> CheckResult:
    return check_bytes(text)


def codes(result: CheckResult) -> list[tuple[str, str, int]]:
    return [(d.code, d.dotted_path, d.line) for d in result.diagnostics]


def line_of(text: str, needle: str, after: str = "") -> int:
    """The 1-based line of the only `needle` in `text` (after the first `after`)."""
    start = text.index(after)
    assert text.count(needle, start) == 1, needle
    return text.count("\n", 0, text.index(needle, start)) + 1


def variant(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_the_base_file_is_clean_no_cache_price_warning_for_embedding_models() -> None:
    # W062 (no cached_input for a provider that reports cache reads) is a chat matter:
    # embeddings report input tokens only, so the two unpriced cache rates are not warned of.
    assert codes(check(BASE)) == []


def test_runtime_json_carries_the_kind_and_the_dimensions() -> None:
    result = check(BASE)
    assert result.config is not None
    doc = runtime_config(result.config, resolve_environment(result.config, "dev")).to_dict()
    assert doc["routes"]["embed"]["kind"] == "embeddings"
    assert "kind" not in doc["routes"]["chat"]  # chat is the default, written only when not
    assert doc["routes"]["embed"]["requires"] == ["embeddings"]
    models = doc["providers"]["openai"]["models"]
    assert models["text-embedding-3-small"]["dimensions"] == 1536
    assert models["text-embedding-3-small"]["max_output_tokens"] is None
    assert "dimensions" not in models["gpt-4o-mini"]
    # The gateway reads it back as it was meant.
    parsed = parse_config(json.loads(json.dumps(doc)))
    assert parsed.routes["embed"].kind == "embeddings"
    assert parsed.routes["chat"].kind == "chat"
    assert parsed.providers["gemini"].models["gemini-embedding-001"].dimensions == 1536


def test_the_kind_is_decided_as_written_even_where_the_first_candidate_is_not_allowed() -> None:
    result = check(
        variant("    blocked_providers: [mock]\n", "    blocked_providers: [mock, openai]\n")
    )
    assert result.config is not None
    rr = resolve_environment(result.config, "production").routes["embed"]
    assert rr.kind == "embeddings"
    assert [c.ref for c in rr.candidates] == ["gemini/gemini-embedding-001"]
    assert [(d.ref, d.kind) for d in rr.dropped] == [
        ("openai/text-embedding-3-small", "environment_policy"),
        ("mock/embed", "environment_policy"),
    ]
    assert (
        runtime_config(result.config, resolve_environment(result.config, "production"))
        .routes["embed"]
        .kind
        == "embeddings"
    )


def test_the_example_gateway_yaml_has_an_embedding_route_over_three_providers() -> None:
    result = check(GATEWAY_TEXT)
    assert result.ok and result.config is not None
    dev = resolve_environment(result.config, "dev").routes["embed"]
    assert dev.kind == "embeddings"
    assert [(c.ref, c.dimensions) for c in dev.candidates] == [
        ("openai/text-embedding-3-small", 1536),
        ("gemini/gemini-embedding-001", 1536),
        ("mock/embed", 1536),
    ]
    # Every chat route stays a chat route.
    assert {n for n, r in resolve_environment(result.config, "dev").routes.items()} >= {
        "chat",
        "summarize",
        "assist",
        "extract",
    }
    assert all(
        r.kind == "chat"
        for n, r in resolve_environment(result.config, "dev").routes.items()
        if n != "embed"
    )


# ---------------------------------------------------------------------------------------
# models


def test_max_output_tokens_on_an_embedding_model_is_refused_at_its_key() -> None:
    text = variant(
        "        context_window: 8192\n        capabilities: [embeddings]\n"
        "        dimensions: 1536\n        price: {input: 0.02, output: 0}\n",
        "        context_window: 8192\n        max_output_tokens: 8192\n"
        "        capabilities: [embeddings]\n        dimensions: 1536\n"
        "        price: {input: 0.02, output: 0}\n",
    )
    result = check(text)
    assert codes(result) == [
        (
            "E081",
            "providers.openai.models.text-embedding-3-small.max_output_tokens",
            line_of(text, "max_output_tokens: 8192"),
        )
    ]
    assert result.diagnostics[0].column == 9
    assert "input limit per text" in (result.diagnostics[0].hint or "")


def test_an_embedding_model_without_dimensions_is_not_also_a_dimension_mismatch() -> None:
    text = variant(
        "        capabilities: [embeddings]\n        dimensions: 1536\n"
        "        price: {input: 0.15, output: 0}\n",
        "        capabilities: [embeddings]\n        price: {input: 0.15, output: 0}\n",
    )
    assert codes(check(text)) == [
        (
            "E080",
            "providers.gemini.models.gemini-embedding-001",
            line_of(text, "gemini-embedding-001:"),
        )
    ]


@pytest.mark.parametrize("size", [0, -1536])
def test_dimensions_must_be_positive(size: int) -> None:
    text = variant(
        "      embed:\n        context_window: 8192\n        capabilities: [embeddings]\n"
        "        dimensions: 1536\n",
        "      embed:\n        context_window: 8192\n        capabilities: [embeddings]\n"
        f"        dimensions: {size}\n",
    )
    result = check(text)
    assert ("E014", "providers.mock.models.embed.dimensions") in [
        (c, p) for c, p, _l in codes(result)
    ]


def test_an_embedding_model_may_use_every_adapter_but_anthropic() -> None:
    # BASE has embedding models on openai, gemini and mock providers, and is clean.
    assert codes(check(BASE)) == []
    text = variant(
        "  mock:\n    adapter: mock\n",
        "  mock:\n    adapter: anthropic\n    credentials: {api_key: ANTHROPIC_API_KEY}\n",
    )
    text = text.replace(
        "      GEMINI_API_KEY: {env: GEMINI_API_KEY}\n",
        "      GEMINI_API_KEY: {env: GEMINI_API_KEY}\n"
        "      ANTHROPIC_API_KEY: {env: ANTHROPIC_API_KEY}\n",
    )
    assert codes(check(text)) == [
        (
            "E082",
            "providers.mock.models.embed.capabilities[0]",
            line_of(text, "capabilities: [embeddings]", after="  mock:"),
        )
    ]


# ---------------------------------------------------------------------------------------
# routes


def test_a_chat_model_among_embedding_candidates_is_one_error_not_a_capability_cascade() -> None:
    # Without `requires`, the first candidate's capabilities are implied for the rest; the
    # chat model is refused for its kind (E083), not also for lacking `embeddings` (E031).
    text = variant("      - gemini/gemini-embedding-001\n", "      - openai/gpt-4o-mini\n")
    result = check(text)
    assert codes(result) == [
        ("E083", "routes.embed.candidates[1]", line_of(text, "- openai/gpt-4o-mini"))
    ]
    assert "first candidate, openai/text-embedding-3-small" in result.diagnostics[0].message


def test_the_first_declared_candidate_decides_when_the_first_written_is_unknown() -> None:
    text = variant(
        "      - openai/text-embedding-3-small\n      - gemini/gemini-embedding-001\n",
        "      - openai/text-embedding-3-large\n      - gemini/gemini-embedding-001\n"
        "      - openai/gpt-4o-mini\n",
    )
    result = check(text)
    assert [c for c, _p, _l in codes(result)] == ["E021", "E083"]
    e083 = result.diagnostics[1]
    assert e083.dotted_path == "routes.embed.candidates[2]"
    assert "first candidate, gemini/gemini-embedding-001" in e083.message


def test_a_route_left_empty_by_mixed_kinds_in_an_environment_is_not_reported_again() -> None:
    # Production blocks openai: the route's first candidate is not allowed there and its chat
    # candidate was refused as written (E083), so E033 (no candidate left in production)
    # would only say it again.
    text = variant(
        "  chat:\n    candidates: [openai/gpt-4o-mini]\n",
        "  chat:\n    candidates: [openai/text-embedding-3-small, openai/gpt-4o-mini]\n",
    )
    text = variant(
        "    blocked_providers: [mock]\n", "    blocked_providers: [mock, openai]\n", text
    )
    result = check(text)
    assert result.config is not None
    assert resolve_environment(result.config, "production").routes["chat"].candidates == ()
    assert [c for c, _p, _l in codes(result) if c.startswith("E")] == ["E083"]


def test_a_duplicate_embedding_candidate_is_only_a_duplicate() -> None:
    text = variant("      - mock/embed\n", "      - openai/text-embedding-3-small\n")
    assert [c for c, _p, _l in codes(check(text))] == ["E034"]


def test_each_candidate_of_another_size_is_reported_against_the_first() -> None:
    text = BASE.replace(
        "        dimensions: 1536\n        price: {input: 0.15, output: 0}\n",
        "        dimensions: 768\n        price: {input: 0.15, output: 0}\n",
    )
    text = text.replace(
        "      embed:\n        context_window: 8192\n        capabilities: "
        "[embeddings]\n        dimensions: 1536\n",
        "      embed:\n        context_window: 8192\n        capabilities: "
        "[embeddings]\n        dimensions: 3072\n",
    )
    result = check(text)
    assert codes(result) == [
        ("E084", "routes.embed.candidates[1]", line_of(text, "- gemini/gemini-embedding-001")),
        ("E084", "routes.embed.candidates[2]", line_of(text, "- mock/embed")),
    ]
    assert "returns 768-dimensional vectors" in result.diagnostics[0].message
    assert "returns 1536" in result.diagnostics[0].message
    assert "`dimensions: 1536`" in (result.diagnostics[0].hint or "")
    assert "returns 3072-dimensional vectors" in result.diagnostics[1].message


def test_a_chat_capability_required_of_an_embedding_route_is_reported_once() -> None:
    text = variant("      - mock/embed\n", "      - mock/embed\n    requires: [streaming]\n")
    # Not also E030 for every candidate, nor E033 for the route left empty.
    assert codes(check(text)) == [
        ("E085", "routes.embed.requires[0]", line_of(text, "requires: [streaming]"))
    ]


def test_a_cost_cap_on_an_embedding_route_is_refused_and_nothing_is_dropped_by_it() -> None:
    text = variant(
        "      - mock/embed\n", "      - mock/embed\n    max_cost_per_request_usd: 1e-9\n"
    )
    result = check(text)
    # Not also E036 (mock/embed has no price) nor E035 (no candidate meets the cap).
    assert codes(result) == [
        ("E085", "routes.embed.max_cost_per_request_usd", line_of(text, "max_cost_per_request_usd"))
    ]
    assert result.diagnostics[0].column == 5


def test_min_context_window_on_an_embedding_route_is_the_per_text_input_limit() -> None:
    text = variant("      - mock/embed\n", "      - mock/embed\n    min_context_window: 4096\n")
    result = check(text)
    assert [c for c, _p, _l in codes(result)] == ["E032"]
    assert "gemini/gemini-embedding-001 has a context window 2,048" in (
        result.diagnostics[0].message
    )


# ---------------------------------------------------------------------------------------
# explain and the schema


def test_explain_shows_dimensions_and_input_prices_for_an_embedding_route() -> None:
    result = check(BASE)
    assert result.config is not None
    doc = explain_route(result.config, "embed", "dev")
    assert doc["kind"] == "embeddings"
    first = doc["candidates"][0]
    assert first["dimensions"] == 1536
    # An embedding bills input only: the reference cost is that of 1,000 input tokens.
    assert first["reference_cost_usd"] == pytest.approx(0.02 * 1000 / 1_000_000)
    text = explain_text(doc)
    assert text.splitlines()[0] == (
        "route embed in dev: embeddings (/v1/embeddings), strategy priority, "
        "1536-dimensional vectors"
    )
    assert "dimensions  input limit  input per 1M  1k input cost" in text
    assert "capabilities" not in text and "1k+1k" not in text
    row = next(line for line in text.splitlines() if "gemini/gemini-embedding-001" in line)
    assert row.split() == [
        "2",
        "gemini/gemini-embedding-001",
        "1536",
        "2,048",
        "$0.15",
        "$0.000150",
    ]
    chat = explain_text(explain_route(result.config, "chat", "dev"))
    assert "1k+1k cost" in chat and "dimensions" not in chat


@pytest.fixture(scope="module")
def schema() -> Any:
    doc = json.loads((ROOT / "schema" / "gateway.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(doc)


def _model(result: CheckResult, provider: str, name: str) -> dict[str, Any]:
    data = result.loaded.data
    assert data is not None
    model: dict[str, Any] = data["providers"][provider]["models"][name]
    return model


def test_the_schema_tells_an_editor_the_same_rules(schema: Any) -> None:
    ok = check(BASE).loaded.data
    assert schema.is_valid(ok)
    for old, new in [
        ("        dimensions: 1536\n        price: {input: 0.02", "        price: {input: 0.02"),
        (
            "        capabilities: [streaming, tools]\n",
            "        capabilities: [streaming, tools]\n        dimensions: 1536\n",
        ),
        (
            "        capabilities: [embeddings]\n        dimensions: 1536\n"
            "        price: {input: 0.02",
            "        capabilities: [embeddings, tools]\n        dimensions: 1536\n"
            "        price: {input: 0.02",
        ),
        (
            "      text-embedding-3-small:\n        context_window: 8192\n",
            "      text-embedding-3-small:\n        context_window: 8192\n"
            "        max_output_tokens: 1\n",
        ),
    ]:
        data = check(variant(old, new)).loaded.data
        assert not schema.is_valid(data), new
