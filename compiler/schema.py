"""The JSON Schema of gateway.yaml, generated from the models (never hand-edited)."""

from __future__ import annotations

import json
from typing import Any

from compiler.models import GatewayConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def gateway_schema() -> dict[str, Any]:
    schema = GatewayConfig.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


def schema_text() -> str:
    """The schema as checked in: sorted keys, two-space indent, trailing newline."""
    return json.dumps(gateway_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
