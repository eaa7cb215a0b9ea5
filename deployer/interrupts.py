"""Ctrl-C and SIGTERM while a release is being brought live: noted at once, acted on at the
next safe point.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside paramiko that
can be halfway through writing an SSH packet or holding one of its locks, and the connection
is then unusable: every later command (the clean-up that must remove the new gateways and put
the proxy's config back, the history entry) waits on a channel that never opens. Measured: a
SIGINT during the upload left the deploy stuck for minutes with nothing cleaned up.

So while `deferred()` is active, the signal only records itself, and `check()` raises
KeyboardInterrupt from our own code: between steps, and in every wait loop (an SSH command's
output, the readiness and drain polls), so an interrupt still takes effect within about
50 ms, and the SSH channel it leaves is closed cleanly.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block, SIGINT and SIGTERM raise KeyboardInterrupt only at `check()`."""
    old = {sig: signal.signal(sig, _note) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        pending = bool(_pending)
        _pending.clear()
        if pending:  # arrived after the last check: not lost
            raise KeyboardInterrupt


def check() -> None:
    """Raise KeyboardInterrupt if a signal arrived since the last check (a no-op otherwise)."""
    if _pending:
        _pending.clear()
        raise KeyboardInterrupt
