"""Recognising secret VALUES, so a config that contains one is refused.

Two tiers: well-known key prefixes are flagged anywhere in the file; long high-entropy
strings are flagged only where a credential belongs (a place that should hold a NAME).
"""

from __future__ import annotations

import math
import re
from collections import Counter

# A key starts a token: at the start of the text or after a character that cannot continue an
# identifier. Letters, digits, `_`, `-`, `:`, `.` and `/` continue one, so prose
# (`helpdesk-integration`) and model ids (`ft:gpt-4o-2024-08-06:acme:desk-assistant`,
# `accounts/acme/models/sk-...`) are not keys, while `key=sk-...`, `"sk-...`, `Bearer sk-...`
# and `?api_key=sk-...` still are.
_START = r"(?<![A-Za-z0-9_\-:./])"

# (what it is, pattern). Order matters: the more specific prefix first. Every pattern runs in
# linear time: a fixed minimum length followed by a possessive run (`*+`, which never gives
# characters back), and no quantified group that can match the same text two ways.
_KINDS: tuple[tuple[str, str], ...] = (
    ("an Anthropic API key", _START + r"sk-ant-[A-Za-z0-9_-]{16}[A-Za-z0-9_-]*+"),
    (
        "an OpenAI API key",
        _START + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20}[A-Za-z0-9_-]*+",
    ),
    ("a Google API key", _START + r"AIza[0-9A-Za-z_-]{30}[0-9A-Za-z_-]*+"),
    ("a Groq API key", _START + r"gsk_[A-Za-z0-9]{20}[A-Za-z0-9]*+"),
    ("an xAI API key", _START + r"xai-[A-Za-z0-9]{20}[A-Za-z0-9]*+"),
    ("an AWS access key id", _START + r"AKIA[0-9A-Z]{16}"),
    ("a GitHub token", _START + r"gh[pousr]_[A-Za-z0-9]{30}[A-Za-z0-9]*+"),
    ("a private key", r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----"),
    # The user may be empty: Redis URLs carry only a password (`redis://:pw@host`). The scheme
    # starts a token, so a long run of letters is scanned once, not once per letter; the
    # classes exclude the character that ends them, so possessive runs lose no match.
    (
        "a URL with a password in it",
        r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://[^/\s:@]*+:[^/\s@]++@",
    ),
)
_KNOWN = [(kind, re.compile(pattern)) for kind, pattern in _KINDS]
_ANY_KNOWN = re.compile("|".join(f"(?:{pattern})" for _kind, pattern in _KINDS))
_NAME_LIKE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# A URL (`redis://host:6379/0`, `postgresql://...`): never a secret's NAME, and it may carry
# a password or a host name that has no place in a reviewed file.
_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")


def known_secret_kind(value: str) -> str | None:
    """What well-known secret `value` contains ("an OpenAI API key"), or None."""
    if _ANY_KNOWN.search(value) is None:  # one scan for the common case: no secret at all
        return None
    return next((kind for kind, pattern in _KNOWN if pattern.search(value)), None)


def redact(text: str) -> str:
    """`text` with every well-known secret in it replaced, so output never repeats one."""
    for _kind, pattern in _KNOWN:
        text = pattern.sub("<redacted>", text)
    return text


def has_known_secret(value: str) -> bool:
    """True when `value` contains a well-known provider key format or a URL password."""
    return known_secret_kind(value) is not None


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_like_secret(value: str) -> bool:
    """For credential positions: a known key format, or a long random-looking token."""
    if has_known_secret(value) or _URL.match(value):
        return True
    if _NAME_LIKE.match(value):
        return False
    classes = sum(bool(re.search(p, value)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return len(value) >= 20 and " " not in value and classes >= 2 and entropy(value) >= 3.5


def describe_secret(value: str) -> str:
    """The message for a secret value found in the config."""
    kind = known_secret_kind(value) or (
        "a URL" if _URL.match(value) else "a secret value (a long random token)"
    )
    return f"this looks like {kind} written into the config; the config may only name secrets"


def describe_comment_secret(comment: str) -> str | None:
    """The message for a well-known secret in a comment, or None when it holds none."""
    kind = known_secret_kind(comment)
    if kind is None:
        return None
    return (
        f"this comment holds what looks like {kind}; a key in a comment is in the file and "
        "its version history like any other"
    )


COMMENT_SECRET_HINT = (
    "remove it from the comment; then rotate the key: it is in your version history now"
)


# The example secret name a hint suggests for each store of `environments.<env>.state`.
_STORE_SECRET = {"redis": "REDIS_URL", "postgres": "DATABASE_URL"}


def secret_hint(path: tuple[str | int, ...]) -> str:
    """What to write instead of the secret value at `path`, and the reminder to rotate it."""
    rotate = "then rotate the key: it is in your version history now"
    if len(path) == 5 and path[0] == "environments" and path[2] == "secrets" and path[-1] == "env":
        return (
            f"write the name of the environment variable that holds the value, e.g. "
            f"{str(path[1]).upper().replace('-', '_')}_{path[3]}; {rotate}"
        )
    if path and path[-1] == "description":
        return f"remove it from the text; {rotate}"
    if len(path) == 4 and path[0] == "environments" and path[2] == "state":
        name = f"{str(path[1]).upper().replace('-', '_')}_{_STORE_SECRET.get(str(path[3]), 'URL')}"
        return (
            f"name a secret instead (e.g. {path[3]}: {name}) and give its source under "
            f"environments.{path[1]}.secrets; if the URL holds a password, rotate it: it is in "
            "your version history now"
        )
    return (
        "write the NAME of a secret (e.g. OPENAI_API_KEY) and give its source under "
        f"environments.<env>.secrets; {rotate}"
    )
