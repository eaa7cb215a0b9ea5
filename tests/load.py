"""Steady traffic as a team's users send it, to run while something is deployed.

`Load(port, key).start()` sends, open loop (a request starts on schedule whether or not the
earlier ones have answered):
- `rate` chat completions per second, half on a few keep-alive connections (a pooled client,
  as the SDKs use) and half each on a new connection;
- `streams` long streams at all times (each about `stream_s` seconds: the mock provider's
  `mock:pace` directive), so some are in flight across any restart.

`stop()` returns a `LoadReport`: every request with its start, end, outcome and latency, the
failures, the streams that were cut, the longest gap between two successful answers, and
latency percentiles. Nothing here retries: a failure is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import threading
import time
from dataclasses import dataclass, field

import aiohttp

ROUTE = "chat"


@dataclass(frozen=True)
class Outcome:
    kind: str  # keepalive, fresh, stream
    start: float  # monotonic seconds
    end: float
    ok: bool
    detail: str = ""  # why it failed

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class LoadReport:
    outcomes: list[Outcome]
    started: float
    stopped: float

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def streams_cut(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "stream" and not o.ok]

    def count(self, kind: str | None = None) -> int:
        return sum(1 for o in self.outcomes if kind is None or o.kind == kind)

    def longest_gap(self, start: float | None = None, end: float | None = None) -> float:
        """Longest time between two successful short answers (by end time) within [start, end]."""
        lo = self.started if start is None else start
        hi = self.stopped if end is None else end
        times = sorted(
            o.end for o in self.outcomes if o.ok and o.kind != "stream" and lo <= o.end <= hi
        )
        times = [lo, *times, hi]
        return max((b - a for a, b in itertools.pairwise(times)), default=hi - lo)

    def latencies(self, start: float | None = None, end: float | None = None) -> list[float]:
        lo = self.started if start is None else start
        hi = self.stopped if end is None else end
        return sorted(
            o.latency for o in self.outcomes if o.ok and o.kind != "stream" and lo <= o.start <= hi
        )

    def p(self, q: float, start: float | None = None, end: float | None = None) -> float:
        lat = self.latencies(start, end)
        if not lat:
            return float("nan")
        if len(lat) == 1:
            return lat[0]
        return statistics.quantiles(lat, n=100, method="inclusive")[min(98, max(0, int(q) - 1))]

    def summary(self) -> str:
        failed = self.failed()
        kinds = {k: self.count(k) for k in ("keepalive", "fresh", "stream")}
        head = (
            f"{self.count()} requests in {self.stopped - self.started:.1f} s ({kinds}); "
            f"{len(failed)} failed, "
            f"{len(self.streams_cut())} streams cut; "
            f"longest gap {self.longest_gap() * 1000:.0f} ms; "
            f"p50 {self.p(50) * 1000:.1f} ms, p99 {self.p(99) * 1000:.1f} ms"
        )
        shown = "".join(
            f"\n  {o.kind} at +{o.start - self.started:.2f} s: {o.detail}" for o in failed[:10]
        )
        return head + shown


@dataclass
class Load:
    port: int
    key: str
    rate: float = 40.0  # short requests per second, both kinds together
    streams: int = 3  # long streams in flight at all times
    stream_s: float = 8.0
    keepalive_connections: int = 4
    timeout_s: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _started: float = 0.0
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="sytest-load", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> LoadReport:
        """Stop starting requests, let those in flight finish, and report."""
        assert self._loop is not None and self._stop is not None and self._thread is not None
        stopped = time.monotonic()
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.timeout_s + self.stream_s + 30)
        return LoadReport(sorted(self.outcomes, key=lambda o: o.start), self._started, stopped)

    def mark(self) -> float:
        return time.monotonic()

    # -- the load ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        headers = {"authorization": f"Bearer {self.key}"}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, connect=10.0)
        # A pool of a few keep-alive connections (idle ones expire after 5 s, as the SDKs'
        # do), and clients that open a new connection for every request.
        pooled = aiohttp.ClientSession(
            headers=headers,
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=self.keepalive_connections, keepalive_timeout=5.0),
        )
        fresh = aiohttp.ClientSession(
            headers=headers, timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
        )
        streamer = aiohttp.ClientSession(
            headers=headers, timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
        )
        tasks: set[asyncio.Task[None]] = set()
        self._started = time.monotonic()
        self._ready.set()
        try:
            for i in range(self.streams):
                tasks.add(
                    asyncio.create_task(
                        self._stream_loop(streamer, i * self.stream_s / max(1, self.streams))
                    )
                )
            interval = 2.0 / self.rate
            n = 0
            while not self._stop.is_set():
                client, kind = (pooled, "keepalive") if n % 2 == 0 else (fresh, "fresh")
                task = asyncio.create_task(self._short(client, kind, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                next_at = self._started + n * interval / 2
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for c in (pooled, fresh, streamer):
                await c.close()

    async def _short(self, client: aiohttp.ClientSession, kind: str, n: int) -> None:
        t0 = time.monotonic()
        text = f"load {n}"
        body = {"model": ROUTE, "messages": [{"role": "user", "content": text}]}
        try:
            async with client.post(self.url, json=body) as r:
                raw = await r.read()
            ok = (
                r.status == 200
                and json.loads(raw)["choices"][0]["message"]["content"] == f"echo: {text}"
            )
            detail = "" if ok else f"HTTP {r.status}: {raw[:200]!r}"
        except Exception as exc:  # any failure of the client is the finding
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.outcomes.append(Outcome(kind, t0, time.monotonic(), ok, detail))

    async def _stream_loop(self, client: aiohttp.ClientSession, delay: float) -> None:
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
            return
        except TimeoutError:
            pass
        while not self._stop.is_set():
            if not await self._stream(client):
                await asyncio.sleep(0.5)  # a failing stream is counted; do not spin on it

    async def _stream(self, client: aiohttp.ClientSession) -> bool:
        words = max(2, int(self.stream_s / 0.4))
        pace_ms = int(self.stream_s * 1000 / words)
        text = f"mock:pace {pace_ms} " + " ".join(f"w{i}" for i in range(words))
        want = f"echo: {text}"
        body = {"model": ROUTE, "stream": True, "messages": [{"role": "user", "content": text}]}
        t0 = time.monotonic()
        got, done, detail = [], False, ""
        try:
            async with client.post(self.url, json=body) as r:
                if r.status != 200:
                    detail = f"HTTP {r.status}: {(await r.read())[:200]!r}"
                else:
                    async for raw in r.content:
                        line = raw.decode().rstrip("\r\n")
                        if not line.startswith("data: "):
                            continue
                        data = line[len("data: ") :]
                        if data == "[DONE]":
                            done = True
                            break
                        chunk = json.loads(data)
                        if "error" in chunk:
                            detail = f"error event: {chunk['error']}"
                            break
                        for choice in chunk.get("choices") or []:
                            got.append((choice.get("delta") or {}).get("content") or "")
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
        ok = done and "".join(got) == want and not detail
        if not ok and not detail:
            detail = (
                f"ended without [DONE] after {len(got)} chunks" if not done else "content differs"
            )
        self.outcomes.append(Outcome("stream", t0, time.monotonic(), ok, detail))
        return ok
