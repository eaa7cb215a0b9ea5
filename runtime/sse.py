"""Incremental Server-Sent Events parser (the WHATWG rules that providers' streams use)."""

from __future__ import annotations


class SSEParser:
    """Feed bytes as they arrive; get back complete (event, data) pairs.

    Handles `\\n`, `\\r\\n` and `\\r` line ends, multi-line `data:` fields, comments (`:` lines,
    used as keep-alives) and events split across reads. `event` is "" when not named.
    """

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        buf = self._buf + chunk
        if b"\r" in buf:
            # A trailing \r may be half of \r\n: keep it for the next read.
            keep = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if not keep else (
                buf[:-1].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + b"\r"
            )
        out: list[tuple[str, str]] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if not line:
                if self._data or self._event:
                    out.append((self._event, "\n".join(self._data)))
                self._event = ""
                self._data = []
                continue
            if line[:1] == b":":
                continue
            name, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        self._buf = buf[start:]
        return out

    @property
    def pending(self) -> bool:
        """True when a partial event (or line) is buffered: the stream stopped mid-event."""
        return bool(self._buf.strip() or self._data)


def encode(data: bytes, event: str | None = None) -> bytes:
    """One SSE event with a single-line data payload."""
    if event:
        return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"
