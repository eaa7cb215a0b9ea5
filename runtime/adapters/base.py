"""The one adapter interface, and the types that cross it.

The gateway speaks OpenAI's chat-completions format; every adapter maps that to its provider
and back. Inside the gateway a request is the client's JSON body (a dict, read-only for the
adapter); a non-streamed answer is a `Completion` whose `message` is an OpenAI assistant
message; a streamed answer is an async iterator of `Chunk`s whose `choices` are OpenAI
`chat.completion.chunk` choices. The gateway fills in `id`, `object`, `created` and `model`.

Contract of an adapter (`complete(call)` and `open_stream(call)`):
- `complete` returns a `Completion`; `open_stream` returns an `UpstreamStream` once the
  provider answered with a success status (an error status raises before anything is
  returned);
- both raise only `UpstreamError` (classified; see runtime/errors.py), never a library
  exception;
- a stream yields chunks; it raises `UpstreamError` when the provider sends an error event,
  the connection breaks, a payload is malformed, or the stream ends WITHOUT the provider's
  proper terminator (OpenAI `data: [DONE]`, Anthropic `message_stop`, Gemini a final candidate
  with `finishReason`); it ends normally only after the terminator;
- a request the candidate cannot serve at all (a parameter its provider has no way to take)
  raises `Unservable` (runtime/errors.py) before anything is sent: the gateway skips the
  candidate with that reason and tries the next one; a parameter it can map or drop is mapped
  or dropped, with a line in `call.notes`;
- a chunk's `content` is true when it carries something the client must see as output
  (text, a tool call, a refusal); a role-only or empty chunk is not content. It decides the
  commit point, so it must be exact until the first content chunk; after that an adapter may
  mark every chunk as content (the OpenAI adapter does, for chunks it relays undecoded);
- a chunk is a `Chunk` (choices the gateway encodes) or, from a provider that speaks OpenAI's
  format, a `RelayChunk` (the provider's own bytes, relayed verbatim: the measured cheaper
  path, bench/README.md);
- usage: `Completion.usage`, and `UpstreamStream.usage` once the provider reported it (may be
  None: the gateway then estimates and flags the record).

Network adapters reach the provider through an `HTTPTransport` (runtime/adapters/
transport_base.py), never a concrete transport: tests hand them the in-memory one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.adapters.transport_base import HTTPTransport
from runtime.config import ModelConfig, ProviderConfig
from runtime.errors import Unservable, UpstreamError


@dataclass(slots=True)
class Usage:
    """Token counts the provider reported, in OpenAI's sense whatever the provider said.

    `input_tokens` counts every prompt token, those read from and written to a cache included
    (OpenAI's `prompt_tokens`; Anthropic reports the three apart, the adapter adds them up);
    `output_tokens` every generated token, thinking included (OpenAI's `completion_tokens`;
    Gemini reports thoughts apart, the adapter adds them). The details are parts of those
    totals, so a price table can bill each part at its own rate (runtime/config.py `Price`).
    """

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0  # of input_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens: written to the cache (Anthropic 5-minute)
    cache_write_1h_tokens: int = 0  # of input_tokens: written at Anthropic's 1-hour rate
    reasoning_tokens: int = 0  # of output_tokens: thinking


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """The client's own body in an API some providers speak natively, for a passthrough:
    `api` is "responses" (OpenAI's Responses API, `POST /v1/responses`) or "messages"
    (Anthropic's Messages API, `POST /v1/messages`). An adapter whose `native_apis` holds
    `api` sends `body` as it is (only `model` replaced by the candidate's upstream id) to its
    provider's own endpoint; every other adapter takes the chat-completions translation in
    `Call.request` (runtime/frontends/)."""

    api: str
    body: dict[str, Any]  # as the client sent it (do not mutate)
    # The client's headers of that API the provider reads (Anthropic's `anthropic-beta`),
    # forwarded on a passthrough only; lower-case names.
    headers: tuple[tuple[str, str], ...] = ()


def native_body(
    call: Call, api: str, stream: bool, stream_only: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A passthrough's upstream body: the client's `api` body (not mutated) with the
    candidate's upstream model and the gateway's `stream`; `stream_only` fields are dropped
    from a non-streamed call."""
    native = call.native
    if native is None or native.api != api:
        raise UpstreamError("bad_request", f"not a {api} passthrough (a gateway bug)")
    body = dict(native.body)
    body["model"] = call.model.upstream
    if stream:
        body["stream"] = True
    else:
        for key in ("stream", *stream_only):
            body.pop(key, None)
    return body


@dataclass(slots=True)
class Call:
    """One upstream attempt."""

    # The client's chat-completions body, as sent (do not mutate); for the other endpoints
    # their request translated to chat completions (runtime/frontends/), or for embeddings
    # the checked embeddings body (runtime/embeddings.py).
    request: dict[str, Any]
    model: ModelConfig  # the candidate's model; model.upstream is the id to send
    credentials: dict[str, str]  # credential field -> value, e.g. {"api_key": "sk-..."}
    request_id: str
    # What the adapter changed because the provider cannot take it as sent ("dropped
    # `logit_bias`: Anthropic has no equivalent"); the attempt's record carries them.
    notes: list[str] = field(default_factory=list)
    # Set when the attempt is a passthrough in the provider's own API (`complete_native` /
    # `open_native_stream`); None for chat completions and every translated attempt.
    native: NativeRequest | None = None


@dataclass(slots=True)
class Completion:
    """A non-streamed answer."""

    message: dict[str, Any]  # OpenAI assistant message: role, content, tool_calls?, refusal?
    finish_reason: str | None
    usage: Usage | None
    model: str | None = None  # the model id the provider reported, if any
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. system_fingerprint
    # An OpenAI-format provider's own chat.completion body, less `id`/`object`/`created`/
    # `model` (the gateway sets those): the client gets its fields as they are — every choice
    # with its logprobs, `usage` with its details (present only when the provider's usage was
    # valid; else the gateway renders `usage`), `service_tier`, `system_fingerprint`, ...
    body: dict[str, Any] | None = None
    # A passthrough's answer (`complete_native`): the provider's own body in the native API's
    # format (a Responses `response` object, an Anthropic `message`), relayed to the client;
    # `message` is then {} and `usage` what the adapter read from it.
    native: dict[str, Any] | None = None


@dataclass(slots=True)
class Chunk:
    """One streamed chunk the gateway encodes for the client."""

    choices: list[dict[str, Any]]  # OpenAI chunk choices: [{index, delta, finish_reason}]
    content: bool
    usage: Usage | None = None  # set on the chunk that reported usage
    # True when it carries thinking (`delta.reasoning_content`): not content (it does not
    # commit the response) but upstream progress, so it restarts the first-byte timeout.
    reasoning: bool = False


@dataclass(slots=True)
class RelayChunk:
    """One streamed chunk of a provider that speaks OpenAI's format, relayed byte for byte.

    `data` is the SSE `data:` payload exactly as the provider sent it; the client gets
    `data: <data>` unchanged. `choices` are its decoded choices, or None when the adapter did
    not decode it (a plain chunk after the first content chunk: then `content` is true and it
    carries no usage). `usage` is set on the chunk that reported usage. `reasoning` as on
    `Chunk`: thinking an OpenAI-compatible server streams before its answer
    (`delta.reasoning_content`, as vLLM and DeepSeek send it) is progress, not content.
    """

    data: str
    content: bool
    choices: list[dict[str, Any]] | None = None
    usage: Usage | None = None
    reasoning: bool = False


@dataclass(slots=True)
class NativeEvent:
    """One server-sent event of a passthrough stream (`open_native_stream`), relayed as sent:
    `event` is the SSE event name (Responses and Anthropic streams name every event), `data`
    its payload exactly as the provider sent it, `doc` that payload decoded (the adapter reads
    each event for its usage and its kind). `content`, `reasoning` and `usage` as on `Chunk`;
    `chars` the output characters it carries (text and tool-call argument deltas), for the
    estimate of an abandoned or broken attempt. `choices` is always None (not OpenAI chunks)."""

    event: str
    data: str
    doc: dict[str, Any]
    content: bool
    usage: Usage | None = None
    reasoning: bool = False
    chars: int = 0
    choices: None = None


AnyChunk = Chunk | RelayChunk | NativeEvent

FlushHook = Callable[[], Awaitable[None]]


class UpstreamStream(Protocol):
    """A streamed answer: its chunks, then usage and model once the provider said them."""

    usage: Usage | None
    model: str | None

    def watch_idle(self, hook: FlushHook) -> bool:
        """Await `hook` right before the stream waits for the network, so the gateway writes
        what it buffered exactly when the provider has nothing more ready. False when the
        stream never waits on a network (then the caller flushes after each chunk)."""
        ...

    def __aiter__(self) -> AsyncIterator[AnyChunk]: ...

    async def aclose(self) -> None:
        """Release the stream (its connection); idempotent."""
        ...


@dataclass(slots=True)
class Embeddings:
    """An embeddings answer: one vector per input, in the order of the inputs."""

    vectors: list[list[float]]
    usage: Usage | None  # input_tokens (output_tokens 0); None when the provider said none
    model: str | None = None  # the model id the provider reported, if any


class Adapter(Protocol):
    """One provider's wire format. Constructed once per provider at start."""

    # The native APIs it can pass a client's body through to (NativeRequest.api values):
    # {"responses"} for OpenAI itself, {"messages"} for Anthropic, empty for the others.
    native_apis: frozenset[str]

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport) -> None: ...

    async def complete(self, call: Call) -> Completion:
        """The provider's non-streamed answer to `call`."""
        ...

    async def open_stream(self, call: Call) -> UpstreamStream:
        """The provider's streamed answer to `call`, once it answered with a success status."""
        ...

    async def complete_native(self, call: Call) -> Completion:
        """A passthrough (`call.native.api` in `native_apis`): the provider's own answer in
        `Completion.native`, with `usage` read from it. Errors as `complete`."""
        ...

    async def open_native_stream(self, call: Call) -> UpstreamStream:
        """A streamed passthrough: an `UpstreamStream` of `NativeEvent`s, ending normally only
        after the API's terminator (`response.completed`/`.incomplete`, `message_stop`)."""
        ...

    async def embed(self, call: Call) -> Embeddings:
        """Embeddings of `call.request` (runtime/embeddings.py: `input` a list of strings or of
        token arrays, `dimensions` optional), batched within the provider's limits. An adapter
        without embeddings raises `Unservable`."""
        ...


class AdapterDefaults:
    """What an adapter without a native API or embeddings inherits: no passthrough (the
    gateway translates), and embeddings refused as a skip reason."""

    native_apis: frozenset[str] = frozenset()

    async def complete_native(self, call: Call) -> Completion:
        raise Unservable("no native API for this request (a gateway bug)")

    async def open_native_stream(self, call: Call) -> UpstreamStream:
        raise Unservable("no native API for this request (a gateway bug)")

    async def embed(self, call: Call) -> Embeddings:
        raise Unservable("the provider has no embeddings API")
