"""JSON Schema for Gemini (runtime/adapters/gemini_schema.py): kept where Gemini takes it,
mapped to an equivalent where it does not, never widened silently."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.adapters.gemini_schema import to_gemini
from runtime.errors import Unservable
from tests.conformance.matrix import RICH_SCHEMA


def convert(schema: dict[str, Any], strict: bool = True) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    return to_gemini(schema, strict, "tool `t`", notes), notes


def test_nullable_enum_keeps_null_out_of_enum_and_still_allows_it() -> None:
    out, notes = convert({"type": ["string", "null"], "enum": ["low", "high", None]})

    assert out == {"anyOf": [{"type": "string", "enum": ["low", "high"]}, {"type": "null"}]}
    assert notes == []


def test_rich_schema_keeps_every_constraint() -> None:
    out, notes = convert(RICH_SCHEMA)

    props = out["properties"]
    assert props["target"] == {"anyOf": RICH_SCHEMA["properties"]["target"]["oneOf"]}
    assert props["due"] == RICH_SCHEMA["properties"]["due"]
    assert props["address"] == {"$ref": "#/$defs/address"}
    assert out["$defs"] == RICH_SCHEMA["$defs"]
    assert props["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert out["additionalProperties"] is False
    assert out["required"] == RICH_SCHEMA["required"]
    assert notes == []


def test_definitions_become_defs_and_refs_follow() -> None:
    out, _ = convert(
        {
            "type": "object",
            "properties": {"a": {"$ref": "#/definitions/A", "description": "an A"}},
            "definitions": {"A": {"type": "integer", "minimum": 0}},
        }
    )

    assert out == {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}},
        "$defs": {"A": {"type": "integer", "minimum": 0}},
    }


def test_single_all_of_is_merged_and_const_is_an_enum() -> None:
    out, _ = convert({"allOf": [{"type": "string"}], "const": "x", "description": "d"})

    assert out == {"type": "string", "enum": ["x"], "description": "d"}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a"},
        {"type": "string", "minLength": 2},
        {"not": {"type": "string"}},
        {"allOf": [{"type": "object"}, {"required": ["a"]}]},
        {"type": "array", "uniqueItems": True},
    ],
)
def test_strict_schema_with_a_keyword_gemini_ignores_is_unservable(schema: dict[str, Any]) -> None:
    with pytest.raises(Unservable) as info:
        convert({"type": "object", "properties": {"x": schema}})

    assert "tool `t`" in info.value.message


def test_non_strict_schema_drops_the_keyword_with_a_note() -> None:
    out, notes = convert(
        {"type": "object", "properties": {"x": {"type": "string", "pattern": "^a"}}}, strict=False
    )

    assert out == {"type": "object", "properties": {"x": {"type": "string"}}}
    assert notes == [
        "dropped `pattern` from the JSON schema of tool `t`: Gemini does not take them"
    ]
