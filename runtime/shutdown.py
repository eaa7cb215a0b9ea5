"""What happens to the chat requests in flight when the gateway stops (docs/runtime.md,
"Shutdown"): the `Drain` of one worker process.

SIGTERM (or SIGINT) reaches uvicorn, which stops accepting connections and waits for the
requests in flight; `serve` chains a hook onto uvicorn's signal handler so that the `Drain`
begins at the same moment:

- a request still receiving its body is answered 503 `gateway_shutting_down` at once (a
  client that trickles its body would otherwise hold the shutdown), and so is a request that
  arrives on a connection still open;
- every other request may finish until `drain_s` (runtime.config.ShutdownTimeline: the
  longest request plus a margin, so normally each one ends on its own);
- at `drain_s` whatever still runs is ended: a committed stream gets an error event (no
  [DONE]) and a record that says it was interrupted, anything else a 503;
- the lifespan's end waits until every request handed over its record, and only then closes
  the record writer (runtime/app.py `Gateway.stop`).

The chat handler registers each request's task here (one dict entry: the task and whether it
is still reading its body); the handler itself turns the cancellation into the answer and the
record (runtime/chat.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from types import FrameType
from typing import Any

SHUTTING_DOWN = "gateway_shutting_down"


class Drain:
    """The in-flight chat requests of one process, and the shutdown's progress."""

    __slots__ = ("_timer", "drain_s", "draining", "ending", "tasks")

    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        self.draining = False  # SIGTERM came: new and body-reading requests get a 503
        self.ending = False  # drain_s passed: every request still in flight is ended
        # Each in-flight request's task -> True while it still reads its body.
        self.tasks: dict[asyncio.Task[Any], bool] = {}
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        """Start draining (idempotent): answer the requests still reading their body now,
        end the others when `drain_s` has passed."""
        if self.draining:
            return
        self.draining = True
        for task, reading in list(self.tasks.items()):
            if reading:
                task.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.drain_s, self.end)

    def end(self) -> None:
        """End every request still in flight (their handlers answer and record it)."""
        self.draining = self.ending = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self.tasks):
            task.cancel()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight (each handed over its record), at most
        `timeout` seconds; True when none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.tasks and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.tasks

    async def close(self, settle_s: float = 3.0) -> bool:
        """At the lifespan's end: end whatever is still in flight (the server's own graceful
        wait ran already, or the app is stopped without one) and wait for the records."""
        if self.tasks:
            self.end()
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return await self.wait_idle(settle_s)

    def hook_signals(self) -> bool:
        """Begin draining when the server is told to stop: chain onto the SIGTERM and SIGINT
        handlers the ASGI server installed (uvicorn's), keeping them. Only in the main
        thread, and only onto a Python handler (never replaces a default action)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        loop = asyncio.get_running_loop()
        hooked = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous) or previous is signal.default_int_handler:
                continue

            def hook(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to drain
                    loop.call_soon_threadsafe(self.begin)
                previous(signum, frame)

            signal.signal(sig, hook)
            hooked = True
        return hooked
