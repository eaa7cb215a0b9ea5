"""Google Gemini API (generativelanguage.googleapis.com, `generateContent`).

Request: OpenAI messages become `contents` (user -> "user", assistant -> "model", tool results
-> `functionResponse` parts in a "user" turn; consecutive turns of one role merged), system and
developer messages become `systemInstruction`, sampling options `generationConfig`, tools
`functionDeclarations`. The API key travels in the `x-goog-api-key` header, never in the URL,
so it cannot end up in an access log.

JSON schemas (tool parameters, `response_format.json_schema`) are reduced to the OpenAPI
subset Gemini's `Schema` accepts: local `$ref`s are inlined, `type: [X, "null"]` becomes
`type: X, nullable: true`, `const` becomes a one-value `enum`, and every other key outside
`_SCHEMA_KEYS` is dropped — notably `additionalProperties`, `$schema`, `$id`, `$defs`,
`definitions`, `strict`, `examples`, `patternProperties`, `oneOf`/`allOf`/`not`.

Gemini 3 models attach a `thoughtSignature` to function calls and refuse a replayed call
without it. A response's signature rides on its OpenAI tool call as
`extra_content.google.thought_signature` (the convention of Google's own OpenAI-compatible
endpoint) and is sent back from there; a Gemini 3+ history call that lost it gets Google's
documented `skip_thought_signature_validator` sentinel on the turn's first call instead.

Streaming uses `:streamGenerateContent?alt=sse`; each event is a whole GenerateContentResponse.
Gemini has no end-of-stream event: the stream is complete once a candidate carried a
`finishReason`, and a clean EOF before that is `stream_truncated`.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from runtime.adapters import http
from runtime.adapters.base import Call, Chunk, Completion, FlushHook, Usage
from runtime.adapters.transport_base import Headers, HTTPResponse, HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import ErrorClass, UpstreamError
from runtime.vocabulary import DEFAULT_BASE_URLS

DEFAULT_BASE_URL = DEFAULT_BASE_URLS["gemini"]

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "items",
        "minItems",
        "maxItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "minimum",
        "maximum",
    }
)
_CONTEXT_HINTS = ("exceeds the maximum number of tokens", "input token count")
_SKIP_SIGNATURE = "skip_thought_signature_validator"
_MAJOR_VERSION = re.compile(r"gemini-(\d+)")
_DATA_URL = re.compile(r"data:([^;,]+)?(?:;[^,]*)?;base64,(.*)", re.DOTALL)


class GeminiAdapter:
    """Gemini's generateContent API behind the chat-completions format."""

    def __init__(self, provider: ProviderConfig, transport: HTTPTransport) -> None:
        self.provider = provider
        self.transport = transport
        self.base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeouts = http.Timeouts.of(provider)

    async def complete(self, call: Call) -> Completion:
        """The non-streamed answer (`:generateContent`)."""
        return parse_response(await http.read_json(await self._post(call, False)))

    async def open_stream(self, call: Call) -> GeminiStream:
        """The streamed answer (`:streamGenerateContent?alt=sse`), as OpenAI chunks."""
        return GeminiStream(await self._post(call, True))

    async def _post(self, call: Call, stream: bool) -> HTTPResponse:
        upstream = call.model.upstream
        resource = upstream if "/" in upstream else f"models/{upstream}"
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        headers = {
            "content-type": "application/json",
            "x-goog-api-key": call.credentials.get("api_key", ""),
        }
        try:
            payload = build_request(call.request, upstream)
        except (AttributeError, TypeError, ValueError) as exc:  # a request of the wrong shape
            raise _bad(f"malformed request ({type(exc).__name__}: {exc})") from None
        body = orjson.dumps(payload)
        return await http.post(
            self.transport,
            f"{self.base_url}/{resource}{method}",
            headers,
            body,
            self.timeouts.pick(stream),
            map_error,
        )


# --- request ---------------------------------------------------------------------------------


def build_request(req: dict[str, Any], upstream: str = "") -> dict[str, Any]:
    """The GenerateContentRequest body for an OpenAI chat-completions body (to model `upstream`)."""
    version = _MAJOR_VERSION.search(upstream)
    needs_signature = version is not None and int(version.group(1)) >= 3
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool_call id -> function name, for the tool results
    for msg in req.get("messages") or []:
        if not isinstance(msg, dict):
            raise _bad("each message must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(msg.get("content")))
            continue
        if role == "user":
            _append(contents, "user", _parts(msg.get("content")))
        elif role == "assistant":
            parts = _parts(msg.get("content"))
            for i, tc in enumerate(msg.get("tool_calls") or []):
                fn = tc.get("function") or {}
                tool_names[str(tc.get("id"))] = fn.get("name", "")
                part: dict[str, Any] = {
                    "functionCall": {
                        "name": fn.get("name", ""),
                        "args": _arguments(fn.get("arguments")),
                    }
                }
                signature = ((tc.get("extra_content") or {}).get("google") or {}).get(
                    "thought_signature"
                )
                if signature or (needs_signature and i == 0):
                    part["thoughtSignature"] = signature or _SKIP_SIGNATURE
                parts.append(part)
            _append(contents, "model", parts)
        elif role in ("tool", "function"):
            name = tool_names.get(str(msg.get("tool_call_id"))) or msg.get("name")
            if not name:
                raise _bad(
                    f"tool message refers to an unknown tool_call_id {msg.get('tool_call_id')!r}"
                )
            result = {"name": name, "response": {"content": _tool_content(msg.get("content"))}}
            _append(contents, "user", [{"functionResponse": result}])
        else:
            raise _bad(f"unsupported message role {role!r}")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(req)
    if config:
        body["generationConfig"] = config
    tools = [
        _declaration(t) for t in req.get("tools") or [] if t.get("type", "function") == "function"
    ]
    if tools:
        body["tools"] = [{"functionDeclarations": tools}]
    tool_config = _tool_config(req.get("tool_choice"))
    if tool_config is not None:
        body["toolConfig"] = tool_config
    return body


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _bad("message content must be a string or a list of parts")
    out: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            out.append(
                _media(image.get("url", "") if isinstance(image, dict) else str(image or ""))
            )
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            out.append(
                {
                    "inlineData": {
                        "mimeType": f"audio/{audio.get('format', 'wav')}",
                        "data": audio.get("data", ""),
                    }
                }
            )
        elif kind == "file":
            out.append(_media(str((part.get("file") or {}).get("file_data", ""))))
        elif kind == "refusal":
            continue
        else:
            raise _bad(f"content part type {kind!r} is not supported by Gemini")
    return out


def _media(url: str) -> dict[str, Any]:
    m = _DATA_URL.fullmatch(url)
    if m:
        return {
            "inlineData": {"mimeType": m.group(1) or "application/octet-stream", "data": m.group(2)}
        }
    if url.startswith(("http://", "https://", "gs://")):
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return {"fileData": {"fileUri": url, "mimeType": mime}}
    raise _bad("image and file URLs must be base64 data: URLs or http(s) URLs")


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("assistant tool_call arguments are not valid JSON") from None


def _tool_content(content: Any) -> Any:
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            return content
    return content


def _generation_config(req: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if req.get(src) is not None:
            cfg[dst] = req[src]
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    if max_tokens is not None:
        cfg["maxOutputTokens"] = max_tokens
    stop = req.get("stop")
    if stop:
        cfg["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = req.get("response_format") or {}
    if fmt.get("type") == "json_object":
        cfg["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        cfg["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            cfg["responseSchema"] = clean_schema(schema)
    return cfg


def _declaration(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    decl: dict[str, Any] = {"name": fn.get("name", "")}
    if fn.get("description"):
        decl["description"] = fn["description"]
    params = fn.get("parameters")
    # Gemini rejects an OBJECT schema with no properties: a no-argument tool omits parameters.
    if isinstance(params, dict) and params.get("properties"):
        decl["parameters"] = clean_schema(params)
    return decl


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _TOOL_MODES:
            raise _bad(f"unsupported tool_choice {choice!r}")
        return {"functionCallingConfig": {"mode": _TOOL_MODES[choice]}}
    name = ((choice.get("function") or {}) if isinstance(choice, dict) else {}).get("name")
    if not name:
        raise _bad("tool_choice must be auto, none, required or name a function")
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema reduced to what Gemini's `Schema` accepts (see the module docstring)."""
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    cleaned: dict[str, Any] = _clean(schema, defs, 0)
    return cleaned


def _clean(node: Any, defs: dict[str, Any], depth: int) -> Any:
    if depth > 32:
        raise _bad("JSON schema nests too deeply (or its $refs are recursive) for Gemini")
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if target is None:
            raise _bad(f"JSON schema $ref {ref!r} cannot be resolved")
        return _clean({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            out["type"] = kinds[0] if kinds else "null"
            if "null" in value:
                out["nullable"] = True
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _clean(sub, defs, depth + 1) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = (
                [_clean(s, defs, depth + 1) for s in value]
                if isinstance(value, list)
                else _clean(value, defs, depth + 1)
            )
        elif key in _SCHEMA_KEYS:
            out[key] = value
    return out


# --- response --------------------------------------------------------------------------------


def parse_response(doc: Any) -> Completion:
    """A Completion from a GenerateContentResponse (first candidate; the others in extra)."""
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        raise UpstreamError(
            "server_error", "response is not a JSON object", code="upstream_malformed"
        )
    candidates = doc.get("candidates")
    if not candidates:
        _raise_blocked(doc)
        raise UpstreamError("server_error", "response has no candidates", code="upstream_malformed")
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise UpstreamError(
            "server_error", "response candidates are malformed", code="upstream_malformed"
        )
    choices = [_choice(i, c) for i, c in enumerate(candidates)]
    extra: dict[str, Any] = {"choices": choices} if len(choices) > 1 else {}
    if doc.get("responseId"):
        extra["response_id"] = doc["responseId"]
    return Completion(
        message=choices[0]["message"],
        finish_reason=choices[0]["finish_reason"],
        usage=_usage(doc.get("usageMetadata")),
        model=doc.get("modelVersion"),
        extra=extra,
    )


def _choice(index: int, candidate: dict[str, Any]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _parts_of(candidate):
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part, len(calls)))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "index": index,
        "message": message,
        "finish_reason": _finish(candidate.get("finishReason"), bool(calls)),
    }


def _tool_call(part: dict[str, Any], n: int) -> dict[str, Any]:
    fc = part["functionCall"]
    args = orjson.dumps(fc.get("args") or {}).decode()
    call_id = fc.get("id") or f"call_{n}"
    out = {
        "id": call_id,
        "type": "function",
        "function": {"name": fc.get("name", ""), "arguments": args},
    }
    if part.get("thoughtSignature"):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _parts_of(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate's answer parts: thoughts and anything malformed left out."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return []
    return [p for p in parts if isinstance(p, dict) and not p.get("thought")]


def _finish(reason: Any, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if has_calls:
        return "tool_calls"
    return _FINISH.get(str(reason), "stop")


def _usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict) or "promptTokenCount" not in meta:
        return None
    output = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return Usage(int(meta.get("promptTokenCount") or 0), output)


def _raise_blocked(doc: dict[str, Any]) -> None:
    feedback = doc.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason:
        raise UpstreamError(
            "bad_request",
            f"Gemini blocked the prompt (blockReason {reason})",
            code="prompt_blocked",
        )


# --- streaming -------------------------------------------------------------------------------


class GeminiStream:
    """Gemini SSE responses as OpenAI chunks; complete once a candidate has a finishReason."""

    def __init__(self, resp: HTTPResponse) -> None:
        self.resp = resp
        self.usage: Usage | None = None
        self.model: str | None = None

    def watch_idle(self, hook: FlushHook) -> bool:
        """The transport awaits `hook` before it waits for the network."""
        self.resp.before_wait = hook
        return True

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        finished = False
        started = False
        calls: dict[int, int] = {}  # candidate index -> tool calls seen so far
        try:
            async for _event, data in http.iter_sse(self.resp):
                doc = http.loads(data)
                if isinstance(doc, list) and len(doc) == 1:
                    doc = doc[0]
                if not isinstance(doc, dict):
                    raise UpstreamError(
                        "server_error", "stream payload is not an object", code="upstream_malformed"
                    )
                if "error" in doc:
                    err = doc["error"]
                    code = err.get("code") if isinstance(err, dict) else None
                    mapped = map_error(code if isinstance(code, int) else 500, doc, None)
                    mapped.code = "stream_error_event"
                    raise mapped
                if self.model is None:
                    self.model = doc.get("modelVersion")
                usage = _usage(doc.get("usageMetadata"))
                if usage is not None:
                    self.usage = usage
                candidates = doc.get("candidates") or []
                if not candidates and not started:
                    _raise_blocked(doc)
                choices, final = _deltas(candidates, calls)
                finished = finished or final
                if not started and choices:
                    started = True
                    role = {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                    yield Chunk(choices=[role], content=False)
                if choices or (finished and usage is not None):
                    yield Chunk(
                        choices=choices,
                        content=any(_has_content(c) for c in choices),
                        usage=usage if finished else None,
                    )
        except UpstreamError as exc:
            # A connection dropped after the final candidate lost nothing the client needs.
            if not (finished and exc.code == "stream_broken"):
                raise
        if not finished:
            raise UpstreamError(
                "server_error", "stream ended before a finishReason", code="stream_truncated"
            )

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()


def _deltas(candidates: Any, calls: dict[int, int]) -> tuple[list[dict[str, Any]], bool]:
    if not isinstance(candidates, list):
        raise UpstreamError(
            "server_error", "stream candidates are malformed", code="upstream_malformed"
        )
    out: list[dict[str, Any]] = []
    final = False
    for pos, cand in enumerate(candidates):
        if not isinstance(cand, dict):
            raise UpstreamError(
                "server_error", "stream candidate is malformed", code="upstream_malformed"
            )
        index = cand.get("index", pos)
        if not isinstance(index, int):
            raise UpstreamError(
                "server_error", "stream candidate index is malformed", code="upstream_malformed"
            )
        delta: dict[str, Any] = {}
        texts: list[str] = []
        for part in _parts_of(cand):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                n = calls.get(index, 0)
                calls[index] = n + 1
                delta.setdefault("tool_calls", []).append({"index": n, **_tool_call(part, n)})
        if texts:
            delta["content"] = "".join(texts)
        finish = _finish(cand.get("finishReason"), calls.get(index, 0) > 0)
        final = final or finish is not None
        if delta or finish is not None:
            out.append({"index": index, "delta": delta, "finish_reason": finish})
    return out, final


def _has_content(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("tool_calls"))


# --- errors ----------------------------------------------------------------------------------


def map_error(status: int, body: Any, headers: Headers | None) -> UpstreamError:
    """Google's error body {"error": {code, message, status, details}} (or a one-item list
    of it) -> an error class. A 400 FAILED_PRECONDITION about the caller's location is a
    region block (`upstream_config`); a 429 is `quota_exhausted` when the quota it hit is a
    daily one or has a limit of 0 (ai.google.dev/gemini-api/docs/troubleshooting)."""
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    gstatus = str(err.get("status") or "")
    details = [d for d in err.get("details") or [] if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if d.get("reason")}
    message = http.error_message(body, f"HTTP {status}")
    lowered = message.lower()
    cls: ErrorClass
    if (
        "API_KEY_INVALID" in reasons
        or status in (401, 403)
        or gstatus in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    ):
        cls = "auth"
    elif gstatus == "FAILED_PRECONDITION" and any(h in lowered for h in _REGION_HINTS):
        cls = "upstream_config"  # "User location is not supported for the API use."
    elif status == 429 or gstatus == "RESOURCE_EXHAUSTED":
        cls = "quota_exhausted" if _quota_exhausted(details, lowered) else "rate_limited"
    elif status == 503 or gstatus == "UNAVAILABLE":
        cls = "overloaded" if "overload" in lowered else "server_error"
    elif status == 504 or gstatus == "DEADLINE_EXCEEDED":
        cls = "timeout"
    elif status == 404 or gstatus == "NOT_FOUND":
        cls = "not_found"
    elif status >= 500 or gstatus == "INTERNAL":
        cls = "server_error"
    elif any(hint in lowered for hint in _CONTEXT_HINTS):
        cls = "context_length"
    else:
        cls = cast(ErrorClass, http.status_class(status))
    code = gstatus or (sorted(reasons)[0] if reasons else cls)
    return UpstreamError(cls, message, status=status, code=code, retry_after=_retry_delay(details))


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """google.rpc.RetryInfo's retryDelay ("37s", "0.5s") in seconds."""
    for d in details:
        delay = d.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _bad(message: str) -> UpstreamError:
    return UpstreamError(
        "bad_request",
        f"cannot translate the request for Gemini: {message}",
        code="unsupported_request",
    )


_REGION_HINTS = ("location is not supported", "not available in your country", "region")


def _quota_exhausted(details: list[dict[str, Any]], lowered: str) -> bool:
    """A 429 that waiting a minute does not fix: every google.rpc.QuotaFailure violation is a
    per-day quota, or the message says the quota's limit is 0 (a free tier without access)."""
    if "limit: 0," in lowered or lowered.endswith("limit: 0"):
        return True
    ids = [
        str(v.get("quotaId") or v.get("quotaMetric") or "")
        for d in details
        if isinstance(d.get("violations"), list)
        for v in d["violations"]
        if isinstance(v, dict)
    ]
    return bool(ids) and all("perday" in i.lower() or "per_day" in i.lower() for i in ids)
