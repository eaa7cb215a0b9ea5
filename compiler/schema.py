"""The JSON Schema of gateway.yaml, generated from the models (never hand-edited)."""

from __future__ import annotations

import json
from typing import Any

from compiler.models import GatewayConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def gateway_schema() -> dict[str, Any]:
    schema = GatewayConfig.model_json_schema(mode="validation")
    _close_named_maps(schema)
    return {"$schema": SCHEMA_DIALECT, **schema}


def _close_named_maps(node: Any) -> None:
    """Make a map whose keys are constrained names refuse keys that break the rule.

    pydantic renders `dict[RouteName, Route]` as `patternProperties` alone, under which a
    key that does not match (`chat/fast`) is silently allowed; the models refuse it.
    """
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "properties" not in node:
            node.setdefault("propertyNames", {"pattern": next(iter(patterns))})
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_named_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_named_maps(value)


def schema_text() -> str:
    """The schema as checked in: sorted keys, two-space indent, trailing newline."""
    return json.dumps(gateway_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
