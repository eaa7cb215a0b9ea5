"""The shared words (runtime/vocabulary.py) are the ones both sides use, defined once."""

from __future__ import annotations

import json
from pathlib import Path

from compiler.models import Fallback
from compiler.resolve import base_url
from runtime.adapters import ADAPTERS, anthropic, gemini, openai
from runtime.errors import CLIENT_STATUS, NOT_RETRYABLE
from runtime.vocabulary import (
    ADAPTER_NAMES,
    CAPABILITIES,
    DEFAULT_BASE_URLS,
    ERROR_CLASSES,
    FALLBACK_ERROR_CLASSES,
    LOG_SINKS,
    STRATEGIES,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schema" / "gateway.schema.json").read_text()
)


def _enums(node: object) -> list[list[str]]:
    """Every `enum` list in the schema, wherever it is."""
    found: list[list[str]] = []
    if isinstance(node, dict):
        if isinstance(node.get("enum"), list):
            found.append(node["enum"])
        for value in node.values():
            found.extend(_enums(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_enums(value))
    return found


def test_every_error_class_may_fall_back() -> None:
    # The rule: a request one candidate cannot take never ends a chain another could serve,
    # so `fallback.on` may name every class, and its default is all of them.
    assert FALLBACK_ERROR_CLASSES == ERROR_CLASSES
    assert {"quota_exhausted", "upstream_config", "bad_request", "auth"} <= set(ERROR_CLASSES)
    assert Fallback().on == list(ERROR_CLASSES)


def test_final_errors_a_retry_cannot_fix_are_marked_so() -> None:
    assert set(ERROR_CLASSES) > NOT_RETRYABLE
    assert "quota_exhausted" in NOT_RETRYABLE and "rate_limited" not in NOT_RETRYABLE
    assert CLIENT_STATUS["quota_exhausted"] == (503, "upstream_quota_exhausted")
    assert CLIENT_STATUS["upstream_config"] == (502, "upstream_config_error")


def test_every_error_class_has_a_client_status() -> None:
    assert set(CLIENT_STATUS) == set(ERROR_CLASSES)


def test_the_schema_offers_the_vocabulary() -> None:
    enums = [tuple(e) for e in _enums(SCHEMA)]
    for words in (FALLBACK_ERROR_CLASSES, CAPABILITIES, ADAPTER_NAMES, STRATEGIES, LOG_SINKS):
        assert words in enums, words


def test_the_adapter_registry_serves_every_adapter_name() -> None:
    assert set(ADAPTERS) == set(ADAPTER_NAMES)


def test_adapters_and_compiler_share_the_default_base_urls() -> None:
    assert DEFAULT_BASE_URLS["openai"] == openai.DEFAULT_BASE_URL
    assert DEFAULT_BASE_URLS["anthropic"] == anthropic.DEFAULT_BASE_URL
    assert DEFAULT_BASE_URLS["gemini"] == gemini.DEFAULT_BASE_URL
    for adapter, url in DEFAULT_BASE_URLS.items():
        assert base_url(adapter, None) == url
        assert base_url(adapter, "http://own") == "http://own"
