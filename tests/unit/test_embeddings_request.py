"""The check of a `POST /v1/embeddings` body (runtime/embeddings_request.py), against the
shapes of the openai SDK's `EmbeddingCreateParams`: what passes (normalized), what is a 400
and which `param` it names."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runtime.embeddings_request import MAX_INPUTS, estimates, parse
from runtime.errors import GatewayError
from runtime.records import EMBEDDINGS_ENDPOINT, RequestRecord


def _rec() -> RequestRecord:
    return RequestRecord.begin("req_1", "test", "p", "c", EMBEDDINGS_ENDPOINT)


def _parse(body: dict[str, Any]) -> dict[str, Any]:
    return parse(orjson.dumps(body), _rec())


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("hello", ["hello"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),  # one token array
        ([[1, 2], [3]], [[1, 2], [3]]),  # token arrays
    ],
)
def test_input_forms_become_a_list(given: Any, normalized: list[Any]) -> None:
    assert _parse({"model": "emb", "input": given})["input"] == normalized


def test_options_pass_and_nulls_are_dropped() -> None:
    req = _parse(
        {
            "model": "emb",
            "input": "x",
            "dimensions": 256.0,
            "encoding_format": "base64",
            "user": "u1",
            "extra": 1,
        }
    )
    assert req == {
        "model": "emb",
        "input": ["x"],
        "dimensions": 256,
        "encoding_format": "base64",
        "user": "u1",
        "extra": 1,
    }
    assert _parse({"model": "emb", "input": "x", "dimensions": None}) == {
        "model": "emb",
        "input": ["x"],
    }


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": "x"}, "model", "`model` is required"),
        ({"model": "", "input": "x"}, "model", "`model` is required"),
        ({"model": "emb"}, "input", "`input` is required"),
        ({"model": "emb", "input": ""}, "input", "empty string"),
        ({"model": "emb", "input": []}, "input", "empty list"),
        ({"model": "emb", "input": 5}, "input", "must be a string"),
        ({"model": "emb", "input": ["a", ""]}, "input[1]", "empty string"),
        ({"model": "emb", "input": ["a", 1]}, "input[1]", "must be a string"),
        ({"model": "emb", "input": [[1], []]}, "input[1]", "must not be empty"),
        ({"model": "emb", "input": [[1], "a"]}, "input[1]", "must be an array"),
        ({"model": "emb", "input": [1, -2]}, "input[1]", "non-negative integer"),
        ({"model": "emb", "input": [[1, 2.5]]}, "input[0][1]", "non-negative integer"),
        ({"model": "emb", "input": [{"text": "a"}]}, "input[0]", "must be strings"),
        ({"model": "emb", "input": "x", "dimensions": 0}, "dimensions", "positive integer"),
        ({"model": "emb", "input": "x", "dimensions": "8"}, "dimensions", "positive integer"),
        ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format", "'float'"),
        ({"model": "emb", "input": "x", "user": 3}, "user", "`user` must be a string"),
    ],
)
def test_faults_are_400_naming_the_param(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(GatewayError) as err:
        _parse(body)
    assert (err.value.status, err.value.code, err.value.param) == (400, "invalid_request", param)
    assert words in err.value.message


def test_at_most_2048_inputs() -> None:
    assert len(_parse({"model": "emb", "input": ["a"] * MAX_INPUTS})["input"]) == 2048
    with pytest.raises(GatewayError) as err:
        _parse({"model": "emb", "input": ["a"] * (MAX_INPUTS + 1)})
    assert err.value.param == "input"
    assert "2049 items; at most 2048" in err.value.message


def test_not_json_or_not_an_object() -> None:
    for raw in (b"{", b"[1]"):
        with pytest.raises(GatewayError) as err:
            parse(raw, _rec())
        assert err.value.status == 400


def test_the_record_keeps_the_model_even_when_refused() -> None:
    rec = _rec()
    with pytest.raises(GatewayError):
        parse(orjson.dumps({"model": "emb", "input": ""}), rec)
    assert rec.requested_model == "emb"


def test_estimates_per_input() -> None:
    assert estimates({"input": ["abcdefgh", "a"]}) == [2, 1]
    assert estimates({"input": [[1, 2, 3], [4]]}) == [3, 1]
