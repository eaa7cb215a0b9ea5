"""Who holds an environment's deploy lock (`lock.json` beside the lock file on the host).

A deploy writes its `LockHolder` once it holds the lock and removes the file when it
finishes; a file found by the next deploy is one that never finished (its connection was
lost, or it was killed), which that deploy records in the history as `interrupted`.
Files from any Switchyard version are read: every field is optional and a field of another
type reads as absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class LockHolder:
    """One deploy (or rollback) that holds, or held, the lock."""

    who: str | None  # the operator (user@machine)
    action: str  # deploy, rollback
    since: str | None  # UTC, ISO 8601
    pid: int | None  # of deploy.py on the operator's machine
    release: str | None = None
    git_commit: str | None = None
    config_hash: str | None = None

    def to_json(self) -> str:
        """The holder file's text (one JSON object, in field order)."""
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, raw: str | bytes | None) -> LockHolder | None:
        """The holder a file's text names; None if it holds no JSON object. Text that is not
        JSON at all (a file cut short) is an unknown deploy, so it is still recorded."""
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return cls(who="unknown", action="deploy", since="?", pid=None)
        if not isinstance(doc, Mapping):
            return None
        pid = doc.get("pid")
        return cls(
            who=_text(doc, "who"),
            action=_text(doc, "action") or "deploy",
            since=_text(doc, "since"),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            release=_text(doc, "release"),
            git_commit=_text(doc, "git_commit"),
            config_hash=_text(doc, "config_hash"),
        )


def describe_holder(raw: str | bytes | None) -> str:
    """`who (action since when, pid N)` for messages; "another deploy" when the file does not
    say all of that."""
    holder = LockHolder.parse(raw)
    if holder is None or None in (holder.who, holder.since, holder.pid):
        return "another deploy"
    return f"{holder.who} ({holder.action} since {holder.since}, pid {holder.pid})"


def _text(doc: Mapping[str, object], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None
