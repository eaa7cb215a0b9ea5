"""Validate a decoded `POST /v1/embeddings` request once, up front, before routing.

Reference: the official `openai` SDK's `openai.types.embedding_create_params.
EmbeddingCreateParams` (openai-python 2.x) and OpenAI's API reference for its limits:
- `model` (required): an embeddings route, or an explicit provider/model;
- `input` (required): a string, a list of strings, a token array (list of integers) or a
  list of token arrays; never empty (an empty string, list or token array is a 400), at most
  MAX_INPUTS items (OpenAI's documented 2048);
- `dimensions`: a positive integer; `encoding_format`: "float" or "base64"; `user`: a string.

The checked request has `input` NORMALIZED to a list (of strings, or of token arrays), so
adapters read one shape; `encoding_format` and `user` stay as sent. Unknown fields pass
through (providers' own extensions), as in runtime/request_check.py.
"""

from __future__ import annotations

from typing import Any, NoReturn

from runtime.errors import GatewayError
from runtime.records import RequestRecord
from runtime.request_check import MAX_MODEL_CHARS, MAX_USER_CHARS, decode
from runtime.tokens import text_tokens

MAX_INPUTS = 2048  # OpenAI: "any array must be 2048 dimensions or less"
MAX_TOKEN_ID = 2**31 - 1
ENCODING_FORMATS = ("float", "base64")


def parse(body: bytes, rec: RequestRecord) -> dict[str, Any]:
    """The decoded, checked request of `body` with `input` as a list; fills the record's
    `requested_model` first. Raises GatewayError 400 naming the field at fault (`param`)."""
    request = decode(body, rec, streams=False)
    check(request)
    return request


def check(request: dict[str, Any]) -> None:
    """Check `request` and normalize it in place (`input` a list; null optional fields
    removed); GatewayError 400 on the first fault."""
    for key in ("dimensions", "encoding_format", "user"):
        if key in request and request[key] is None:
            del request[key]
    model = request.get("model")
    if type(model) is not str or not model:
        _bad("model", "`model` is required: the name of an embeddings route")
    if len(model) > MAX_MODEL_CHARS:
        _bad("model", f"`model` is longer than {MAX_MODEL_CHARS} characters")
    if "input" not in request:
        _bad("input", "`input` is required: a string, a list of strings or token arrays")
    request["input"] = _inputs(request["input"])
    dims = request.get("dimensions")
    if dims is not None:
        if type(dims) is float and dims.is_integer():
            dims = request["dimensions"] = int(dims)
        if type(dims) is not int or dims < 1:
            _bad("dimensions", "`dimensions` must be a positive integer")
    fmt = request.get("encoding_format")
    if fmt is not None and fmt not in ENCODING_FORMATS:
        _bad("encoding_format", "`encoding_format` must be 'float' or 'base64'")
    user = request.get("user")
    if user is not None and (type(user) is not str or len(user) > MAX_USER_CHARS):
        _bad("user", f"`user` must be a string of at most {MAX_USER_CHARS} characters")


def _inputs(value: Any) -> list[str] | list[list[int]]:
    """`input` as a list of strings or a list of token arrays."""
    if type(value) is str:
        if not value:
            _bad("input", "`input` must not be an empty string")
        return [value]
    if type(value) is not list:
        _bad("input", "`input` must be a string, a list of strings or a list of token arrays")
    if not value:
        _bad("input", "`input` must not be an empty list")
    if len(value) > MAX_INPUTS:
        _bad("input", f"`input` has {len(value)} items; at most {MAX_INPUTS} are allowed")
    first = value[0]
    if type(first) is int:  # one token array
        _tokens(value, "input")
        return [value]
    if type(first) is str:
        for i, item in enumerate(value):
            if type(item) is not str:
                _bad(f"input[{i}]", "every item of a list of strings must be a string")
            if not item:
                _bad(f"input[{i}]", "an input must not be an empty string")
        return value
    if type(first) is list:
        for i, item in enumerate(value):
            if type(item) is not list:
                _bad(f"input[{i}]", "every item of a list of token arrays must be an array")
            if not item:
                _bad(f"input[{i}]", "a token array must not be empty")
            _tokens(item, f"input[{i}]")
        return value
    _bad("input[0]", "`input` items must be strings, token ids (integers) or token arrays")


def _tokens(array: list[Any], where: str) -> None:
    for j, t in enumerate(array):
        if type(t) is not int or not 0 <= t <= MAX_TOKEN_ID:
            _bad(f"{where}[{j}]", "a token must be a non-negative integer")


def estimates(request: dict[str, Any]) -> list[int]:
    """Estimated tokens of each input of a checked request (a token array: its length)."""
    return [text_tokens(item) if type(item) is str else len(item) for item in request["input"]]


def _bad(param: str, message: str) -> NoReturn:
    raise GatewayError(400, "invalid_request", message, param=param)
