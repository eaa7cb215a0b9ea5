"""The interface of a frontend: one API the gateway serves over the chat-completions pipeline.

A frontend turns the client's body into the chat-completions request the router plans and
translating adapters send (`parse`), and turns what a candidate answered back into the API's
own shape (`completion`, `encoder`), errors included (`error_body`). The request handler
(runtime/chat.py) does everything else exactly as for chat completions: authentication,
limits, the fallback loop and its commit rule, accounting, the one record per request.

A candidate that speaks the API natively (`NativeRequest.api` in its adapter's
`native_apis`: OpenAI for "responses", Anthropic for "messages") gets the client's own body
passed through; its answer arrives as `Completion.native` or as `NativeEvent`s, which the
frontend relays (their ids and fields as the provider sent them). Every other candidate gets
the translation, and its `Completion` / `Chunk` / `RelayChunk` answers are translated back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from runtime.adapters.base import AnyChunk, Completion, NativeRequest
from runtime.errors import GatewayError
from runtime.records import RequestRecord


@dataclass(slots=True)
class Parsed:
    """A checked request of a frontend's API."""

    # The request in chat-completions form: what the router plans (capabilities, token
    # estimates, output limit) and what translating adapters send. Never mutated.
    request: dict[str, Any]
    stream: bool
    # The client's own body, for candidates that speak this API natively.
    native: NativeRequest
    # Tools only a native candidate can run (the Responses API's built-in tools, by type):
    # every other candidate is skipped with that reason.
    builtin_tools: tuple[str, ...] = ()


class StreamEncoder(Protocol):
    """Writes one committed stream in the API's event format. Built after the commit, when
    the record knows the candidate (`rec.provider`, `rec.upstream_model`). Every method
    returns the bytes to send (possibly empty), whole SSE events only."""

    # Output characters seen so far (text, tool-call arguments, thinking), for the usage
    # estimate when the provider reports none.
    chars: int

    def open(self) -> bytes:
        """The events the stream starts with (Responses `response.created`, Anthropic
        `message_start`); b"" when the candidate streams natively (its own come as chunks)."""
        ...

    def chunk(self, chunk: AnyChunk) -> bytes:
        """One upstream chunk: a `NativeEvent` relayed as sent, or a `Chunk` / `RelayChunk`
        (a RelayChunk with `choices` None carries its choices undecoded in `data`) translated
        into this API's events."""
        ...

    def close(self, rec: RequestRecord) -> bytes:
        """The closing events once the upstream ended properly and usage was accounted
        (`rec.input_tokens`, `rec.output_tokens` and the details are set): the translated
        stream's final events with that usage; b"" for a native stream (its own terminator
        was relayed)."""
        ...

    def fail(self, code: str, message: str) -> bytes:
        """The error event that ends a committed stream the gateway cannot finish (the
        upstream broke, the request timed out, shutdown): the API's own error event, so the
        official SDK raises."""
        ...


class Frontend(Protocol):
    """One API served over the chat-completions pipeline."""

    endpoint: str  # the path it serves, e.g. "/v1/responses" (also the record's `endpoint`)
    api: str  # NativeRequest.api: "responses" or "messages"
    # Request headers of this API that a passthrough forwards to the provider (lower-case
    # names; e.g. Anthropic's `anthropic-beta`, which turns on beta fields of the body).
    forward_headers: frozenset[bytes]

    def parse(self, body: bytes, rec: RequestRecord) -> Parsed:
        """Decode and check the body; set `rec.requested_model` and `rec.stream`. Raises a 400
        `GatewayError` whose `param` is the field's path in THIS API (`input[2].content`)."""
        ...

    def completion(self, rec: RequestRecord, parsed: Parsed, result: Completion) -> bytes:
        """The non-streamed answer's JSON body: `result.native` relayed (a passthrough), or
        `result` translated, with usage from the record (accounted before this is called)."""
        ...

    def encoder(self, rec: RequestRecord, parsed: Parsed, native: bool) -> StreamEncoder:
        """The encoder of a committed stream; `native`: the candidate streams `NativeEvent`s."""
        ...

    def error_body(self, exc: GatewayError) -> bytes:
        """The JSON body of an error answer in this API's shape (status and headers are the
        handler's)."""
        ...
