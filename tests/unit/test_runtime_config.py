"""runtime.json as typed classes (runtime/config.py): an exact round trip, the compiler's
output built from them, and every malformed field refused by its dotted path."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from compiler.render import ImageInputs, render_environment, runtime_config
from compiler.validate import check_bytes
from runtime.config import SCHEMA_VERSION, ConfigError, RuntimeConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = sorted((ROOT / "tests" / "golden").glob("*/runtime.json"))
VALID = sorted((ROOT / "schema" / "examples" / "valid").glob("*.yaml"))
INPUTS = ImageInputs(runtime_digest="0" * 64, requirements="fastapi==0\n")


@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: p.parent.name)
def test_a_compiled_file_reads_and_writes_back_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    config = load_config(path)
    assert config.to_json() == text
    assert config.content_hash() == config.config_hash
    assert RuntimeConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("path", [ROOT / "gateway.yaml", *VALID], ids=lambda p: p.stem)
def test_the_compiler_writes_the_typed_config_it_builds(path: Path) -> None:
    checked = check_bytes(path.read_bytes())
    assert checked.config is not None
    for name, resolved in checked.resolved.items():
        built = runtime_config(checked.config, resolved)
        assert built.config_hash == ""
        written = render_environment(checked.config, name, INPUTS, resolved=resolved)
        text = written["runtime.json"]
        assert text == built.with_hash().to_json(), name
        assert RuntimeConfig.from_json(text) == built.with_hash(), name


def test_the_classes_are_frozen() -> None:
    config = load_config(GOLDENS[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    provider = next(iter(config.providers.values()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        provider.timeout_s = 1.0  # type: ignore[misc]


def test_unknown_fields_are_ignored_and_optional_ones_default() -> None:
    doc = json.loads(GOLDENS[0].read_text())
    doc["a_field_of_a_later_release"] = {"x": 1}
    del doc["cost_reference_request"]
    del doc["keys"]["environment"]
    config = RuntimeConfig.from_dict(doc)
    assert config.cost_reference_request.input_tokens == 1000
    assert config.to_dict()["keys"] == {
        "prefix": doc["keys"]["prefix"],
        "environment": doc["environment"],
    }


Edit = Callable[[dict[str, Any]], object]


def _set(*path: str, value: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


MALFORMED: list[tuple[str, Edit, str]] = [
    ("top level", lambda d: d.clear() or d.update(x=1), "schema_version None is not supported"),
    ("version 2", _set("schema_version", value=2), "schema_version 2 is not supported"),
    ("version text", _set("schema_version", value="1"), "schema_version '1' is not supported"),
    ("server", _set("server", value=[]), "server: expected an object"),
    ("port", _set("server", "port", value="80"), "server.port: expected a number"),
    ("prefix", _set("keys", "prefix", value=None), "keys.prefix: expected a string"),
    (
        "timeout",
        _set("providers", "openai", "timeout_s", value="soon"),
        "providers.openai.timeout_s: expected a number",
    ),
    (
        "base url",
        _set("providers", "openai", "base_url", value=3),
        "providers.openai.base_url: expected a string or null",
    ),
    (
        "credential",
        _set("providers", "openai", "credentials", "api_key", value=["X"]),
        "providers.openai.credentials.api_key: expected a string",
    ),
    (
        "capabilities",
        _set("providers", "openai", "models", "gpt-4o", "capabilities", value="tools"),
        "providers.openai.models.gpt-4o.capabilities: expected a list of strings",
    ),
    (
        "price",
        _set("providers", "openai", "models", "gpt-4o", "price", value={"input": 1}),
        "providers.openai.models.gpt-4o.price.output: expected a number",
    ),
    (
        "cached price",
        _set("providers", "openai", "models", "gpt-4o", "price", "cached_input", value="1"),
        "providers.openai.models.gpt-4o.price.cached_input: expected a number or null",
    ),
    (
        "price tiers",
        _set("providers", "openai", "models", "gpt-4o", "price", "tiers", value={}),
        "providers.openai.models.gpt-4o.price.tiers: expected a list",
    ),
    (
        "price tier",
        _set(
            "providers",
            "openai",
            "models",
            "gpt-4o",
            "price",
            "tiers",
            value=[{"above_input_tokens": 10, "input": 1}],
        ),
        "providers.openai.models.gpt-4o.price.tiers.0.output: expected a number",
    ),
    (
        "candidate",
        _set("routes", "chat", "candidates", value=[{"provider": "openai", "model": "nope"}]),
        "routes.chat.candidates.0: openai/nope is not under providers",
    ),
    (
        "candidate model",
        _set("routes", "chat", "candidates", value=[{"provider": "openai", "model": ["x"]}]),
        "routes.chat.candidates.0: openai/['x'] is not under providers",
    ),
    (
        "weight",
        _set(
            "routes",
            "chat",
            "candidates",
            value=[{"provider": "openai", "model": "gpt-4o", "weight": "1"}],
        ),
        "routes.chat.candidates.0.weight: expected a number or null",
    ),
    (
        "fallback",
        _set("routes", "chat", "fallback", "on", value=[1]),
        "routes.chat.fallback.on: expected a list of strings",
    ),
    (
        "dropped",
        _set("routes", "chat", "dropped", value=[{"ref": "a/b", "kind": "cost_cap"}]),
        "routes.chat.dropped.0.reason: expected a string",
    ),
    (
        "org flag",
        _set("orgs", "acme", "allow_explicit_models", value="no"),
        "orgs.acme.allow_explicit_models: expected true or false",
    ),
    (
        "byok",
        _set("orgs", "acme", "byok", value={"providers": ["openai"]}),
        "orgs.acme.byok.encryption_key: expected a string",
    ),
    (
        "budget",
        _set("limits", "per_org", "usd_per_day", value="10"),
        "limits.per_org.usd_per_day: expected a number or null",
    ),
    (
        "sink",
        _set("logging", "sink", value="kafka"),
        "logging.sink: expected one of sqlite, postgres, not 'kafka'",
    ),
    (
        "adapter",
        _set("providers", "openai", "adapter", value="openai2"),
        "providers.openai.adapter: expected one of openai, openai-compatible, anthropic, gemini, "
        "mock, not 'openai2'",
    ),
    (
        "strategy",
        _set("routes", "chat", "strategy", value=None),
        "routes.chat.strategy: expected one of priority, cheapest, weighted, not None",
    ),
    (
        "secret",
        _set("secrets", "OPENAI_API_KEY", "optional", value="yes"),
        "secrets.OPENAI_API_KEY.optional: expected true or false",
    ),
]


@pytest.mark.parametrize(
    ("edit", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_field_is_refused_by_name(edit: Edit, message: str) -> None:
    doc = json.loads((ROOT / "tests" / "golden" / "production" / "runtime.json").read_text())
    edit(doc)
    with pytest.raises(ConfigError) as exc:
        RuntimeConfig.from_json(json.dumps(doc), source="prod.json")
    assert str(exc.value).startswith("prod.json: ")
    assert message in str(exc.value)


def test_invalid_json_and_a_missing_file_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1,')
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON"):
        load_config(broken)
    with pytest.raises(ConfigError, match=r"absent\.json: cannot read the runtime config"):
        load_config(tmp_path / "absent.json")


def test_the_compiler_writes_the_version_the_gateway_reads() -> None:
    assert json.loads(GOLDENS[0].read_text())["schema_version"] == SCHEMA_VERSION


# ---------------------------------------------------------------------------------------
# every field of every class is written and read: change one field at a time anywhere in a
# compiled config; the file must change, and reading it back must give the changed object
# (or refuse it by name, when the new value is not allowed there). A field added to a class
# but forgotten in `to_dict` or in the reader fails here.

# Fields that are the key of their object in the file, not a field inside it.
_KEYS = {
    ("ProviderConfig", "id"),
    ("ModelConfig", "name"),
    ("RouteConfig", "name"),
    ("OrgConfig", "id"),
    ("SecretSpec", "name"),
}
_FOR_NONE: dict[object, object] = {
    int: 7,
    float: 0.5,
    str: "set",
    bool: True,
}


def _changed_leaf(value: object, hint: object) -> Iterator[tuple[str, object]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield from _mutations(value)
    elif isinstance(value, dict):
        for key, inner in value.items():
            for where, changed in _changed_leaf(inner, None):
                yield f"[{key}]{where}", {**value, key: changed}
    elif isinstance(value, tuple):
        for i, inner in enumerate(value):
            for where, changed in _changed_leaf(inner, None):
                yield f"[{i}]{where}", (*value[:i], changed, *value[i + 1 :])
    elif isinstance(value, frozenset):
        yield "", value | {"zz-added"}
    elif isinstance(value, bool):
        yield "", not value
    elif isinstance(value, int):
        yield "", value + 1
    elif isinstance(value, float):
        yield "", value + 0.25
    elif isinstance(value, str):
        words = [a for a in typing.get_args(hint) if isinstance(a, str) and a != value]
        yield "", words[0] if words else value + "x"
    elif value is None:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in options:
            if option in _FOR_NONE:
                yield "", _FOR_NONE[option]
                return
            if typing.get_origin(option) is frozenset:
                yield "", frozenset({"set"})
                return


def _mutations(obj: Any) -> Iterator[tuple[str, Any]]:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if (type(obj).__name__, f.name) in _KEYS:
            continue
        if f.name == "byok_providers" and obj.byok_encryption_key is None:
            continue  # documented: an org without an encryption key has no BYOK at all
        for where, changed in _changed_leaf(getattr(obj, f.name), hints[f.name]):
            yield f".{f.name}{where}", dataclasses.replace(obj, **{f.name: changed})


@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: p.parent.name)
def test_every_field_is_written_and_read(path: Path) -> None:
    config = load_config(path)
    text = config.to_json()
    checked = 0
    for where, changed in _mutations(config):
        changed_text = changed.to_json()
        assert changed_text != text, f"{where} is not written to runtime.json"
        try:
            back = RuntimeConfig.from_json(changed_text)
        except ConfigError:
            continue  # read, and refused by name: the reader knows the field
        assert back == changed, f"{where} does not survive the round trip"
        checked += 1
    assert checked > 40, checked  # the walk reached the nested classes


def test_max_upstream_body_mb_compiles_to_bytes_and_defaults_to_64_mib() -> None:
    doc = json.loads(GOLDENS[0].read_text())
    assert doc["server"]["max_upstream_body_bytes"] == 64 << 20
    del doc["server"]["max_upstream_body_bytes"]  # a runtime.json from before the field
    assert RuntimeConfig.from_json(json.dumps(doc)).max_upstream_body_bytes == 64 << 20
    text = (ROOT / "gateway.yaml").read_text()
    text = text.replace("runtime:\n", "runtime:\n  max_upstream_body_mb: 2\n", 1)
    checked = check_bytes(text.encode())
    assert checked.config is not None
    built = runtime_config(checked.config, checked.resolved["staging"])
    assert built.max_upstream_body_bytes == 2 << 20
