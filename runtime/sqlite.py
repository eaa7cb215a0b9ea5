"""Opening the gateway's SQLite files (key store, BYOK store, request log) one way."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path


def create_private(path: Path) -> None:
    """Create `path` as an empty 0600 file (in a 0700 directory) unless it exists.

    Done before SQLite opens it so the database is never readable by others, not even for a
    moment, and without touching the process-wide umask. SQLite gives its -wal/-shm files the
    database file's mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect(
    path: Path, busy_timeout_ms: int = 5000, *, private: bool = False
) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with a busy timeout, usable from any thread.

    `private`: create the file 0600 first (stores that hold key material)."""
    if private:
        create_private(path)
    conn = sqlite3.connect(
        path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    _wal(conn, busy_timeout_ms / 1000)
    return conn


def _wal(conn: sqlite3.Connection, patience_s: float) -> None:
    """Switch to WAL, retrying while another process holds the lock for the same switch.

    Replicas sharing a data volume start together and open a new database at the same moment;
    two connections that both hold a shared lock and both want the exclusive one for the
    journal-mode change make SQLite answer "database is locked" at once, without waiting in
    the busy handler (it would be a deadlock). The other switches, and then so do we."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
