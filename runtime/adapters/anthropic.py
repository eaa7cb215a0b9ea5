"""Anthropic's Messages API (POST /v1/messages) behind the gateway's chat-completions format.

Request mapping: system/developer messages become the top-level `system`; user, assistant and
tool messages become content-block messages (consecutive same-role messages merged, tool
results as `tool_result` blocks of a user message); OpenAI function tools and tool_choice map
to Anthropic's; `max_tokens` is required upstream, so it defaults to the model's
`max_output_tokens` (else 4096). Anthropic's temperature range is 0..1, so a larger OpenAI
temperature is clamped to 1.

`response_format` is best effort: Anthropic has no JSON mode, so `json_object` and
`json_schema` add a system instruction asking for JSON (with the schema); the reply is not
validated.

A stream is complete only after `message_stop`; an `error` event raises the mapped class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from runtime.adapters import http
from runtime.adapters.base import Call, Chunk, Completion, FlushHook, Usage
from runtime.adapters.transport_base import Headers, HTTPResponse, HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import ErrorClass, UpstreamError
from runtime.vocabulary import DEFAULT_BASE_URLS

DEFAULT_BASE_URL = DEFAULT_BASE_URLS["anthropic"]
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_TYPE_CLASS: dict[str, ErrorClass] = {
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "api_error": "server_error",
    "timeout_error": "timeout",
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "not_found_error": "not_found",
    "request_too_large": "bad_request",
    "invalid_request_error": "bad_request",
}

_CONTEXT_PHRASES = ("prompt is too long", "exceed context limit", "exceeds the context window")


class AnthropicAdapter:
    """Anthropic's Messages API behind the chat-completions format."""

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport) -> None:
        self.provider = provider
        self.transport = transport
        self.url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        self.timeouts = http.Timeouts.of(provider)

    async def complete(self, call: Call) -> Completion:
        """The non-streamed answer."""
        return parse_completion(await http.read_json(await self._post(call, False)))

    async def open_stream(self, call: Call) -> AnthropicStream:
        """The streamed answer, as OpenAI chunks."""
        return AnthropicStream(await self._post(call, True))

    async def _post(self, call: Call, stream: bool) -> HTTPResponse:
        try:
            body = build_request(call, stream)
        except (AttributeError, TypeError, ValueError) as exc:  # a field of an unexpected shape
            raise _bad(f"request cannot be mapped to Anthropic: {exc}") from None
        headers = {
            "content-type": "application/json",
            "x-api-key": call.credentials.get("api_key", ""),
            "anthropic-version": API_VERSION,
        }
        return await http.post(
            self.transport,
            self.url,
            headers,
            orjson.dumps(body),
            self.timeouts.pick(stream),
            map_error,
        )


# --- request -------------------------------------------------------------------------------


def build_request(call: Call, stream: bool = False) -> dict[str, Any]:
    """The Messages API body for a chat-completions request (raises bad_request if unmappable)."""
    req = call.request
    if int(req.get("n") or 1) > 1:
        raise _bad("n > 1 is not supported by Anthropic")
    system, messages = map_messages(req.get("messages") or [])
    max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
    body: dict[str, Any] = {
        "model": call.model.upstream,
        "max_tokens": int(max_tokens or call.model.max_output_tokens or DEFAULT_MAX_TOKENS),
        "messages": messages,
    }
    instruction = _format_instruction(req.get("response_format"))
    if instruction:
        system.append(instruction)
    if system:
        body["system"] = "\n\n".join(system)
    if req.get("temperature") is not None:
        body["temperature"] = min(float(req["temperature"]), 1.0)
    if req.get("top_p") is not None:
        body["top_p"] = req["top_p"]
    stop = req.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = [_tool(t) for t in req.get("tools") or () if t.get("type") == "function"]
    if tools:
        body["tools"] = tools
        choice = _tool_choice(req.get("tool_choice"), req.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    if req.get("user"):
        body["metadata"] = {"user_id": str(req["user"])}
    if stream:
        body["stream"] = True
    return body


def map_messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages) of OpenAI chat messages."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks(msg)
            role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(msg)]
            role = "user"
        else:
            raise _bad(f"message role {role!r} is not supported by Anthropic")
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": part.get("text", "")}
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            block = {"type": "image", "source": _source(url)}
        elif kind == "file":
            data = (part.get("file") or {}).get("file_data", "")
            block = {"type": "document", "source": _source(data)}
        else:
            raise _bad(f"content part {kind!r} is not supported by Anthropic")
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise _bad("data: URLs must be base64-encoded")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise _bad("image and file parts need a data: or http(s) URL")


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text_of(msg.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _bad(f"tool call {tc.get('id')!r} arguments are not valid JSON") from None
        if not isinstance(args, dict):
            raise _bad(f"tool call {tc.get('id')!r} arguments must be a JSON object")
        blocks.append(
            {"type": "tool_use", "id": tc.get("id", ""), "name": fn.get("name", ""), "input": args}
        )
    return blocks


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    content = msg.get("content")
    result: Any = (
        content
        if isinstance(content, str)
        else [
            {"type": "text", "text": p.get("text", "")}
            for p in content or ()
            if p.get("type") == "text"
        ]
    )
    return {"type": "tool_result", "tool_use_id": msg.get("tool_call_id", ""), "content": result}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if p.get("type") == "text")


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": fn.get("name", ""),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice == "none":
        return {"type": "none"}
    if choice is None and parallel is not False:
        return None  # Anthropic's default is auto
    out: dict[str, Any]
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    else:
        raise _bad(f"tool_choice {choice!r} is not supported by Anthropic")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _format_instruction(fmt: Any) -> str | None:
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "Respond only with a single valid JSON object, with no text before or after it."
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = orjson.dumps(spec.get("schema") or {}).decode()
        return (
            "Respond only with a single valid JSON value, with no text before or after it, "
            f"that conforms to this JSON Schema: {schema}"
        )
    return None


def _bad(message: str) -> UpstreamError:
    return UpstreamError("bad_request", message, code="unsupported_by_provider")


# --- response ------------------------------------------------------------------------------


def parse_completion(doc: Any) -> Completion:
    """A Messages API response -> Completion (text joined, tool_use -> tool_calls)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
        raise UpstreamError(
            "server_error", "response has no content list", code="upstream_malformed"
        )
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in doc["content"]:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    stop = doc.get("stop_reason")
    return Completion(
        message=message,
        finish_reason=STOP_REASONS.get(stop, "stop") if stop else None,
        usage=_usage(doc.get("usage")),
        model=doc.get("model"),
    )


def _input_tokens(u: dict[str, Any]) -> int:
    return sum(
        int(u.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def _usage(u: Any) -> Usage | None:
    if not isinstance(u, dict) or "input_tokens" not in u:
        return None
    return Usage(_input_tokens(u), int(u.get("output_tokens") or 0))


class AnthropicStream:
    """Anthropic's SSE events as OpenAI chunks; complete only after `message_stop`."""

    def __init__(self, resp: HTTPResponse) -> None:
        self.resp = resp
        self.usage: Usage | None = None
        self.model: str | None = None
        self._input = 0
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index

    def watch_idle(self, hook: FlushHook) -> bool:
        """The transport awaits `hook` before it waits for the network."""
        self.resp.before_wait = hook
        return True

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        done = False
        async for _event, data in http.iter_sse(self.resp):
            doc = http.loads(data)
            if not isinstance(doc, dict):
                raise UpstreamError(
                    "server_error", "stream payload is not an object", code="upstream_malformed"
                )
            kind = doc.get("type")
            if kind == "message_stop":
                done = True
                break
            if kind == "error":
                raise stream_error(doc)
            for chunk in self._chunks(kind, doc):
                yield chunk
        if not done:
            raise UpstreamError(
                "server_error", "stream ended without message_stop", code="stream_truncated"
            )

    def _chunks(self, kind: Any, doc: dict[str, Any]) -> list[Chunk]:
        if kind == "message_start":
            msg = doc.get("message") or {}
            self.model = msg.get("model")
            self._input = _input_tokens(msg.get("usage") or {})
            return [Chunk(choices=[_choice({"role": "assistant", "content": ""})], content=False)]
        if kind == "content_block_start":
            block = doc.get("content_block") or {}
            if block.get("type") == "tool_use":
                n = self._tools[doc.get("index", 0)] = len(self._tools)
                args = orjson.dumps(block["input"]).decode() if block.get("input") else ""
                call = {
                    "index": n,
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": args},
                }
                return [Chunk(choices=[_choice({"tool_calls": [call]})], content=True)]
            if block.get("type") == "text" and block.get("text"):
                return [Chunk(choices=[_choice({"content": block["text"]})], content=True)]
            return []
        if kind == "content_block_delta":
            delta = doc.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [Chunk(choices=[_choice({"content": delta["text"]})], content=True)]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                n = self._tools.get(doc.get("index", 0), 0)
                call = {"index": n, "function": {"arguments": delta["partial_json"]}}
                return [Chunk(choices=[_choice({"tool_calls": [call]})], content=True)]
            return []
        if kind == "message_delta":
            u = doc.get("usage") or {}
            if u.get("input_tokens") is not None:
                self._input = _input_tokens(u)
            self.usage = Usage(self._input, int(u.get("output_tokens") or 0))
            stop = (doc.get("delta") or {}).get("stop_reason")
            finish = STOP_REASONS.get(stop, "stop") if stop else None
            return [
                Chunk(choices=[_choice({}, finish)], content=False),
                Chunk(choices=[], content=False, usage=self.usage),
            ]
        return []  # ping, content_block_stop, and event types added later

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


# --- errors --------------------------------------------------------------------------------


def _classify(status: int | None, etype: Any, message: str) -> ErrorClass:
    low = message.lower()
    if etype == "billing_error" or status == 402 or any(p in low for p in _QUOTA_PHRASES):
        # 402 billing_error, or a 400 saying the credit balance or the spend limit ran out:
        # waiting does not bring it back (docs.anthropic.com/en/api/errors).
        return "quota_exhausted"
    if (etype == "invalid_request_error" or (status == 400 and etype is None)) and any(
        p in low for p in _CONTEXT_PHRASES
    ):
        return "context_length"
    if isinstance(etype, str) and etype in _TYPE_CLASS:
        return _TYPE_CLASS[etype]
    return cast(ErrorClass, http.status_class(status)) if status is not None else "server_error"


def map_error(status: int, body: Any, headers: Headers | None) -> UpstreamError:
    """Anthropic's error body {"type": "error", "error": {"type", "message"}} -> an error class."""
    err = body.get("error") if isinstance(body, dict) else None
    etype = err.get("type") if isinstance(err, dict) else None
    message = http.error_message(body, f"HTTP {status}")
    if status == 529:
        cls: ErrorClass = "overloaded"
    elif status == 429:
        cls = "rate_limited"
    else:
        cls = _classify(status, etype, message)
    return UpstreamError(cls, message, status=status, code=str(etype or cls))


def stream_error(doc: dict[str, Any]) -> UpstreamError:
    """The `error` event of a stream -> an error class (the status was already 200)."""
    err = doc.get("error")
    etype = err.get("type") if isinstance(err, dict) else None
    message = http.error_message(doc, "error event in the stream")
    cls = _classify(None, etype, message)
    return UpstreamError(cls, f"stream error event ({etype}): {message}", code="stream_error_event")


# Anthropic's 400 texts for an account that cannot pay: credit used up, spend limit reached.
_QUOTA_PHRASES = ("credit balance is too low", "reached your specified api usage limits")
