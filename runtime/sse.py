"""Incremental Server-Sent Events parser (the WHATWG rules that providers' streams use)."""

from __future__ import annotations


class SSEParser:
    """Feed bytes as they arrive; get back complete (event, data) pairs.

    Handles `\\n`, `\\r\\n` and `\\r` line ends, multi-line `data:` fields, comments (`:` lines,
    used as keep-alives) and events split across reads. `event` is "" when not named.
    """

    __slots__ = ("_buf", "_data", "_event", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        if (
            not self._buf
            and not self._data
            and not self._event
            and not self._skip_lf
            and b"\r" not in chunk
        ):
            fast = _fast(chunk)
            if fast is not None:
                events, rest = fast
                self._buf = rest
                return events
        return self._feed(chunk)

    def _feed(self, chunk: bytes) -> list[tuple[str, str]]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the \n of a \r\n split across reads
        self._skip_lf = False
        buf = self._buf + chunk
        if b"\r" in buf:
            # A trailing \r ends its line now; a \n starting the next read belongs to it.
            self._skip_lf = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
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


def _fast(chunk: bytes) -> tuple[list[tuple[str, str]], bytes] | None:
    """The common shape — whole `data: ...` (or `event: ...` + `data: ...`) events separated
    by blank lines — split without walking line by line. None: use the general parser."""
    blocks = chunk.split(b"\n\n")
    rest = blocks.pop()
    if b"\n" in rest or rest.startswith(b":"):
        return None  # a partial multi-line event: the general parser keeps its state right
    out: list[tuple[str, str]] = []
    for block in blocks:
        if not block:
            continue
        event = ""
        if block.startswith(b"event: "):
            head, nl, block = block.partition(b"\n")
            if not nl:
                return None
            event = head[7:].decode("utf-8", "replace")
        if block.startswith(b"data: ") and b"\n" not in block:
            out.append((event, block[6:].decode("utf-8", "replace")))
        elif block.startswith(b":") and b"\n" not in block:
            continue  # a comment (keep-alive)
        else:
            return None
    return out, rest
