"""The one adapter interface, and the types that cross it.

The gateway speaks OpenAI's chat-completions format; every adapter maps that to its provider
and back. Inside the gateway a request is the client's JSON body (a dict, read-only for the
adapter); a non-streamed answer is a `Completion` whose `message` is an OpenAI assistant
message; a streamed answer is an async iterator of `Chunk`s whose `choices` are OpenAI
`chat.completion.chunk` choices. The gateway fills in `id`, `object`, `created` and `model`.

Contract of `Adapter.send(call)`:
- returns a `Completion` when `call.stream` is false, an `UpstreamStream` when true — in the
  streaming case only once the provider answered with a success status (an error status
  raises before anything is returned);
- raises only `UpstreamError` (classified; see runtime/errors.py), never a library exception;
- a stream yields `Chunk`s; it raises `UpstreamError` when the provider sends an error event,
  the connection breaks, a payload is malformed, or the stream ends WITHOUT the provider's
  proper terminator (OpenAI `data: [DONE]`, Anthropic `message_stop`, Gemini a final candidate
  with `finishReason`); it ends normally only after the terminator;
- `Chunk.content` is true when the chunk carries something the client must see as output
  (text, a tool call, a refusal); a role-only or empty chunk is not content. It decides the
  commit point, so it must be exact until the first content chunk; after that an adapter may
  mark every chunk as content (the OpenAI adapter does, for chunks it relays undecoded);
- usage: `Completion.usage`, and `UpstreamStream.usage` once the provider reported it (may be
  None: the gateway then estimates and flags the record).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.adapters.transport import Response, Transport
from runtime.config import ModelConfig, ProviderConfig


@dataclass(slots=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class Call:
    """One upstream attempt."""

    request: dict[str, Any]  # the client's chat-completions body, as sent (do not mutate)
    stream: bool
    model: ModelConfig  # the candidate's model; model.upstream is the id to send
    credentials: dict[str, str]  # credential field -> value, e.g. {"api_key": "sk-..."}
    request_id: str


@dataclass(slots=True)
class Completion:
    message: dict[str, Any]  # OpenAI assistant message: role, content, tool_calls?, refusal?
    finish_reason: str | None
    usage: Usage | None
    model: str | None = None  # the model id the provider reported, if any
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. system_fingerprint


@dataclass(slots=True)
class Chunk:
    choices: list[dict[str, Any]]  # OpenAI chunk choices: [{index, delta, finish_reason}]
    content: bool
    usage: Usage | None = None  # set on the chunk that reported usage
    # The provider's own OpenAI-format chunk JSON, when it speaks OpenAI's format: the gateway
    # relays it byte for byte instead of re-encoding `choices` (then `choices` may be a
    # placeholder: only `raw` is authoritative).
    raw: str | None = None


class UpstreamStream(Protocol):
    usage: Usage | None
    model: str | None

    @property
    def resp(self) -> Response | None:
        """The transport response a network stream reads from (None for `mock`): the gateway
        hooks its `before_wait` to write what it buffered right before the stream waits."""

    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


class Adapter(Protocol):
    """One provider's wire format. Constructed once per provider at start."""

    def __init__(self, provider: ProviderConfig, session: Transport | None) -> None: ...

    async def send(self, call: Call) -> Completion | UpstreamStream: ...
