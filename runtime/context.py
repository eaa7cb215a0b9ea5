"""The per-request objects of the chat path: `RequestContext` (what one planned request is)
and `ResponseProgress` (what has been sent to the client so far).

They replace long parameter lists between the chat handler (runtime/chat.py) and the
fallback loop (runtime/fallback.py); both are built once per request, with slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.adapters.base import NativeRequest
from runtime.config import OrgConfig
from runtime.keys import KeyInfo
from runtime.records import Attempt, RequestRecord
from runtime.router import RoutePlan


class ResponseProgress:
    """What the client got so far: whether the response started, when its first byte left,
    and stream chunks buffered but not written yet."""

    __slots__ = ("fail", "first_byte", "pending", "started")

    def __init__(self) -> None:
        self.started = False
        self.first_byte: float | None = None
        self.pending: list[bytes] = []
        # The error event that ends a committed stream of another API than chat completions
        # (its frontend's `StreamEncoder.fail`); None: chat completions' own.
        self.fail: Callable[[str, str], bytes] | None = None


@dataclass(slots=True)
class RequestContext:
    """One authenticated, decoded and planned request on its way through the gateway."""

    request_id: str
    key: KeyInfo
    org: OrgConfig
    request: dict[str, Any]  # the client's chat-completions body (never mutated)
    stream: bool
    plan: RoutePlan
    record: RequestRecord  # filled in as the request goes; submitted once at the end
    progress: ResponseProgress
    attempts: list[Attempt]  # every upstream attempt, in order (shared with the error path)
    # Another API's request (runtime/frontends/): the client's own body, passed through to a
    # candidate whose adapter speaks that API natively; None for chat completions.
    native: NativeRequest | None = None
