"""A fake OpenAI chat-completions API (POST /v1/chat/completions), byte-for-byte in OpenAI's shape,
and its Responses API (POST /v1/responses: tests/fakes/openai_responses_fake.py), with the same
auth, error bodies and fault injection; `fake.requests` keeps each request's path.

Success: a `chat.completion` whose text is "Hello from fake-openai: <last user text>", or, when
tools are given and the last message is the user's, a call of the first tool with arguments
built from its schema. Streams follow OpenAI exactly: a role-only chunk, content chunks, a
chunk with `finish_reason`, a usage chunk with `choices: []` when `stream_options.include_usage`
was asked, then `data: [DONE]`. Error bodies are OpenAI's `{"error": {message, type, param,
code}}`; a 400 whose message says "maximum context length" carries `context_length_exceeded`
(use CONTEXT_LENGTH_MESSAGE).

Non-streamed answers also carry what OpenAI reports: `n` choices, per-token `logprobs` (with
`top_logprobs` alternatives) when asked, `service_tier` (the requested tier; `auto` runs as
`default`), and usage details: `reasoning_tokens` when `reasoning_effort` is sent (part of
`completion_tokens`), and `cached_tokens` for a prompt of 1,024 tokens or more sent before
(OpenAI caches the longest prefix seen, in 128-token steps from 1,024).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from aiohttp import web

from tests.fakes import openai_responses_fake as responses
from tests.fakes.base import FakeProvider, StreamPlan, sse

DEFAULT_API_KEY = "test-openai-key"
FINGERPRINT = "fp_fake0001"
CONTEXT_LENGTH_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "130412 tokens. Please reduce the length of the messages."
)
OVERLOADED_MESSAGE = "The engine is currently overloaded, please try again later."


class OpenAIWire:
    """OpenAI's chat-completions wire format for `FakeProvider`."""

    routes = [("POST", "/v1/chat/completions"), ("POST", "/v1/responses")]

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self.seen: set[str] = set()  # prompts answered before (for cached_tokens)

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def check_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return web.json_response(_error(message, "invalid_request_error", None), status=401)
        if header != f"Bearer {self.api_key}":
            message = (
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return web.json_response(
                _error(message, "invalid_request_error", "invalid_api_key"), status=401
            )
        return None

    def completion(self, request: web.Request, body: Any) -> dict[str, Any]:
        if responses.is_responses(request.path):
            return responses.completion(body)
        call = _tool_call(body)
        if call is not None:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [call],
                "refusal": None,
            }
            finish, out_tokens = "tool_calls", _tokens(call["function"]["arguments"])
        else:
            text = reply_text(body)
            message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            finish, out_tokens = "stop", len(_pieces(text))
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 1 else 1
        logprobs = _logprobs(message.get("content"), body) if body.get("logprobs") else None
        choices = [
            {"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish}
            for i in range(n)
        ]
        prompt = prompt_tokens(body)
        return {
            "id": _id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _model(body),
            "choices": choices,
            "usage": _usage(
                prompt, out_tokens * n, self._cached(body, prompt), _reasoning(body) * n
            ),
            "service_tier": _tier(body),
            "system_fingerprint": FINGERPRINT,
        }

    def _cached(self, body: dict[str, Any], prompt: int) -> int:
        """Tokens OpenAI would read from its prompt cache: a prompt of 1,024 tokens or more
        sent before, rounded down to 1,024 + a multiple of 128."""
        if prompt < 1024:
            return 0
        key = json.dumps(body.get("messages"), sort_keys=True)
        if key not in self.seen:
            self.seen.add(key)
            return 0
        return 1024 + (prompt - 1024) // 128 * 128

    def stream(self, request: web.Request, body: Any) -> StreamPlan:
        if responses.is_responses(request.path):
            return responses.stream(body)
        head = {
            "id": _id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": _model(body),
            "service_tier": _tier(body),
            "system_fingerprint": FINGERPRINT,
        }
        prompt = prompt_tokens(body)
        opts = body.get("stream_options") if isinstance(body, dict) else None
        with_usage = isinstance(opts, dict) and opts.get("include_usage") is True

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            doc = {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if with_usage:
                doc["usage"] = None
            return sse(doc)

        call = _tool_call(body)
        events: list[bytes] = []
        if call is not None:
            args = call["function"]["arguments"]
            first_tool = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            events.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [first_tool],
                        "refusal": None,
                    }
                )
            )
            first_content = 0
            pieces = [args[i : i + 4] for i in range(0, len(args), 4)]
            for piece in pieces:
                events.append(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                )
            events.append(chunk({}, "tool_calls"))
            out_tokens = _tokens(args)
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            first_content = 1
            pieces = _pieces(reply_text(body))
            for piece in pieces:
                events.append(chunk({"content": piece}))
            events.append(chunk({}, "stop"))
            out_tokens = len(pieces)
        if with_usage:
            events.append(
                sse(
                    {
                        **head,
                        "choices": [],
                        "usage": _usage(
                            prompt, out_tokens, self._cached(body, prompt), _reasoning(body)
                        ),
                    }
                )
            )
        events.append(b"data: [DONE]\n\n")
        return StreamPlan(events=events, first_content=first_content, terminator=1)

    def error(self, status: int, message: str) -> dict[str, Any]:
        if status == 429:
            return _error(message, "requests", "rate_limit_exceeded")
        if status >= 500:
            return _error(message, "server_error", None)
        if status == 401:
            return _error(message, "invalid_request_error", "invalid_api_key")
        if status == 404:
            return _error(message, "invalid_request_error", "model_not_found")
        if "maximum context length" in message:
            return _error(
                message, "invalid_request_error", "context_length_exceeded", param="messages"
            )
        return _error(message, "invalid_request_error", None)

    def error_event(self) -> bytes:
        return sse(
            _error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        )


def openai_fake(api_key: str = DEFAULT_API_KEY) -> FakeProvider:
    """An unstarted fake OpenAI server; use `with openai_fake() as fake:`."""
    return FakeProvider(OpenAIWire(api_key))


def last_user_text(body: Any) -> str:
    """The text of the last user message (text parts joined; "" when there is none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for msg in reversed(messages or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _text(msg.get("content"))
    return ""


def reply_text(body: Any) -> str:
    return f"Hello from fake-openai: {last_user_text(body)}"


def prompt_tokens(body: Any) -> int:
    """A deterministic estimate: ceil(chars / 4) + 4 per message."""
    messages = body.get("messages") if isinstance(body, dict) else None
    total = 0
    for msg in messages or []:
        if isinstance(msg, dict):
            total += math.ceil(len(_text(msg.get("content"))) / 4) + 4
    return total


def example_arguments(schema: Any) -> dict[str, Any]:
    """Arguments satisfying the `required` properties of a JSON schema, by type."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for name in schema.get("required") or []:
        spec = props.get(name) if isinstance(props, dict) else None
        out[name] = _example(spec if isinstance(spec, dict) else {})
    return out


def _example(spec: dict[str, Any]) -> Any:
    if spec.get("enum"):
        return spec["enum"][0]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return example_arguments(spec)
    return "Paris"


def _tool_call(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict) or not body.get("tools"):
        return None
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    fn = body["tools"][0].get("function") or {}
    args = json.dumps(example_arguments(fn.get("parameters")))
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": fn.get("name", ""), "arguments": args},
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _pieces(text: str) -> list[str]:
    """Word-sized stream pieces that concatenate back to `text`."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


_REASONING_TOKENS = {"minimal": 0, "low": 16, "medium": 64, "high": 256}


def _reasoning(body: Any) -> int:
    """Thinking tokens for the request's `reasoning_effort` (0 without one)."""
    return _REASONING_TOKENS.get(str(body.get("reasoning_effort")), 0)


def _tier(body: Any) -> str:
    """The tier that served the request: the one asked for, `default` for `auto` or none."""
    tier = body.get("service_tier") if isinstance(body, dict) else None
    return tier if tier in ("flex", "priority", "scale") else "default"


def _logprobs(text: Any, body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `choices[].logprobs`: one entry per piece of the text, each with
    `top_logprobs` alternatives (the piece itself first)."""
    top = body.get("top_logprobs") if isinstance(body.get("top_logprobs"), int) else 0
    content = []
    for i, piece in enumerate(_pieces(text) if isinstance(text, str) else []):
        logprob = -0.01 * (i + 1)
        alts = [{"token": piece, "logprob": logprob, "bytes": list(piece.encode())}]
        alts += [
            {"token": f"alt{k}", "logprob": logprob - k, "bytes": list(f"alt{k}".encode())}
            for k in range(1, top)
        ]
        entry = {"token": piece, "logprob": logprob, "bytes": list(piece.encode())}
        content.append({**entry, "top_logprobs": alts[:top]})
    return {"content": content, "refusal": None}


def _usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion + reasoning,
        "total_tokens": prompt + completion + reasoning,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _error(message: str, etype: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def _model(body: Any) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def _id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:29]
