"""schema/gateway.schema.json: generated from compiler/models.py, checked in, never hand-edited."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from compiler import models
from compiler.loader import load
from compiler.schema import SCHEMA_DIALECT, schema_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "schema" / "gateway.schema.json"
VALID_EXAMPLES = sorted((ROOT / "schema" / "examples" / "valid").glob("*.yaml"))


def checked_in() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def test_checked_in_schema_is_generated_from_the_models() -> None:
    assert SCHEMA_PATH.read_text() == schema_text(), (
        "schema/gateway.schema.json is out of date with compiler/models.py; "
        "regenerate it with `python -m compiler schema` (never edit it by hand)"
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = checked_in()
    assert schema["$schema"] == SCHEMA_DIALECT == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _instance(path: Path) -> Any:
    # Our loader reads YAML 1.2 (so `on:` stays a string), as `check` does.
    loaded = load(path.read_bytes())
    assert not loaded.diagnostics, [d.message for d in loaded.diagnostics]
    return loaded.data


@pytest.mark.parametrize("path", [ROOT / "gateway.yaml", *VALID_EXAMPLES], ids=lambda p: p.name)
def test_configs_validate_against_the_schema(path: Path) -> None:
    errors = sorted(
        Draft202012Validator(checked_in()).iter_errors(_instance(path)), key=lambda e: list(e.path)
    )
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda d: d.update(extra=1), "unknown top-level key"),
        (lambda d: d["environments"]["staging"].update(port=80), "port below 1024"),
        (lambda d: d["environments"]["staging"].pop("host"), "ssh target without host"),
        (
            lambda d: d["routes"]["chat"]["candidates"].append("not a ref"),
            "bad candidate reference",
        ),
        (
            lambda d: d["providers"]["openai"]["models"]["gpt-4o"]["capabilities"].append(
                "telepathy"
            ),
            "unknown capability",
        ),
        (
            lambda d: d["environments"]["dev"]["secrets"]["OPENAI_API_KEY"].update(file="~/k"),
            "secret with env AND file",
        ),
        (lambda d: d["routes"].update({"chat/fast": d["routes"]["chat"]}), "route name with '/'"),
    ],
)
def test_schema_rejects_what_the_models_reject(edit: Any, why: str) -> None:
    data = _instance(ROOT / "gateway.yaml")
    edit(data)
    assert list(Draft202012Validator(checked_in()).iter_errors(data)), why


# ---------------------------------------------------------------------------------------
# every field documented


def _models() -> list[type[BaseModel]]:
    return [
        v
        for v in vars(models).values()
        if isinstance(v, type)
        and issubclass(v, BaseModel)
        and v.__module__ == models.__name__
        and not v.__name__.startswith("_")
    ]


def _nested_models(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in typing.get_args(tp):
        yield from _nested_models(arg)


def _reachable(root: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for info in model.model_fields.values():
            todo.extend(_nested_models(info.annotation))
    return seen


def test_the_walk_covers_every_section() -> None:
    assert _reachable(models.GatewayConfig) == set(_models())
    assert len(_models()) >= 15


FIELDS: list[tuple[str, FieldInfo]] = [
    (f"{model.__name__}.{name}", info)
    for model in _models()
    for name, info in model.model_fields.items()
]


@pytest.mark.parametrize(("name", "info"), FIELDS, ids=[n for n, _ in FIELDS])
def test_every_field_has_a_description_and_a_valid_example(name: str, info: FieldInfo) -> None:
    assert info.description and info.description.strip(), f"{name} has no description"
    assert info.description[0].isupper() or info.description[0] in "`<", (
        f"{name}: start the description with a capital"
    )
    assert info.examples, f"{name} has no example"
    adapter: TypeAdapter[Any] = TypeAdapter(info.rebuild_annotation())
    for example in info.examples:
        adapter.validate_python(example, strict=True)


def test_every_model_has_a_docstring() -> None:
    for model in _models():
        assert model.__doc__ and model.__doc__.strip(), model.__name__


def test_descriptions_and_examples_reach_the_schema() -> None:
    schema = checked_in()
    for model in _models():
        node = schema if model is models.GatewayConfig else schema["$defs"][model.__name__]
        props: dict[str, Any] = node.get("properties") or next(
            (alt["properties"] for alt in node.get("anyOf", []) if "properties" in alt), {}
        )
        for name, info in model.model_fields.items():
            prop = props[name]
            # pydantic leaves out a description equal to that of the `$ref`ed section; an
            # editor shows the section's then, which is the same text.
            ref = prop.get("$ref", "").removeprefix("#/$defs/")
            description = prop.get("description") or (
                schema["$defs"][ref].get("description") if ref else None
            )
            assert description == info.description, f"{model.__name__}.{name}"
            assert prop["examples"] == info.examples, f"{model.__name__}.{name}"
