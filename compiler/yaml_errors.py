"""libyaml's errors in words a newcomer can act on, positioned at the mistake.

libyaml reports where it gave up. For an unclosed bracket or quote that is often lines
below the real mistake, so those point at where the construct was opened instead.
"""

from __future__ import annotations

from typing import Any

import yaml

from compiler.diagnostics import Diagnostic, error


def _mark_pos(mark: Any) -> tuple[int, int]:
    return (int(mark.line) + 1, int(mark.column) + 1) if mark is not None else (1, 1)


def _char_at(text: str, mark: Any) -> str:
    if mark is None:
        return ""
    lines = text.splitlines()
    if not 0 <= mark.line < len(lines):
        return ""
    line = lines[mark.line]
    return line[mark.column] if 0 <= mark.column < len(line) else ""


_CLOSERS = {"flow sequence": ("list", "[", "]"), "flow mapping": ("mapping", "{", "}")}


def syntax_error(exc: yaml.MarkedYAMLError, text: str) -> Diagnostic:
    """An E001 diagnostic for a libyaml scanner or parser error."""
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    pmark, cmark = exc.problem_mark, exc.context_mark
    ppos, cpos = _mark_pos(pmark or cmark), _mark_pos(cmark or pmark)
    other_line = pmark is not None and cmark is not None and pmark.line != cmark.line
    message = f"{problem} {context}".strip()
    hint = "check the indentation and quoting near this line"
    pos = ppos
    closer = next((v for k, v in _CLOSERS.items() if context.endswith(k)), None)
    if _char_at(text, pmark) == "\t":
        message = "a tab character is used for indentation"
        hint = "YAML does not allow tabs for indentation; use spaces"
    elif closer is not None and other_line and problem.startswith("did not find expected"):
        what, opener, close = closer
        pos = cpos
        message = f"the {what} opened with '{opener}' here is not closed before line {ppos[0]}"
        hint = f"add the missing '{close}', or a ',' between items"
    elif problem.startswith("found character that cannot start any token"):
        message = f"'{_char_at(text, pmark)}' cannot start a value"
        hint = "quote the value: YAML reserves this character at the start of a plain value"
    elif problem.startswith("mapping values are not allowed"):
        message = "unexpected ':' in a value"
        hint = "quote a value that contains ': ', or fix the indentation of this line"
    elif problem.startswith("could not find expected ':'"):
        pos = cpos
        message = "this line is neither a `key: value` pair nor part of the value above"
        hint = "add the missing ':' after the key, or quote a value that spans lines"
    elif problem.startswith("did not find expected key") and other_line:
        message = f"this line does not line up with the mapping that starts on line {cpos[0]}"
        hint = (
            "indent keys of one mapping by exactly the same number of spaces; quote values that "
            "contain quotes"
        )
    elif problem.startswith("did not find expected '-' indicator"):
        message = f"this line does not line up with the list that starts on line {cpos[0]}"
        hint = "start every item of a list with '- ' at the same indentation"
    elif problem.startswith("found unexpected end of stream") and "quoted scalar" in context:
        pos = cpos
        message = "this quoted string is never closed"
        hint = "add the closing quote"
    return error("E001", (), f"YAML syntax error: {message}", hint).located(*pos)


def reader_error(exc: yaml.reader.ReaderError, text: str) -> Diagnostic:
    """An E001 diagnostic for a character YAML does not allow (a control character)."""
    # libyaml counts the position in bytes of the UTF-8 text.
    before = text.encode("utf-8")[: exc.position].decode("utf-8", errors="ignore")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return error(
        "E001",
        (),
        f"the file contains a control character (U+{char:04X}), which YAML does not allow",
        "remove it; if it must be in a value, write it as an escape inside double quotes",
    ).located(line, column)
