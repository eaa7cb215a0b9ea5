"""Validate a loaded document: shape (the pydantic models) then semantics (compiler.checks).

Shape errors are translated from pydantic's into our diagnostics, each with a stable code.
When some items are malformed, they are pruned and the rest is validated again, so the
semantic checks still run on everything that is well-formed — every problem in one run.
"""

from __future__ import annotations

import copy
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from compiler import checks
from compiler.diagnostics import COMMENT, Diagnostic, Path, did_you_mean, error, sort_key
from compiler.loader import Loaded, load
from compiler.models import NAME_RULES, SECRET_PATTERN, GatewayConfig
from compiler.resolve import ResolvedEnvironment, resolve_environments
from compiler.secret_values import (
    describe_secret,
    has_known_secret,
    looks_like_secret,
    redact,
    secret_hint,
)
from runtime.vocabulary import ADAPTER_NAMES, CAPABILITIES, FALLBACK_ERROR_CLASSES

_DICT_SECTIONS = ("providers", "routes", "orgs", "environments")
# Shape errors translated into diagnostics; a hostile file can have a million.
MAX_SHAPE_REPORTED = 200


@dataclass
class CheckResult:
    """Everything `check` found, with the validated config when shape validation passed."""

    loaded: Loaded
    config: GatewayConfig | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Items dropped because they were malformed: references to them are not re-reported.
    broken: set[tuple[str, str]] = field(default_factory=set)
    # Bad values set aside (default or stand-in) so their items could still be checked.
    repaired: set[Path] = field(default_factory=set)
    # With `config`: every environment resolved (sorted by name), as the checks saw it.
    resolved: dict[str, ResolvedEnvironment] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def check_bytes(raw: bytes | str, *, source_dir: PurePath | None = None) -> CheckResult:
    """Load and validate one config document. Pure: never touches disk."""
    loaded = load(raw)
    diagnostics = [*loaded.diagnostics, *checks.comment_secrets(loaded.text)]
    if loaded.data is None:
        return _finish(CheckResult(loaded, None, diagnostics))
    data: dict[str, Any] = loaded.data
    config, shape = _validate_shape(data)
    diagnostics += _present_shape([_translate(e, data) for e in shape[:MAX_SHAPE_REPORTED]], loaded)
    if len(shape) > MAX_SHAPE_REPORTED:
        diagnostics.append(
            error(
                "E005",
                (),
                f"too many problems: showing the first {MAX_SHAPE_REPORTED} of {len(shape):,} "
                "shape errors",
                "fix these and run check again",
            ).located(1, 1)
        )
    broken: set[tuple[str, str]] = set()
    repaired: set[Path] = set()
    # Pruning edits a copy, so the loaded data stays as written.
    pruned, errors = (copy.deepcopy(data) if shape else data), shape
    for _ in range(4):  # each round drops what the last one complained about
        if config is not None or not errors:
            break
        pruned, dropped = _prune(pruned, errors, repaired)
        broken |= dropped
        config, errors = _validate_shape(pruned)
    result = CheckResult(loaded, None, diagnostics, broken, repaired)
    if config is not None:
        resolved = resolve_environments(config, sorted(config.environments))
        diagnostics += checks.run_all(
            config,
            data,
            broken=broken,
            source_dir=source_dir,
            resolved=resolved,
            shape_failed=bool(broken),
            repaired=repaired,
        )
        if not shape:
            result.config = config
            result.resolved = resolved
    else:  # too broken for the semantic checks, but a leaked key is still worth saying
        diagnostics += checks.literal_secrets(data)
    return _finish(result)


def _present_shape(shape: list[Diagnostic], loaded: Loaded) -> list[Diagnostic]:
    """The shape errors as reported: one diagnostic per mistake, each where it is seen.

    A misspelt required key is one mistake, not two: the unknown key's "did you mean"
    already names the missing one. A missing key is shown on the key of the mapping that
    lacks it, which is the line a reader looks at.
    """
    suggested = {
        (*d.path[:-1], m.group(1))
        for d in shape
        if d.code == "E010" and d.hint and (m := _SUGGESTION.match(d.hint))
    }
    out: list[Diagnostic] = []
    for d in shape:
        if _repeats_loader(d, loaded):
            continue
        if d.code == "E012" and d.message.startswith("missing required key"):
            if d.path in suggested:
                continue
            d = d.located(*loaded.position(d.path[:-1], at_key=True))
        out.append(d)
    return out


_SUGGESTION = re.compile(r"did you mean '([^']*)'\?")


def _repeats_loader(d: Diagnostic, loaded: Loaded) -> bool:
    """A shape error that only restates a loader diagnostic: an alias or tagged value was
    not taken as written, and a mapping with a `<<: *alias` merge key lacks what it merged."""
    if d.path in loaded.opaque:
        return True
    return d.code == "E012" and (*d.path[:-1], "<<") in loaded.opaque


def _finish(result: CheckResult) -> CheckResult:
    located: list[Diagnostic] = []
    seen: set[tuple[str, Path, str, int, int]] = set()
    for d in result.diagnostics:
        # Comments have no path of their own: two are told apart by where they are.
        where = (d.line, d.column) if d.path == COMMENT else (0, 0)
        key = (d.code, d.path, d.message, *where)
        if key in seen:
            continue
        seen.add(key)
        d = d if d.line else d.located(*result.loaded.position(d.path, at_key=d.at_key))
        # A message quotes the offending value; it must never quote a secret.
        located.append(
            replace(d, message=redact(d.message), hint=redact(d.hint) if d.hint else d.hint)
        )
    result.diagnostics = sorted(located, key=sort_key)
    return result


def _validate_shape(data: dict[str, Any]) -> tuple[GatewayConfig | None, list[ErrorDetails]]:
    """The validated config, or pydantic's errors (translated only when reported: a
    hostile file can hold a million of them)."""
    try:
        return GatewayConfig.model_validate(data), []
    except ValidationError as exc:
        return None, exc.errors(include_url=False)


def _prune(
    data: dict[str, Any], shape: list[ErrorDetails], repaired: set[Path]
) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """Drop the malformed parts (in place) so the well-formed rest can still be checked.

    An unknown key is removed on its own; a bad value of a setting no check reads for
    anything else (see `_repair`) is set aside, its item kept and its path added to
    `repaired`; any other problem inside a named item (a provider, route, org or
    environment) drops that item, and references to it are not reported again.
    """
    pruned = data
    broken: set[tuple[str, str]] = set()
    placeholders: dict[str, Any] = {"version": 1, "project": "invalid-project"}
    for err in shape:
        path: Path = tuple(err["loc"])
        if not path or not isinstance(path[0], str):
            continue
        top = path[0]
        if err["type"] == "extra_forbidden" and len(path) > 1:
            parent = _get(pruned, path[:-1])
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
                continue
        if _repair(pruned, path, err["type"]):
            repaired.add(path)
            continue
        if top in _DICT_SECTIONS and len(path) >= 2 and isinstance(pruned.get(top), dict):
            name = str(path[1])
            if name in pruned[top]:
                del pruned[top][name]
            broken.add((top, name))
        elif top in placeholders:
            pruned[top] = placeholders[top]
        else:
            pruned.pop(top, None)
            # A section of ours that fell back to its default (`runtime`, `logging`, ...) may
            # have been what used a provider or secret: mark it, as a dropped item is.
            if top in _DICT_SECTIONS or top in GatewayConfig.model_fields:
                broken.add((top, "*"))
    return pruned, broken


# Settings whose bad value is set aside, keeping their item in the semantic checks: no check
# reads them, or their default can only make a check quieter (never a false error). Any key
# ending in `_s` (a duration) is one too. Others (`weight`, `requires`, `strategy`,
# `allowed_providers`, ...) feed checks whose default would report something the file does
# not say, so a bad value there still drops its item.
_INERT = {"max_attempts", "ssh_port", "ssh_user", "description", "replicas", "port"}
# Required settings among them get a stand-in; every check that reads one skips a repaired
# path. (section, key) at depth 3.
_STAND_INS: dict[tuple[str, str], Any] = {("environments", "port"): 65535}


def _repair(data: dict[str, Any], path: Path, kind: str) -> bool:
    """Set aside the bad value at `path` when that keeps its item checkable: an inert
    setting with a default falls back to it (a timeout, `max_attempts`), a required one in
    `_STAND_INS` gets its stand-in. Values inside lists, missing keys and the rules that
    compare fields (our own E-codes) are not repaired: their item is dropped as before."""
    if len(path) < 2 or not isinstance(path[-1], str) or kind == "missing":
        return False
    if path[-1] not in _INERT and not path[-1].endswith("_s"):
        return False
    if kind.startswith("E") and kind[1:].isdigit():
        return False
    parent = _get(data, path[:-1])
    if not isinstance(parent, dict) or path[-1] not in parent:
        return False
    if isinstance(parent[path[-1]], dict | list):
        return False
    info = _field_info(path)
    if info is None:
        return False
    if not info.is_required():
        del parent[path[-1]]
        return True
    stand_in = _STAND_INS.get((str(path[0]), path[-1])) if len(path) == 3 else None
    if stand_in is None:
        return False
    parent[path[-1]] = stand_in
    return True


def _get(data: Any, path: Path) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# ---------------------------------------------------------------------------------------
# pydantic error -> Diagnostic


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "empty",
}


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string '{shown}'"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a number)"
    return f"{value!r} (a {type(value).__name__})"


def _field_name(loc: Path) -> str:
    for part in reversed(loc):
        if isinstance(part, str) and not part.startswith("["):
            return part
    return "value"


def _translate(err: ErrorDetails, data: dict[str, Any]) -> Diagnostic:
    loc: Path = tuple(err["loc"])
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    name = _field_name(loc)

    if loc and loc[-1] == "[key]":
        path = loc[:-1]
        return _pattern_error(path, str(path[-1]), ctx.get("pattern", ""), at_key=True)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(loc[:-1])
        hint = did_you_mean(key, allowed)
        if hint is None and allowed:
            hint = "allowed keys here: " + ", ".join(sorted(allowed))
        elif hint is not None and _is_required_and_absent(loc, data):
            hint += " (it is required)"
        where = f" in {_parent_words(loc[:-1])}" if loc[:-1] else " at the top level"
        return error("E010", loc, f"unknown key '{key}'{where}", hint, at_key=True)
    if kind == "missing":
        info = _field_info(loc)
        hint = None
        if info is not None and info.examples:
            hint = f"add `{name}:`, e.g. {_yaml_inline(info.examples[0])}"
        return error("E012", loc, f"missing required key '{name}'", hint)
    if kind in _TYPE_WORDS:
        return error(
            "E011",
            loc,
            f"should be {_TYPE_WORDS[kind]}, not {_describe(value)}",
            _type_hint(kind, value, name),
        )
    if kind == "literal_error":
        return _literal_error(loc, value, ctx)
    if kind == "string_pattern_mismatch":
        return _pattern_error(loc, value, ctx.get("pattern", ""))
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return _range_error(loc, kind, value, ctx)
    if kind in ("too_short", "string_too_short"):
        what = (
            "must not be empty"
            if ctx.get("min_length", 1) <= 1
            else f"needs at least {ctx['min_length']} items"
        )
        return error("E014", loc, f"'{name}' {what}", _example_hint(loc))
    if kind in ("too_long", "string_too_long"):
        return error("E014", loc, f"'{name}' is too long (at most {ctx.get('max_length')})")
    if kind in ("finite_number",):
        return error("E014", loc, f"'{name}' must be a finite number, not {_describe(value)}")
    if kind.startswith("E") and kind[1:].isdigit():
        return error(kind, loc, str(err["msg"]), _custom_hint(kind, loc))
    return error("E011", loc, f"invalid value {_describe(value)}: {err['msg']}")


def _is_required_and_absent(loc: Path, data: dict[str, Any]) -> bool:
    """Is the key suggested for the unknown key at `loc` a required one that is missing?"""
    hint = did_you_mean(str(loc[-1]), _fields_at(loc[:-1]))
    match = _SUGGESTION.match(hint or "")
    if match is None:
        return False
    info = _field_info((*loc[:-1], match.group(1)))
    parent = _get(data, loc[:-1])
    return (
        info is not None
        and info.is_required()
        and isinstance(parent, dict)
        and match.group(1) not in parent
    )


def _yaml_inline(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value)


def _example_hint(loc: Path) -> str | None:
    info = _field_info(loc)
    if info is not None and info.examples:
        return f"for example: {_yaml_inline(info.examples[0])}"
    return None


def _type_hint(kind: str, value: Any, name: str) -> str | None:
    if kind in ("int_type", "float_type") and isinstance(value, str) and _is_number(value):
        return "remove the quotes around the number"
    if kind == "list_type" and isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"write a list, even of one item: `{name}: [{value}]`"
    if kind == "string_type" and isinstance(value, bool):
        return "YAML reads true/false as booleans: quote the value"
    if kind == "string_type" and isinstance(value, int | float):
        return "quote the value to make it a string"
    if kind == "bool_type" and isinstance(value, str):
        return "write true or false without quotes"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def _custom_hint(kind: str, loc: Path) -> str | None:
    if "secrets" in loc:
        return "write `env: VARIABLE_NAME` or `file: ~/path/outside/the/repo`"
    return None


def _parent_words(path: Path) -> str:
    from compiler.diagnostics import format_path

    return format_path(path)


def _literal_error(loc: Path, value: Any, ctx: dict[str, Any]) -> Diagnostic:
    expected = re.findall(r"'([^']*)'", ctx.get("expected", ""))
    allowed: Iterable[str] = expected
    if loc == ("version",):
        shown = repr(value) if isinstance(value, str) else _describe(value).split(" (")[0]
        return error(
            "E016", loc, f"unsupported config version {shown}", "this Switchyard reads `version: 1`"
        )
    words = {
        tuple(sorted(CAPABILITIES)): "capability",
        tuple(sorted(FALLBACK_ERROR_CLASSES)): "error class",
        tuple(sorted(ADAPTER_NAMES)): "adapter",
    }.get(tuple(sorted(expected)), _field_name(loc).rstrip("s") or "value")
    shown = value if isinstance(value, str) else _describe(value)
    hint = did_you_mean(str(value), allowed) if isinstance(value, str) else None
    if hint is None:
        hint = "expected one of: " + ", ".join(expected)
    return error("E015", loc, f"'{shown}' is not a known {words}", hint)


def _pattern_error(loc: Path, value: Any, pattern: str, *, at_key: bool = False) -> Diagnostic:
    name = _field_name(loc)
    names_a_secret = pattern == SECRET_PATTERN or (name == "env" and "secrets" in loc)
    if isinstance(value, str) and (
        has_known_secret(value) or (names_a_secret and looks_like_secret(value))
    ):
        return error("E040", loc, describe_secret(value), secret_hint(loc))
    rule = NAME_RULES.get(pattern)
    shown = value if isinstance(value, str) else _describe(value)
    if rule is not None:
        kind, explanation = rule
        return error(
            "E013", loc, f"'{shown}' is not a valid {kind}", f"use {explanation}", at_key=at_key
        )
    if name == "env" and "secrets" in loc:
        return error(
            "E013",
            loc,
            f"'{shown}' is not a valid environment variable name",
            "use letters, digits and '_', not starting with a digit, e.g. STAGING_OPENAI_API_KEY",
        )
    if name == "base_url":
        return error(
            "E013", loc, f"'{shown}' is not an http(s) URL", "e.g. https://api.openai.com/v1"
        )
    return error(
        "E013", loc, f"'{shown}' is not a valid {name}", f"it must match {pattern}", at_key=at_key
    )


def _range_error(loc: Path, kind: str, value: Any, ctx: dict[str, Any]) -> Diagnostic:
    name = _field_name(loc)
    if name == "port" and len(loc) == 3 and loc[0] == "environments":
        return error(
            "E052",
            loc,
            f"port {value} is outside 1024–65535",
            "pick an unprivileged port, e.g. 8200",
        )
    op, bound = {
        "greater_than_equal": ("at least", ctx.get("ge")),
        "greater_than": ("greater than", ctx.get("gt")),
        "less_than_equal": ("at most", ctx.get("le")),
        "less_than": ("less than", ctx.get("lt")),
    }[kind]
    return error("E014", loc, f"'{name}' must be {op} {bound}, not {value}", _example_hint(loc))


# -- walking the models along an error location -------------------------------------------


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp


def _type_at(loc: Path) -> Any:
    tp: Any = GatewayConfig
    parts = list(loc)
    while parts:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        part = parts.pop(0)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp = info.annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    return _unwrap(tp)


def _fields_at(loc: Path) -> list[str]:
    tp = _type_at(loc)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _field_info(loc: Path) -> Any:
    if not loc:
        return None
    parent = _type_at(loc[:-1])
    if isinstance(parent, type) and issubclass(parent, BaseModel):
        return parent.model_fields.get(str(loc[-1]))
    return None


__all__ = ["CheckResult", "check_bytes", "load"]
