"""JSON Schema for Gemini's `parametersJsonSchema` and `responseJsonSchema` fields.

Gemini takes JSON Schema itself in those fields (google-genai `FunctionDeclaration.
parameters_json_schema`, `GenerationConfig.response_json_schema`), so the client's schema goes
out as written except where Google's reference says the field does not take a keyword
(https://ai.google.dev/api/generate-content#FIELDS.response_json_schema, "the following
subset of JSON Schema is supported": `$id`, `$defs`, `$ref`, `$anchor`, `type`, `format`,
`title`, `description`, `enum` (strings and numbers), `items`, `prefixItems`, `minItems`,
`maxItems`, `minimum`, `maximum`, `anyOf`, `oneOf` (read as `anyOf`), `properties`,
`additionalProperties`, `required`, plus the non-standard `propertyOrdering`; a `$ref` may
have no sibling other than `$`-keywords). Each other keyword is handled by one rule:

- mapped to an equivalent: `oneOf` -> `anyOf` (the API reads it so anyway), `const` -> a
  one-value `enum`, `definitions` -> `$defs` (with its `$ref`s), a one-schema `allOf` merged
  into its parent, an old-style `items: [...]` -> `prefixItems`, and an `enum` that lists
  `null` -> `anyOf: [<the enum without null>, {"type": "null"}]` (Gemini refuses null in
  `enum`; the two say the same);
- dropped because it constrains nothing (annotations): `$schema`, `$comment`, `default`,
  `examples`, `example`, `deprecated`, `readOnly`, `writeOnly`, `strict`, and the
  non-`$` siblings of a `$ref` (`description`, `title`);
- anything else constrains values Gemini would not check (`pattern`, `minLength`, `not`,
  `uniqueItems`, `multipleOf`, `exclusiveMinimum`, `patternProperties`, `if`/`then`/`else`,
  a many-schema `allOf`...): for a strict schema (`strict: true` on the tool or the
  `json_schema` response format) sending it without them would widen the contract, so the
  candidate is `Unservable`; a non-strict schema is only guidance for the model, so the
  keyword is dropped with a note in the record.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import Unservable

_KEPT = frozenset(
    {
        "$id",
        "$defs",
        "$ref",
        "$anchor",
        "type",
        "format",
        "title",
        "description",
        "enum",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "anyOf",
        "properties",
        "additionalProperties",
        "required",
        "propertyOrdering",
    }
)
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$comment",
        "default",
        "examples",
        "example",
        "deprecated",
        "readOnly",
        "writeOnly",
        "strict",
    }
)
_MAX_DEPTH = 64


def to_gemini(schema: dict[str, Any], strict: bool, where: str, notes: list[str]) -> dict[str, Any]:
    """`schema` as Gemini's JSON Schema fields take it (see the module docstring).

    `where` names the schema in notes and reasons ("tool `get_weather`"); a dropped keyword
    appends one line to `notes`; a keyword a strict schema cannot lose raises `Unservable`.
    """
    converter = _Converter(strict, where)
    out = converter.node(schema, 0)
    if not isinstance(out, dict):  # a boolean root schema
        raise Unservable(f"Gemini needs an object JSON schema for {where}")
    for line in converter.dropped():
        if line not in notes:
            notes.append(line)
    return out


class _Converter:
    def __init__(self, strict: bool, where: str) -> None:
        self.strict = strict
        self.where = where
        self.unsupported: set[str] = set()

    def dropped(self) -> list[str]:
        if not self.unsupported:
            return []
        keys = ", ".join(f"`{k}`" for k in sorted(self.unsupported))
        return [f"dropped {keys} from the JSON schema of {self.where}: Gemini does not take them"]

    def node(self, node: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise Unservable(f"the JSON schema of {self.where} nests too deeply for Gemini")
        if not isinstance(node, dict):
            return node  # true / false schemas are JSON Schema too
        node = self._merge_all_of(node)
        if isinstance(node.get("$ref"), str):
            return self._ref(node, depth)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                target = "$defs" if key == "definitions" else key
                out[target] = {**out.get(target, {})} | {
                    name: self.node(sub, depth + 1) for name, sub in value.items()
                }
            elif key in ("anyOf", "oneOf") and isinstance(value, list):
                out["anyOf"] = [*out.get("anyOf", []), *(self.node(s, depth + 1) for s in value)]
            elif key == "items" and isinstance(value, list):
                out["prefixItems"] = [self.node(s, depth + 1) for s in value]
            elif key in ("items", "additionalProperties"):
                out[key] = self.node(value, depth + 1)
            elif key == "prefixItems" and isinstance(value, list):
                out[key] = [self.node(s, depth + 1) for s in value]
            elif key == "const":
                out["enum"] = [value]
            elif key in _KEPT:
                out[key] = value
            elif key not in _ANNOTATIONS:
                self._unsupported(key)
        return _split_null_enum(out)

    def _merge_all_of(self, node: dict[str, Any]) -> dict[str, Any]:
        all_of = node.get("allOf")
        if all_of is None:
            return node
        rest = {k: v for k, v in node.items() if k != "allOf"}
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            only = all_of[0]
            if not (set(only) & set(rest) - _ANNOTATIONS - {"description", "title"}):
                return {**only, **rest}
        self._unsupported("allOf")
        return rest

    def _ref(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        ref = str(node["$ref"]).replace("#/definitions/", "#/$defs/")
        out: dict[str, Any] = {"$ref": ref}
        for key, value in node.items():
            if key.startswith("$") and key not in ("$ref", "$schema", "$comment"):
                out[key] = self.node(value, depth + 1) if key == "$defs" else value
            elif key not in _ANNOTATIONS and key not in ("$ref", "description", "title"):
                self._unsupported(key)
        return out

    def _unsupported(self, key: str) -> None:
        if self.strict:
            raise Unservable(
                f"the strict JSON schema of {self.where} uses `{key}`, which Gemini does not "
                "enforce"
            )
        self.unsupported.add(key)


def _split_null_enum(node: dict[str, Any]) -> dict[str, Any]:
    enum = node.get("enum")
    if not isinstance(enum, list) or None not in enum:
        return node
    values = [v for v in enum if v is not None]
    if not values:
        return {**{k: v for k, v in node.items() if k != "enum"}, "type": "null"}
    base = {**node, "enum": values}
    kind = base.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        base["type"] = kinds[0] if len(kinds) == 1 else kinds
    elif kind == "null":
        del base["type"]
    return {"anyOf": [base, {"type": "null"}]}
