"""Opening the gateway's SQLite files (key store, BYOK store, request log) one way."""

from __future__ import annotations

import os
import sqlite3
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
    conn.execute("PRAGMA journal_mode = WAL")
    return conn
