"""The `mock` adapter's embeddings: deterministic unit vectors, offline.

Each input's vector is a function of the input alone (its text, or its token ids): floats drawn
from a generator seeded by the SHA-256 of the input, scaled to length 1, so the same input
always gets the same vector and different inputs different ones. Its length is the request's
`dimensions`, else the model's configured `dimensions`, else DEFAULT_DIMENSIONS. Usage is the
gateway's own estimate (about four characters a token; a token array's length), reported as
the provider's (the mock has no other count).
"""

from __future__ import annotations

import hashlib
import math
import random

from runtime.adapters.base import Call, Embeddings, Usage
from runtime.tokens import text_tokens

DEFAULT_DIMENSIONS = 256


def vector(item: str | list[int], size: int) -> list[float]:
    """The unit vector of one input."""
    key = item if isinstance(item, str) else ",".join(map(str, item))
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(size)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embed(call: Call) -> Embeddings:
    """The vectors and usage of `call` (see the module docstring)."""
    inputs = call.request["input"]
    asked = call.request.get("dimensions")
    size = asked if isinstance(asked, int) else call.model.dimensions or DEFAULT_DIMENSIONS
    tokens = sum(text_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
    return Embeddings([vector(i, size) for i in inputs], Usage(tokens, 0), call.model.upstream)
