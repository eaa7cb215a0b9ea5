"""Reporters: the same diagnostics as human text, JSON, or GitHub Actions annotations."""

from __future__ import annotations

import json
from collections.abc import Sequence

from compiler.diagnostics import Diagnostic, Severity


def _summary(name: str, diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = len(diagnostics) - errors
    if not diagnostics:
        return f"{name}: ok"
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return f"{name}: {', '.join(parts)}"


def text(name: str, diagnostics: Sequence[Diagnostic]) -> str:
    """`gateway.yaml:41:9: error[E030] routes.chat.candidates[2]: message` plus a hint line."""
    lines: list[str] = []
    for d in diagnostics:
        lines.append(
            f"{name}:{d.line}:{d.column}: {d.severity.value}[{d.code}] {d.dotted_path}: {d.message}"
        )
        if d.hint:
            lines.append(f"  hint: {d.hint}")
    lines.append(_summary(name, diagnostics))
    return "\n".join(lines) + "\n"


def as_json(name: str, diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    doc = {
        "file": name,
        "valid": errors == 0,
        "errors": errors,
        "warnings": len(diagnostics) - errors,
        "diagnostics": [
            {
                "code": d.code,
                "severity": d.severity.value,
                "path": d.dotted_path,
                "line": d.line,
                "column": d.column,
                "message": d.message,
                "hint": d.hint,
            }
            for d in diagnostics
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def github(name: str, diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands: one `::error file=…,line=…,col=…::` per diagnostic."""
    lines = []
    for d in diagnostics:
        level = "error" if d.severity is Severity.ERROR else "warning"
        title = _escape_property(f"{d.code} {d.dotted_path}")
        body = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        lines.append(
            f"::{level} "
            f"file={_escape_property(name)},line={d.line},col={d.column},title={title}::{_escape_data(body)}"
        )
    lines.append(_summary(name, diagnostics))
    return "\n".join(lines) + "\n"


REPORTERS = {"text": text, "json": as_json, "github": github}
