"""compiler.canonical's fast encoder is byte-identical to json.dumps(sort_keys, indent=2)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.canonical import _with_hash_and_text, canonical_json, sha256, with_hash

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text()
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def _reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@settings(max_examples=400, derandomize=True, deadline=None)
@given(_json)
def test_matches_json_dumps(value: Any) -> None:
    assert canonical_json(value) == _reference(value)


def test_edge_cases_match_json_dumps() -> None:
    cases: list[Any] = [
        {},
        [],
        "",
        {"a": []},
        {"a": {}},
        [[], {}],
        (1, 2),
        {"é": "ü\u2028\x00"},
        {"b": 1, "a": [1.5, -0.0, 1e300, float("inf"), float("-inf")]},
        {"nested": {"x": [None, True, False, {"y": "z"}]}},
    ]
    for value in cases:
        assert canonical_json(value) == _reference(value)


def test_unusual_input_falls_back_to_json() -> None:
    class Sub(dict[str, int]):
        pass

    assert canonical_json({"a": Sub(b=1)}) == _reference({"a": {"b": 1}})
    assert canonical_json({1: "int key"}) == _reference({1: "int key"})


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json, max_size=5))
def test_hash_and_text_in_one_pass_equal_the_two_pass_form(doc: dict[str, Any]) -> None:
    hashed, text = _with_hash_and_text(doc)
    assert hashed == with_hash(doc)
    assert text == canonical_json(with_hash(doc))
    body = {k: v for k, v in doc.items() if k != "config_hash"}
    assert hashed["config_hash"] == "sha256:" + sha256(canonical_json(body))
