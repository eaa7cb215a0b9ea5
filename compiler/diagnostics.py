"""Diagnostics: the result objects of validation, separate from their reporters.

A diagnostic is found by a pure check with a YAML *path* (a tuple of keys and indexes);
its line and column are filled in from the loader's position index at the end, so the
checks never deal with marks themselves.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

Path = tuple[str | int, ...]


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a config file."""

    code: str
    severity: Severity
    path: Path
    message: str
    hint: str | None = None
    line: int = 0  # 1-based; 0 when unknown
    column: int = 0  # 1-based; 0 when unknown
    # When True the position points at the key of `path` instead of its value.
    at_key: bool = field(default=False, compare=False)

    @property
    def dotted_path(self) -> str:
        return format_path(self.path)

    def located(self, line: int, column: int) -> Diagnostic:
        return replace(self, line=line, column=column)


def format_path(path: Path) -> str:
    """Render `('routes', 'chat', 'candidates', 2)` as `routes.chat.candidates[2]`."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            if out:
                out.append(".")
            out.append(part if _is_plain(part) else repr(part))
    return "".join(out) or "<root>"


# The path of a diagnostic about a comment: comments are in no mapping.
COMMENT: Path = ("<comment>",)


def _is_plain(key: str) -> bool:
    if key == COMMENT[0]:
        return True
    return bool(key) and all(c.isalnum() or c in "-_/" for c in key)


def error(
    code: str, path: Path, message: str, hint: str | None = None, *, at_key: bool = False
) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, path, message, hint, at_key=at_key)


def warning(
    code: str, path: Path, message: str, hint: str | None = None, *, at_key: bool = False
) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, path, message, hint, at_key=at_key)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for a misspelt name, or None when nothing is close."""
    options = sorted(set(choices))
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not match and len(word) >= 2:
        # Case-insensitive or prefix matches catch `GPT-4o` and `claude-sonnet`.
        low = word.lower()
        match = [o for o in options if o.lower() == low or o.lower().startswith(low)][:1]
    return f"did you mean '{match[0]}'?" if match else None


def sort_key(d: Diagnostic) -> tuple[int, int, str, str]:
    return (d.line or 10**9, d.column, d.code, d.message)


def has_errors(diagnostics: Sequence[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)
