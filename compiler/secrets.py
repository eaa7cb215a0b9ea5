"""Recognising secret VALUES, so a config that contains one is refused.

Two tiers: well-known key prefixes are flagged anywhere in the file; long high-entropy
strings are flagged only where a credential belongs (a place that should hold a NAME).
"""

from __future__ import annotations

import math
import re
from collections import Counter

_KNOWN = re.compile(
    r"(?:"
    r"sk-ant-[A-Za-z0-9_-]{16,}"  # Anthropic
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"  # OpenAI
    r"|AIza[0-9A-Za-z_-]{30,}"  # Google API keys (Gemini)
    r"|gsk_[A-Za-z0-9]{20,}"  # Groq
    r"|xai-[A-Za-z0-9]{20,}"  # xAI
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"  # URL with an embedded password
    r")"
)
_NAME_LIKE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def has_known_secret(value: str) -> bool:
    """True when `value` contains a well-known provider key format or a URL password."""
    return _KNOWN.search(value) is not None


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_like_secret(value: str) -> bool:
    """For credential positions: a known key format, or a long random-looking token."""
    if has_known_secret(value):
        return True
    if _NAME_LIKE.match(value):
        return False
    classes = sum(bool(re.search(p, value)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return len(value) >= 20 and " " not in value and classes >= 2 and entropy(value) >= 3.5
