"""Credentials out of provider text: what an upstream said never carries a secret onward.

A provider's error text (and a broken payload quoted in a message) can echo the credential the
gateway sent — a misconfigured proxy repeats the Authorization header, a 401 body quotes the
key. `scrub` replaces, with `[redacted]`:

- the value of every registered secret: the gateway registers each secret its config names
  at start (provider credentials, the BYOK encryption secrets, the record sink's URL) and
  each credential it sent on a call that failed (an org's own BYOK key);
- anything shaped like a key whatever its value: `sk-...` / `sk-ant-...` / `sk-proj-...`
  (OpenAI, Anthropic, masked forms such as `sk-abc***wxyz` too), `AIza...` (Google API keys),
  `ya29.` (Google OAuth tokens), the token after `Bearer ` / `Basic `, the value of a
  `key=` / `api_key=` / `access_token=` / `token=` query parameter and of an `x-api-key` /
  `x-goog-api-key` header quoted in text.

Only error paths pay: nothing here runs for a request that succeeds. Values shorter than
MIN_SECRET_LEN are not registered (replacing every "abc" in a message would say nothing and
hide the rest). The log filter (`ScrubFilter`) is installed at import on the gateway's loggers
that can carry upstream text, so a log line is scrubbed like a client's error body.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_SECRET_LEN = 8

# Key-shaped strings, whatever their value (no lookbehind hit inside a longer word).
_SHAPED = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-[A-Za-z0-9_\-*]{6,}"  # OpenAI sk-/sk-proj-, Anthropic sk-ant-, masked sk-ab***yz
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|ya29\.[0-9A-Za-z_\-.]{7,}[0-9A-Za-z_\-]"  # Google OAuth access tokens
    r")"
)
# A label followed by the secret it introduces: the label stays, the value goes.
_LABELLED = re.compile(
    r"(?i)("
    r"\b(?:bearer|basic)\s+"
    r"|[?&;](?:key|api[_-]?key|access_token|token)="
    r"|\bx-(?:goog-)?api-key[\"']?\s*[:=]\s*[\"']?"
    r")(?!\[redacted\])[^\s\"'&,;<>)\]}]+"
)

_lock = threading.Lock()
_known: frozenset[str] = frozenset()
_known_re: re.Pattern[str] | None = None


def register(values: Iterable[str | None]) -> None:
    """Add secret values that `scrub` must replace wherever they appear (empty and short ones
    are ignored). Cheap when nothing is new: called on every failed call with its credentials."""
    global _known, _known_re
    new = {v for v in values if v and len(v) >= MIN_SECRET_LEN} - _known
    if not new:
        return
    with _lock:
        known = _known | new
        # Longest first: a secret that contains another is replaced whole.
        pattern = "|".join(re.escape(v) for v in sorted(known, key=len, reverse=True))
        _known_re = re.compile(pattern)
        _known = known


def scrub(text: str) -> str:
    """`text` with every registered secret and every key-shaped string replaced."""
    if not text:
        return text
    known_re = _known_re
    if known_re is not None:
        text = known_re.sub(REDACTED, text)
    text = _SHAPED.sub(REDACTED, text)
    return _LABELLED.sub(lambda m: m.group(1) + REDACTED, text)


def secret_values(headers: dict[str, str]) -> list[str]:
    """The credential values in request headers the gateway sent (`Bearer` stripped)."""
    out = []
    for name, value in headers.items():
        if name.lower() in _CREDENTIAL_HEADERS and value:
            out.append(value.split()[-1])
    return out


_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-goog-api-key", "api-key", "proxy-authorization"}
)


class ScrubFilter(logging.Filter):
    """A log filter that scrubs the message, its arguments and a traceback's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite `record` in place (merged message, scrubbed); never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed format: keep the raw text, scrubbed
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


# The loggers that may carry upstream text (errors, tracebacks of a failed read).
GUARDED_LOGGERS = ("switchyard", "switchyard.chat", "switchyard.fallback", "switchyard.adapters")
_FILTER = ScrubFilter()
for _name in GUARDED_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)
