"""A fake Gemini API (POST /v1beta/models/{model}:generateContent and :streamGenerateContent).

Success: a GenerateContentResponse whose text is "Hello from fake-gemini: <last user text>",
or, when tools are declared and the last content is the user's own turn (not a tool result), a
`functionCall` of the first declared function with arguments built from its schema
(`parametersJsonSchema`, or the older `parameters`), carrying an `id` and, on its part, a
`thoughtSignature` (as Gemini 3 sends them; `signature_for(id)` is the value). When the request
asks for thoughts (`generationConfig.thinkingConfig.includeThoughts`), a thought-summary part
(`thought: true`) comes first and `usageMetadata.thoughtsTokenCount` counts it. Streams
(`?alt=sse`) are what Google sends: `data: <GenerateContentResponse>\r\n\r\n` events, the text
in three pieces, cumulative `usageMetadata` on each, `finishReason` on the last one, and no
end-of-stream marker. Errors are Google's `{"error": {code, message, status, details?}}`;
a wrong key is 400 INVALID_ARGUMENT / API_KEY_INVALID, a missing one 403 PERMISSION_DENIED.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeProvider, StreamPlan

DEFAULT_API_KEY = "test-gemini-key"
CONTEXT_LENGTH_MESSAGE = (
    "The input token count (1258113) exceeds the maximum number of tokens allowed (1048576)."
)
OVERLOADED_MESSAGE = "The model is overloaded. Please try again later."
RETRY_DELAY_S = 7

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GeminiWire:
    """The Gemini API's generateContent wire format for `FakeProvider`."""

    routes = [("POST", "/v1beta/models/{rest}"), ("POST", "/v1/models/{rest}")]

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return request.path.endswith(":streamGenerateContent")

    def check_auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity)."
                " Please use API Key or other form of API consumer identity to call this API."
            )
            return web.json_response(_error(403, message), status=403)
        if key != self.api_key:
            message = "API key not valid. Please pass a valid API key."
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            return web.json_response(_error(400, message, [info]), status=400)
        return None

    def completion(self, request: web.Request, body: Any) -> dict[str, Any]:
        call = _function_call(body)
        thought = _thought(body)
        parts: list[dict[str, Any]] = [thought] if thought else []
        if call is not None:
            parts.append(_call_part(call))
            out_tokens = _tokens(json.dumps(call["args"]))
        else:
            text = reply_text(body)
            parts.append({"text": text})
            out_tokens = _tokens(text)
        candidate = {
            "content": {"parts": parts, "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
        usage = _usage(prompt_tokens(body), out_tokens, _thought_tokens(thought))
        return _response(request, [candidate], usage)

    def stream(self, request: web.Request, body: Any) -> StreamPlan:
        prompt = prompt_tokens(body)
        call = _function_call(body)
        events: list[bytes] = []
        thought = _thought(body)
        thinking = _thought_tokens(thought)
        if thought:
            cand = {"content": {"parts": [thought], "role": "model"}, "index": 0}
            events.append(_event(_response(request, [cand], _usage(prompt, 0, thinking))))
        if call is not None:
            out = _tokens(json.dumps(call["args"]))
            first = {"content": {"parts": [_call_part(call)], "role": "model"}, "index": 0}
            last = {
                "content": {"parts": [{"text": ""}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
            events.append(_event(_response(request, [first], _usage(prompt, out, thinking))))
            events.append(_event(_response(request, [last], _usage(prompt, out, thinking))))
        else:
            text = reply_text(body)
            cuts = [0, len(text) // 3, 2 * len(text) // 3, len(text)]
            for i in range(3):
                piece = text[cuts[i] : cuts[i + 1]]
                sent = _tokens(text[: cuts[i + 1]])  # usageMetadata is cumulative
                cand: dict[str, Any] = {
                    "content": {"parts": [{"text": piece}], "role": "model"},
                    "index": 0,
                }
                if i == 2:
                    cand["finishReason"] = "STOP"
                events.append(_event(_response(request, [cand], _usage(prompt, sent, thinking))))
        return StreamPlan(events=events, first_content=1 if thought else 0, terminator=1)

    def error(self, status: int, message: str) -> dict[str, Any]:
        if status == 429:
            retry = {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{RETRY_DELAY_S}s",
            }
            return _error(status, message, [retry])
        return _error(status, message)

    def error_event(self) -> bytes:
        return _event(_error(503, OVERLOADED_MESSAGE))


def gemini_fake(api_key: str = DEFAULT_API_KEY) -> FakeProvider:
    """An unstarted fake Gemini server; use `with gemini_fake() as fake:`."""
    return FakeProvider(GeminiWire(api_key))


def last_user_text(body: Any) -> str:
    """The text parts of the last user-role content that has text, joined ("" when none)."""
    contents = body.get("contents") if isinstance(body, dict) else None
    for content in reversed(contents or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            text = _text(content)
            if text:
                return text
    return ""


def reply_text(body: Any) -> str:
    return f"Hello from fake-gemini: {last_user_text(body)}"


def prompt_tokens(body: Any) -> int:
    """A deterministic estimate: ceil(chars / 4) + 3 per content, system instruction included."""
    if not isinstance(body, dict):
        return 0
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        contents.append(system)
    return sum(math.ceil(len(_text(c)) / 4) + 3 for c in contents)


def _function_call(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    contents = body.get("contents") or []
    if not decls or not contents:
        return None
    last = contents[-1]
    if last.get("role", "user") != "user" or any(
        "functionResponse" in p for p in last.get("parts") or []
    ):
        return None
    # Google's JSON parsing takes proto field names too (the SDK sends some that way).
    schema = _field(decls[0], "parametersJsonSchema") or decls[0].get("parameters")
    return {
        "id": "fc-" + uuid.uuid4().hex[:16],
        "name": decls[0].get("name", ""),
        "args": _example_args(schema),
    }


def signature_for(call_id: str) -> str:
    """The thoughtSignature the fake attaches to its function call `call_id` (base64)."""
    return base64.b64encode(f"sig:{call_id}".encode()).decode()


def _call_part(call: dict[str, Any]) -> dict[str, Any]:
    return {"functionCall": call, "thoughtSignature": signature_for(call["id"])}


def _thought(body: Any) -> dict[str, Any] | None:
    config = _field(body, "generationConfig")
    thinking = _field(config, "thinkingConfig")
    if not _field(thinking, "includeThoughts"):
        return None
    return {"text": f"Thinking about: {last_user_text(body)}", "thought": True}


def _field(obj: Any, camel: str) -> Any:
    """`obj[camel]`, or under its proto (snake_case) name, as Google's JSON parsing reads it."""
    if not isinstance(obj, dict):
        return None
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake))


def _thought_tokens(thought: dict[str, Any] | None) -> int:
    return _tokens(thought["text"]) if thought else 0


def _example_args(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    return {name: _example(props.get(name) or {}) for name in schema.get("required") or []}


def _example(spec: dict[str, Any]) -> Any:
    if spec.get("enum"):
        return spec["enum"][0]
    kind = str(spec.get("type", "string")).lower()  # the SDKs send "STRING", REST users "string"
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return _example_args(spec)
    return "Paris"


def _response(
    request: web.Request, candidates: list[dict[str, Any]], usage: dict[str, Any]
) -> dict[str, Any]:
    model = request.match_info.get("rest", "").rsplit(":", 1)[0]
    return {
        "candidates": candidates,
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": uuid.uuid4().hex[:22],
    }


def _usage(prompt: int, output: int, thoughts: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _error(
    status: int, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        err["details"] = details
    return {"error": err}


def _event(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\r\n\r\n"


def _text(content: dict[str, Any]) -> str:
    parts = content.get("parts") or []
    return " ".join(
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))
