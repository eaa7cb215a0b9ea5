"""`Services`: everything the request path uses, built once when the gateway starts.

runtime/app.py builds it in the app's lifespan (`Gateway.start`) and hands it to the chat
handler; tests build one directly from in-memory parts. No field is ever None, so nothing on
the request path checks whether the gateway has started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from runtime.config import RuntimeConfig
from runtime.keys import AuthError, KeyInfo, token_from_headers
from runtime.limits import Limiter
from runtime.metrics import Metrics
from runtime.records import RequestRecord
from runtime.router import Router


class KeyVerifier(Protocol):
    """Turns a client's token into its key (runtime.keys.Authenticator in a gateway)."""

    def verify(self, token: str | None) -> KeyInfo:
        """The key of `token`; raises runtime.keys.AuthError when it is not valid."""
        ...


class RecordSink(Protocol):
    """Takes the one record of each request (runtime.records.RecordWriter in a gateway)."""

    def submit(self, record: RequestRecord) -> None:
        """Queue `record`; must not block."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """The request path's dependencies; built once per process, never partially."""

    config: RuntimeConfig
    router: Router
    limits: Limiter
    records: RecordSink
    metrics: Metrics
    keys: KeyVerifier


def authenticate(
    keys: KeyVerifier, headers: Mapping[str, str], record: RequestRecord | None = None
) -> KeyInfo:
    """The key of a request from its `authorization` / `x-api-key` headers, or a 401 (a
    revoked or expired key's id and org still go into `record`)."""
    token = token_from_headers(headers.get("authorization"), headers.get("x-api-key"))
    try:
        return keys.verify(token or "")
    except AuthError as exc:
        if record is not None and exc.key is not None:
            record.key_id, record.org = exc.key.id, exc.key.org
        raise exc.gateway_error() from None
