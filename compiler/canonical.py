"""Canonical JSON and content hashes: the one serialisation every hash and machine-read
artifact uses (sorted keys, two-space indent, trailing newline).

`json.dumps` with `indent` falls back to the pure-Python encoder; the encoder here gives
byte-identical output in about half the time and defers to `json.dumps` for anything
unusual. tests/unit/test_build.py checks it against `json.dumps`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any


def sha256(text: str | bytes) -> str:
    """Hex sha256 of text (UTF-8) or bytes."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> str:
    """The one JSON form every hash and machine-read artifact uses: sorted keys, 2-space indent.

    Byte for byte `json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\\n"`,
    in about half the time: the standard library uses its C encoder only without `indent`.
    """
    out: list[str] = []
    try:
        _encode(value, "\n", out)
    except (_NotPlainJson, TypeError, RecursionError):
        # Anything unusual (non-string keys, other types, cycles): let json decide.
        return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    out.append("\n")
    return "".join(out)


class _NotPlainJson(Exception):
    pass


_encode_str: Callable[[str], str] = json.encoder.encode_basestring  # the C version when available
_INF = float("inf")


def _encode_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == _INF:
        return "Infinity"
    if value == -_INF:
        return "-Infinity"
    return float.__repr__(value)


def _encode_scalar(value: Any) -> str:
    if isinstance(value, str):
        return _encode_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _encode_float(value)
    raise _NotPlainJson


def _encode(value: Any, newline: str, out: list[str]) -> None:
    """Append the indented JSON of `value`; `newline` is "\\n" plus the current indentation."""
    kind = type(value)
    if kind is dict:
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        sep = "{" + inner
        for key in sorted(value):
            if type(key) is not str:
                raise _NotPlainJson
            item = value[key]
            t = type(item)
            if t is str:
                out.append(f"{sep}{_encode_str(key)}: {_encode_str(item)}")
            elif t is dict or t is list or t is tuple:
                out.append(f"{sep}{_encode_str(key)}: ")
                _encode(item, inner, out)
            elif item is None:
                out.append(f"{sep}{_encode_str(key)}: null")
            elif t is int:
                out.append(f"{sep}{_encode_str(key)}: {int.__repr__(item)}")
            else:
                out.append(f"{sep}{_encode_str(key)}: ")
                _encode(item, inner, out)
            sep = "," + inner
        out.append(newline + "}")
    elif kind is list or kind is tuple:
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        sep = "[" + inner
        for item in value:
            t = type(item)
            if t is str:
                out.append(sep + _encode_str(item))
            else:
                out.append(sep)
                _encode(item, inner, out)
            sep = "," + inner
        out.append(newline + "]")
    elif isinstance(value, dict | list | tuple):
        raise _NotPlainJson  # subclasses: rare, and json has its own rules for them
    else:
        out.append(_encode_scalar(value))


def with_hash(doc: dict[str, Any]) -> dict[str, Any]:
    """Add `config_hash`: sha256 of the canonical document without that field."""
    body = {k: v for k, v in doc.items() if k != "config_hash"}
    return {**body, "config_hash": "sha256:" + sha256(canonical_json(body))}


def _with_hash_and_text(doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`with_hash(doc)` and its `canonical_json`, serialising the document only once."""
    body = {k: v for k, v in doc.items() if k != "config_hash"}
    members: dict[str, str] = {}
    try:
        for key in sorted(body):
            if type(key) is not str:
                raise _NotPlainJson
            out = [f"\n  {_encode_str(key)}: "]
            _encode(body[key], "\n  ", out)
            members[key] = "".join(out)
    except (_NotPlainJson, TypeError, RecursionError):
        hashed = with_hash(doc)
        return hashed, canonical_json(hashed)
    # The canonical form of a non-empty mapping: "{", its sorted members (each on its own
    # indented line) joined by ",", then "\n}".
    body_text = "{" + ",".join(members.values()) + "\n}\n" if members else "{}\n"
    config_hash = "sha256:" + sha256(body_text)
    members["config_hash"] = f"\n  {_encode_str('config_hash')}: {_encode_str(config_hash)}"
    return {**body, "config_hash": config_hash}, "{" + ",".join(
        members[k] for k in sorted(members)
    ) + "\n}\n"
