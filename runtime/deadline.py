"""A deadline that cancels the current task — `asyncio.timeout` without its bookkeeping.

The hot path sets one or two deadlines per request; this costs one timer handle each.
Usage (nothing may await between the work ending and `cancel()`):

    deadline = Deadline(5.0)
    try:
        await work()
    except asyncio.CancelledError:
        if deadline.expired:        # our cancellation, not a shutdown's
            deadline.absorb()
            raise TimeoutError from None
        raise
    finally:
        deadline.cancel()

The timer only fires while the task is suspended at an await inside the `try`, so an expiry
always surfaces there as CancelledError.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Deadline:
    __slots__ = ("_handle", "_task", "expired")

    def __init__(self, delay: float) -> None:
        self.expired = False
        self._task: asyncio.Task[Any] | None = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    def absorb(self) -> None:
        """Undo our cancellation request (call after catching the CancelledError it caused)."""
        if self._task is not None:
            self._task.uncancel()

    def cancel(self) -> None:
        self._handle.cancel()
