"""runtime/sqlite.py: replicas sharing a data volume open a new database at the same moment."""

from __future__ import annotations

import threading
from pathlib import Path

from runtime import sqlite


def _open_together(path: Path, n: int) -> tuple[list[str], list[BaseException]]:
    """`n` threads open the same new database at once; (journal modes, errors)."""
    start = threading.Barrier(n)
    errors: list[BaseException] = []
    modes: list[str] = []

    def open_it() -> None:
        start.wait()
        try:
            conn = sqlite.connect(path, private=True)
            modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
            conn.close()
        except BaseException as exc:  # collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return modes, errors


def test_many_processes_opening_a_new_database_at_once_all_get_wal(tmp_path: Path) -> None:
    # Two gateway replicas started together both switch a brand-new file to WAL; SQLite
    # answers one of them "database is locked" at once (no busy wait: it would deadlock).
    # A deploy saw a replica exit with it. Every opener must succeed.
    for round_ in range(30):
        modes, errors = _open_together(tmp_path / f"r{round_}.db", 8)
        assert errors == [], errors
        assert modes == ["wal"] * 8
