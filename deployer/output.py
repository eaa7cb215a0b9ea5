"""Progress a person can follow (stderr), and the one JSON document for machines (stdout)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from compiler.secret_values import redact


@dataclass
class Progress:
    """Prints each step as it starts and ends, with its time; keeps them for `--json`."""

    env: str
    json_mode: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    steps: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    secrets: tuple[str, ...] = ()  # values never to print, whatever a command echoed

    def clean(self, text: str) -> str:
        for value in self.secrets:
            if len(value) >= 4:
                text = text.replace(value, "<redacted>")
        return redact(text)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.clean(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def say(self, text: str) -> None:
        print(self.clean(text), file=self.stream, flush=True)

    @contextmanager
    def step(self, describe: str) -> Iterator[None]:
        t0 = time.monotonic()
        self.say(f"-> {describe}")
        try:
            yield
        except BaseException as exc:
            took = time.monotonic() - t0
            self.steps.append(
                {"step": self.clean(describe), "seconds": round(took, 3), "status": "failed"}
            )
            self.say(
                f"   failed after {took:.2f} s" + (f": {first_line(str(exc))}" if str(exc) else "")
            )
            raise
        took = time.monotonic() - t0
        self.steps.append({"step": self.clean(describe), "seconds": round(took, 3), "status": "ok"})
        self.say(f"   ok ({took:.2f} s)")

    def skipped(self, describe: str, why: str) -> None:
        self.steps.append({"step": self.clean(describe), "seconds": 0.0, "status": "skipped"})
        self.say(f"-- {describe}: skipped ({why})")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def finish(self, doc: dict[str, Any], line: str) -> None:
        """The final result: one line for people on stdout, or the JSON document."""
        doc.setdefault("steps", self.steps)
        doc.setdefault("seconds", round(self.elapsed(), 3))
        if self.json_mode:
            # Redact the strings before serialising: JSON escaping would hide a value's
            # characters (quotes, backslashes, non-ASCII) from a search in the output text.
            sys.stdout.write(json.dumps(self._scrub(doc), indent=2, sort_keys=True) + "\n")
        else:
            sys.stdout.write(self.clean(line) + "\n")
        sys.stdout.flush()


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )
