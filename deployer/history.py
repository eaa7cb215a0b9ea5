"""The environment's deploy history (`history.jsonl` on the host), read as typed entries.

Each line is one JSON object, written by `steps.RecordHistory` (or by the next deploy for one
that never finished). Lines from any Switchyard version are read: every field is optional,
a field of the wrong type reads as absent, and a line that is not a JSON object is skipped.
`HistoryEntry.raw` keeps the object as written, for `--history --json` and `--status --json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _text(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class HistoryEntry:
    """One deploy or rollback as the history recorded it."""

    action: str | None  # deploy, rollback
    release: str | None
    previous: str | None  # the release that served before
    result: str | None  # ok, unchanged, failed, interrupted
    who: str | None
    when: str | None
    git_commit: str | None
    services: Mapping[str, str]  # service -> action (unchanged, replace, ...)
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HistoryEntry:
        """The entry a history line's JSON object holds (fields of another type: absent)."""
        services = doc.get("services")
        return cls(
            action=_text(doc, "action"),
            release=_text(doc, "release"),
            previous=_text(doc, "previous"),
            result=_text(doc, "result"),
            who=_text(doc, "who"),
            when=_text(doc, "when"),
            git_commit=_text(doc, "git_commit"),
            services=(
                {str(k): str(v) for k, v in services.items()} if isinstance(services, dict) else {}
            ),
            raw=dict(doc),
        )

    @property
    def changed(self) -> dict[str, str]:
        """The services the entry changed: service -> action."""
        return {k: v for k, v in self.services.items() if v != "unchanged"}


def parse_history(text: bytes | str | None) -> list[HistoryEntry]:
    """Every readable entry of history.jsonl, oldest first."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    entries = []
    for line in (text or "").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            entries.append(HistoryEntry.from_json(doc))
    return entries
