"""Google Gemini API (generativelanguage.googleapis.com, `generateContent`).

Request: OpenAI messages become `contents` (user -> "user", assistant -> "model", tool results
-> `functionResponse` parts in a "user" turn; consecutive turns of one role merged), system and
developer messages become `systemInstruction`, sampling options `generationConfig`, tools
`functionDeclarations`. The API key travels in the `x-goog-api-key` header, never in the URL,
so it cannot end up in an access log. What Gemini cannot take as sent is mapped, dropped with a
note, or makes the candidate `Unservable` — each rule is in docs/runtime.md, "Gemini".

JSON schemas (tool parameters, `response_format.json_schema`) go out as JSON Schema in
`parametersJsonSchema` / `responseJsonSchema` (runtime/adapters/gemini_schema.py).

Tool calls keep one id from end to end: Gemini's own `functionCall.id` when it sent one, else a
minted `call_<random hex>` (unique across turns, so a conversation that falls back to another
provider never repeats an id); on the next turn the ids go back as `functionCall.id` /
`functionResponse.id`. Gemini 3 models attach a `thoughtSignature` to function calls and refuse
a replayed call without it: it rides on the OpenAI tool call as
`extra_content.google.thought_signature` (the shape of Google's own OpenAI-compatible endpoint)
and is sent back from there; a Gemini 3+ history call that lost it gets Google's documented
`skip_thought_signature_validator` sentinel on the turn's first call instead. Thought parts
(`thought: true`) reach the client as `reasoning_content`, never as `content`.

Streaming uses `:streamGenerateContent?alt=sse`; each event is a whole GenerateContentResponse.
Gemini has no end-of-stream event: the stream is complete once a candidate carried a
`finishReason`, and a clean EOF before that is `stream_truncated`.
"""

from __future__ import annotations

import mimetypes
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from runtime.adapters import gemini_embeddings, http
from runtime.adapters.base import (
    AdapterDefaults,
    Call,
    Chunk,
    Completion,
    Embeddings,
    FlushHook,
    Usage,
)
from runtime.adapters.gemini_schema import to_gemini
from runtime.adapters.transport_base import Headers, HTTPResponse, HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import ErrorClass, Unservable, UpstreamError
from runtime.vocabulary import DEFAULT_BASE_URLS

DEFAULT_BASE_URL = DEFAULT_BASE_URLS["gemini"]

# google-genai `FinishReason`: how each documented value reaches the client. The reasons in
# _FAILED mean the model produced no usable answer: an `upstream_malformed` server error, so the
# chain falls back before the commit and a stream ends with an error event after it.
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "CONTINUATION": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
    "ESCALATION": "content_filter",
}
_FAILED = frozenset(
    {
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
        "PUP_LIMITED_DISABLED",
        "IMAGE_OTHER",
        "NO_IMAGE",
    }
)
# OTHER, FINISH_REASON_UNSPECIFIED and any value newer than this table: "stop" when the
# candidate carried an answer, a failure (as _FAILED) when it carried nothing.
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_CONTEXT_HINTS = ("exceeds the maximum number of tokens", "input token count")
_SKIP_SIGNATURE = "skip_thought_signature_validator"
_MAJOR_VERSION = re.compile(r"gemini-(\d+)")
_DATA_URL = re.compile(r"data:([^;,]+)?(?:;[^,]*)?;base64,(.*)", re.DOTALL)
MAX_CANDIDATES = 8  # GenerationConfig.candidateCount
MAX_STOP_SEQUENCES = 5  # GenerationConfig.stopSequences
# reasoning_effort -> thinkingBudget (Gemini 2.5), as Google's OpenAI-compatible endpoint maps
# it (https://ai.google.dev/gemini-api/docs/openai#thinking): low 1K, medium 8K, high 24K.
THINKING_BUDGETS = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
}
# reasoning_effort -> thinkingLevel (Gemini 3 and later; google-genai `ThinkingLevel`).
THINKING_LEVELS = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "XHIGH",
}


class GeminiAdapter(AdapterDefaults):
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
            payload = build_request(
                call.request, upstream, call.notes, "reasoning" in call.model.capabilities
            )
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

    async def embed(self, call: Call) -> Embeddings:
        """`:batchEmbedContents`, batched (runtime/adapters/gemini_embeddings.py)."""
        headers = {
            "content-type": "application/json",
            "x-goog-api-key": call.credentials.get("api_key", ""),
        }
        return await gemini_embeddings.embed(
            self.transport, self.base_url, headers, self.timeouts, map_error, call
        )


# --- request ---------------------------------------------------------------------------------


def build_request(
    req: dict[str, Any],
    upstream: str = "",
    notes: list[str] | None = None,
    reasoning: bool = True,
) -> dict[str, Any]:
    """The GenerateContentRequest body for an OpenAI chat-completions body (to model `upstream`).

    What is mapped or dropped is appended to `notes`; `reasoning` says whether the model takes
    thinking settings. Raises `Unservable` when Gemini cannot take the request at all.
    """
    notes = [] if notes is None else notes
    version = _major(upstream)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool_call id -> function name, for the tool results
    for msg in req.get("messages") or []:
        if not isinstance(msg, dict):
            raise _bad("each message must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(msg.get("content")))
        elif role == "user":
            _append(contents, "user", _parts(msg.get("content")))
        elif role == "assistant":
            # reasoning_content / thinking_blocks (another provider's thinking) are not read:
            # Gemini cannot take them back.
            parts = _parts(msg.get("content"))
            for i, tc in enumerate(msg.get("tool_calls") or []):
                parts.append(_call_part(tc, i, version >= 3, tool_names))
            _append(contents, "model", parts)
        elif role in ("tool", "function"):
            call_id = msg.get("tool_call_id")
            name = tool_names.get(str(call_id)) or msg.get("name")
            if not name:
                raise _bad(f"tool message refers to an unknown tool_call_id {call_id!r}")
            result: dict[str, Any] = {
                "name": name,
                "response": {"content": _tool_content(msg.get("content"))},
            }
            if isinstance(call_id, str) and call_id:
                result = {"id": call_id, **result}
            _append(contents, "user", [{"functionResponse": result}])
        else:
            raise _bad(f"unsupported message role {role!r}")
    body: dict[str, Any] = {"contents": contents}
    if system and not contents:
        # Gemini needs at least one content: the system text becomes the user turn.
        body["contents"] = [{"role": "user", "parts": system}]
        notes.append("sent the system-only prompt as the user turn: Gemini needs a user turn")
    elif system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(req, version, notes, reasoning)
    if config:
        body["generationConfig"] = config
    tools = [
        _declaration(t, notes)
        for t in req.get("tools") or []
        if t.get("type", "function") == "function"
    ]
    if tools:
        body["tools"] = [{"functionDeclarations": tools}]
    if req.get("parallel_tool_calls") is False:
        notes.append("dropped `parallel_tool_calls`: Gemini has no switch for parallel calls")
    tool_config = _tool_config(req.get("tool_choice"))
    if tool_config is not None:
        body["toolConfig"] = tool_config
    return body


def _major(upstream: str) -> int:
    version = _MAJOR_VERSION.search(upstream)
    return int(version.group(1)) if version is not None else 0


def _call_part(
    tc: Any, position: int, needs_signature: bool, tool_names: dict[str, str]
) -> dict[str, Any]:
    """One assistant tool call as a `functionCall` part (id and thought signature kept)."""
    if not isinstance(tc, dict):
        raise _bad("each tool call must be an object")
    fn = tc.get("function") or {}
    name = fn.get("name", "")
    call: dict[str, Any] = {"name": name, "args": _arguments(fn.get("arguments"))}
    call_id = tc.get("id")
    if isinstance(call_id, str) and call_id:
        tool_names[call_id] = name
        call = {"id": call_id, **call}
    part: dict[str, Any] = {"functionCall": call}
    extra = tc.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if isinstance(signature, str) and signature:
        part["thoughtSignature"] = signature
    elif needs_signature and position == 0:
        part["thoughtSignature"] = _SKIP_SIGNATURE
    return part


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
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("assistant tool_call arguments are not valid JSON") from None
    if not isinstance(args, dict):
        raise _bad("assistant tool_call arguments must be a JSON object")
    return args


def _tool_content(content: Any) -> Any:
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            return content
    return content


def _generation_config(
    req: dict[str, Any], version: int, notes: list[str], reasoning: bool
) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if req.get(src) is not None:
            cfg[dst] = req[src]
    n = req.get("n")
    if n is not None:
        if isinstance(n, int) and n > MAX_CANDIDATES:
            raise Unservable(f"Gemini answers at most {MAX_CANDIDATES} candidates (n={n})")
        cfg["candidateCount"] = n
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    if max_tokens is not None:
        cfg["maxOutputTokens"] = max_tokens
    stop = req.get("stop")
    if stop:
        stops = [stop] if isinstance(stop, str) else list(stop)
        if len(stops) > MAX_STOP_SEQUENCES:
            raise Unservable(
                f"Gemini takes at most {MAX_STOP_SEQUENCES} stop sequences ({len(stops)} sent)"
            )
        cfg["stopSequences"] = stops
    if req.get("logprobs"):
        cfg["responseLogprobs"] = True
        if req.get("top_logprobs"):
            cfg["logprobs"] = req["top_logprobs"]
    fmt = req.get("response_format") or {}
    if fmt.get("type") == "json_object":
        cfg["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        cfg["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema")
        if isinstance(schema, dict):
            where = f"response_format `{spec.get('name', '')}`"
            cfg["responseJsonSchema"] = to_gemini(schema, spec.get("strict") is True, where, notes)
    thinking = _thinking(req.get("reasoning_effort"), version, notes, reasoning)
    if thinking is not None:
        cfg["thinkingConfig"] = thinking
    return cfg


def _thinking(
    effort: Any, version: int, notes: list[str], reasoning: bool
) -> dict[str, Any] | None:
    """`reasoning_effort` as Gemini's thinkingConfig (see THINKING_BUDGETS, THINKING_LEVELS)."""
    if effort is None:
        return None
    if not reasoning:
        notes.append("dropped `reasoning_effort`: the model is not marked `reasoning`")
        return None
    if effort not in THINKING_BUDGETS:
        raise _bad(f"unsupported reasoning_effort {effort!r}")
    config: dict[str, Any] = {"includeThoughts": effort != "none"}
    if version >= 3:
        config["thinkingLevel"] = THINKING_LEVELS[effort]
        if effort == "none":
            notes.append(
                "mapped `reasoning_effort: none` to thinkingLevel MINIMAL: Gemini 3 models "
                "always think"
            )
    else:
        config["thinkingBudget"] = THINKING_BUDGETS[effort]
    return config


def _declaration(tool: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    decl: dict[str, Any] = {"name": fn.get("name", "")}
    if fn.get("description"):
        decl["description"] = fn["description"]
    params = fn.get("parameters")
    # A no-argument tool omits its parameters (Gemini refuses an object without properties).
    if isinstance(params, dict) and (params.get("properties") or params.get("$ref")):
        where = f"tool `{decl['name']}`"
        decl["parametersJsonSchema"] = to_gemini(params, fn.get("strict") is True, where, notes)
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


# --- response --------------------------------------------------------------------------------


def _malformed(message: str) -> UpstreamError:
    return UpstreamError("server_error", message, code="upstream_malformed")


def parse_response(doc: Any) -> Completion:
    """A Completion from a GenerateContentResponse (first candidate; the others in extra)."""
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        raise _malformed("response is not a JSON object")
    candidates = doc.get("candidates")
    if not candidates:
        _raise_blocked(doc)
        raise _malformed("response has no candidates")
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise _malformed("response candidates are malformed")
    usage = _usage(doc.get("usageMetadata"))
    choices = [_choice(i, c) for i, c in enumerate(candidates)]
    extra: dict[str, Any] = {}
    if len(choices) > 1 or any(c["logprobs"] is not None for c in choices):
        extra["choices"] = choices
    if isinstance(doc.get("responseId"), str):
        extra["response_id"] = doc["responseId"]
    model = doc.get("modelVersion")
    return Completion(
        message=choices[0]["message"],
        finish_reason=choices[0]["finish_reason"],
        usage=usage,
        model=model if isinstance(model, str) else None,
        extra=extra,
    )


@dataclass(slots=True)
class _Parts:
    """A candidate's parts, sorted: answer text, thought text, function-call parts."""

    texts: list[str] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)


def _read_parts(candidate: dict[str, Any]) -> _Parts:
    """The parts of `candidate`; a part of the wrong shape is `upstream_malformed`. Parts with
    nothing OpenAI's format can carry (executable code, inline media) are left out."""
    out = _Parts()
    content = candidate.get("content")
    if content is None:
        return out
    if not isinstance(content, dict):
        raise _malformed("candidate content is not an object")
    parts = content.get("parts")
    if parts is None:
        return out
    if not isinstance(parts, list):
        raise _malformed("candidate parts are not a list")
    for part in parts:
        if not isinstance(part, dict):
            raise _malformed("a candidate part is not an object")
        text = part.get("text")
        fc = part.get("functionCall")
        if text is not None:
            if not isinstance(text, str):
                raise _malformed("a text part is not a string")
            (out.thoughts if part.get("thought") is True else out.texts).append(text)
        elif fc is not None:
            if (
                not isinstance(fc, dict)
                or not isinstance(fc.get("name"), str)
                or not isinstance(fc.get("args", {}), dict | None)
            ):
                raise _malformed("a functionCall part is malformed")
            out.calls.append(part)
    return out


def _choice(index: int, candidate: dict[str, Any]) -> dict[str, Any]:
    parts = _read_parts(candidate)
    calls = [_tool_call(p) for p in parts.calls]
    answered = any(parts.texts) or bool(calls)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(parts.texts) if parts.texts or not calls else None,
    }
    if parts.thoughts:
        message["reasoning_content"] = "".join(parts.thoughts)
    if calls:
        message["tool_calls"] = calls
    return {
        "index": index,
        "message": message,
        "logprobs": _logprobs(candidate.get("logprobsResult")),
        "finish_reason": _finish(candidate.get("finishReason"), bool(calls), answered),
    }


def _tool_call(part: dict[str, Any]) -> dict[str, Any]:
    fc = part["functionCall"]
    args = orjson.dumps(fc.get("args") or {}).decode()
    call_id = fc.get("id")
    out: dict[str, Any] = {
        "id": call_id if isinstance(call_id, str) and call_id else mint_call_id(),
        "type": "function",
        "function": {"name": fc["name"], "arguments": args},
    }
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        out["extra_content"] = {"google": {"thought_signature": signature}}
    return out


def mint_call_id() -> str:
    """A tool-call id for a Gemini call that came without one: unique across turns."""
    return "call_" + secrets.token_hex(12)


def _finish(reason: Any, has_calls: bool, answered: bool) -> str | None:
    """The OpenAI finish_reason for a Gemini one (None: not finished); raises for a failure."""
    if reason is None:
        return None
    reason = str(reason)
    if reason in _FAILED or (reason not in _FINISH and not answered):
        raise _malformed(f"Gemini ended the answer with finishReason {reason}")
    if has_calls and reason == "STOP":
        return "tool_calls"
    return _FINISH.get(reason, "stop")


def _logprobs(result: Any) -> dict[str, Any] | None:
    """Gemini's `logprobsResult` in OpenAI's `choices[].logprobs` shape."""
    if result is None:
        return None
    if not isinstance(result, dict):
        raise _malformed("logprobsResult is not an object")
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    if not isinstance(chosen, list) or not isinstance(tops, list):
        raise _malformed("logprobsResult is malformed")
    content = []
    for i, token in enumerate(chosen):
        top = tops[i].get("candidates") if i < len(tops) and isinstance(tops[i], dict) else []
        entry = _token_logprob(token)
        entry["top_logprobs"] = [_token_logprob(t) for t in top or []]
        content.append(entry)
    return {"content": content, "refusal": None}


def _token_logprob(token: Any) -> dict[str, Any]:
    if not isinstance(token, dict):
        raise _malformed("a logprobs candidate is not an object")
    text = token.get("token", "")
    logprob = token.get("logProbability", 0.0)
    if not isinstance(text, str) or not _is_number(logprob):
        raise _malformed("a logprobs candidate is malformed")
    return {"token": text, "logprob": float(logprob), "bytes": list(text.encode())}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key, 0)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _malformed(f"usageMetadata.{key} is not a token count")
    return value


def _usage(meta: Any) -> Usage | None:
    """OpenAI-sense usage from `usageMetadata`: thoughts are output (Gemini counts them apart
    from candidatesTokenCount), tool-use prompt tokens are input (apart from promptTokenCount,
    which already includes the cached tokens)."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise _malformed("usageMetadata is not an object")
    if "promptTokenCount" not in meta:
        return None
    thoughts = _count(meta, "thoughtsTokenCount")
    return Usage(
        input_tokens=_count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount"),
        output_tokens=_count(meta, "candidatesTokenCount") + thoughts,
        cached_input_tokens=_count(meta, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


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
        state = _StreamState()
        try:
            async for _event, data in http.iter_sse(self.resp):
                doc = http.loads(data)
                if isinstance(doc, list) and len(doc) == 1:
                    doc = doc[0]
                if not isinstance(doc, dict):
                    raise _malformed("stream payload is not an object")
                if "error" in doc:
                    err = doc["error"]
                    code = err.get("code") if isinstance(err, dict) else None
                    mapped = map_error(code if isinstance(code, int) else 500, doc, None)
                    mapped.code = "stream_error_event"
                    raise mapped
                if self.model is None and isinstance(doc.get("modelVersion"), str):
                    self.model = doc["modelVersion"]
                usage = _usage(doc.get("usageMetadata"))
                if usage is not None:
                    self.usage = usage
                candidates = doc.get("candidates") or []
                if not candidates and not started:
                    _raise_blocked(doc)
                choices, final = state.deltas(candidates)
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
                        reasoning=any("reasoning_content" in c["delta"] for c in choices),
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


@dataclass(slots=True)
class _StreamState:
    """Per candidate index: tool calls seen so far, and whether it carried an answer."""

    calls: dict[int, int] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)

    def deltas(self, candidates: Any) -> tuple[list[dict[str, Any]], bool]:
        if not isinstance(candidates, list):
            raise _malformed("stream candidates are malformed")
        out: list[dict[str, Any]] = []
        final = False
        for pos, cand in enumerate(candidates):
            if not isinstance(cand, dict):
                raise _malformed("stream candidate is malformed")
            index = cand.get("index", pos)
            if not isinstance(index, int) or isinstance(index, bool):
                raise _malformed("stream candidate index is malformed")
            parts = _read_parts(cand)
            delta: dict[str, Any] = {}
            if parts.thoughts:
                delta["reasoning_content"] = "".join(parts.thoughts)
            if parts.texts:
                delta["content"] = "".join(parts.texts)
            for part in parts.calls:
                n = self.calls.get(index, 0)
                self.calls[index] = n + 1
                delta.setdefault("tool_calls", []).append({"index": n, **_tool_call(part)})
            if any(parts.texts) or parts.calls:
                self.answered.add(index)
            finish = _finish(
                cand.get("finishReason"), self.calls.get(index, 0) > 0, index in self.answered
            )
            final = final or finish is not None
            logprobs = _logprobs(cand.get("logprobsResult"))
            if delta or finish is not None:
                choice = {"index": index, "delta": delta, "finish_reason": finish}
                if logprobs is not None:
                    choice["logprobs"] = logprobs
                out.append(choice)
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
