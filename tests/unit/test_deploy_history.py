"""history.jsonl read as typed entries (deployer/history.py): every Switchyard's lines are
read, a field of another type reads as absent, and the line as written is kept."""

from __future__ import annotations

import json

from deployer.history import HistoryEntry, parse_history


def test_lines_are_read_typed_and_kept_as_written() -> None:
    first = {
        "action": "deploy",
        "release": "r1",
        "previous": None,
        "result": "ok",
        "who": "alice@laptop",
        "when": "2026-01-01T00:00:00Z",
        "git_commit": "abc+dirty",
        "services": {"gateway": "create", "proxy": "unchanged"},
        "seconds": 12.5,
    }
    text = json.dumps(first) + "\nnot json\n[1, 2]\n" + json.dumps({"release": 7}) + "\n"
    entries = parse_history(text.encode())
    assert len(entries) == 2
    one, two = entries
    assert (one.action, one.release, one.previous, one.result, one.who, one.git_commit) == (
        "deploy",
        "r1",
        None,
        "ok",
        "alice@laptop",
        "abc+dirty",
    )
    assert one.changed == {"gateway": "create"}
    assert one.raw == first
    assert two.release is None and two.services == {} and two.raw == {"release": 7}


def test_an_absent_or_empty_history_has_no_entries() -> None:
    assert parse_history(None) == [] and parse_history(b"") == []
    assert HistoryEntry.from_json({}).action is None
