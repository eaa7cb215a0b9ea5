"""Anthropic's Messages API (POST /v1/messages) behind the gateway's chat-completions format.

This module owns the mapping both ways. Request: system/developer messages become the
top-level `system` (a list of text blocks when a part carries `cache_control`); user,
assistant and tool messages become content-block messages (consecutive same-role messages
merged, tool results as `tool_result` blocks of a user message); function tools (with
`strict`) and tool_choice map to Anthropic's; `reasoning_effort` becomes a `thinking` budget;
a strict `json_schema` response format becomes `output_config.format`. What Anthropic cannot
take as sent is mapped or dropped with a line in `call.notes`, and a request it cannot serve
at all (`n > 1`) raises `Unservable`. The rules and their sources are in docs/runtime.md,
section "Anthropic".

Response: text and tool_use blocks become the OpenAI message; thinking blocks become
`reasoning_content` plus `thinking_blocks` (with their signatures); usage is reported in
OpenAI's sense with the cache parts apart. A stream is complete only after `message_stop`; an
`error` event raises the mapped class; a payload of the wrong shape raises
`upstream_malformed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from runtime import tokens
from runtime.adapters import http
from runtime.adapters.base import Call, Chunk, Completion, FlushHook, Usage
from runtime.adapters.transport_base import Headers, HTTPResponse, HTTPTransport
from runtime.config import ProviderConfig
from runtime.errors import ErrorClass, Unservable, UpstreamError
from runtime.vocabulary import DEFAULT_BASE_URLS

DEFAULT_BASE_URL = DEFAULT_BASE_URLS["anthropic"]
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

# reasoning_effort -> thinking.budget_tokens (Anthropic: at least 1024, below max_tokens).
THINKING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
}
MIN_THINKING_BUDGET = 1024
# With thinking on, Anthropic takes top_p only in this range (and no temperature or top_k).
THINKING_TOP_P = (0.95, 1.0)
# The user turn sent when a request holds only system/developer messages (Anthropic refuses
# `messages: []` and empty text blocks).
SYSTEM_ONLY_USER_TURN = "."
# OpenAI parameters the Messages API has no equivalent for: dropped with a note.
UNMAPPED = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)

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
    """The Messages API body for a chat-completions request.

    Appends to `call.notes` what it mapped or dropped; raises `Unservable` when Anthropic
    cannot serve the request at all and bad_request when a field cannot be mapped."""
    req = call.request
    notes = call.notes
    if int(req.get("n") or 1) > 1:
        raise Unservable("n > 1: Anthropic answers one choice")
    system, messages = map_messages(req.get("messages") or [], notes)
    if not messages and system:
        messages = [{"role": "user", "content": [{"type": "text", "text": SYSTEM_ONLY_USER_TURN}]}]
        notes.append(
            f"added the user turn {SYSTEM_ONLY_USER_TURN!r}: the request holds only system "
            "messages and Anthropic needs at least one user turn"
        )
    max_tokens, client_max, cap = _max_tokens(call, notes)
    body: dict[str, Any] = {"model": call.model.upstream, "max_tokens": max_tokens}
    body["messages"] = messages
    output_config, instruction = _response_format(req.get("response_format"))
    if instruction:
        system.append([{"type": "text", "text": instruction}])
    if system:
        body["system"] = _system(system)
    tools = []
    for t in req.get("tools") or ():
        if t.get("type") == "function":
            tools.append(_tool(t))
        else:
            notes.append(f"dropped a tool of type {t.get('type')!r}: Anthropic takes functions")
    choice = None
    if tools:
        body["tools"] = tools
        choice = _tool_choice(req.get("tool_choice"), req.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    thinking = _thinking(call, choice, notes)
    if thinking is not None:
        body["thinking"] = thinking
        budget = thinking.get("budget_tokens")
        if thinking.get("type") == "enabled" and isinstance(budget, int):
            _fit_budget(body, thinking, client_max, cap, notes)
            if "thinking" not in body:
                thinking = None
    thinking_on = thinking is not None and thinking.get("type") != "disabled"
    _sampling(req, body, thinking_on, notes)
    stop = _stop_sequences(req.get("stop"), notes)
    if stop:
        body["stop_sequences"] = stop
    if output_config:
        body["output_config"] = output_config
    if req.get("user"):
        body["metadata"] = {"user_id": str(req["user"])}
    dropped = [k for k in UNMAPPED if req.get(k) not in (None, False)]
    if dropped:
        names = ", ".join(f"`{k}`" for k in dropped)
        notes.append(f"dropped {names}: Anthropic has no equivalent")
    if stream:
        body["stream"] = True
    return body


def _max_tokens(call: Call, notes: list[str]) -> tuple[int, bool, int]:
    """(max_tokens to send, whether the client set it, the most that fits).

    The most that fits is the model's output limit, but no more than the context window
    minus the estimated prompt (runtime/tokens.py, the router's estimate), and at least 1.
    `max_completion_tokens` supersedes `max_tokens` (OpenAI deprecated the latter for it)."""
    req = call.request
    limit = call.model.max_output_tokens or DEFAULT_MAX_TOKENS
    fits = max(1, min(limit, call.model.context_window - tokens.prompt_tokens(req)))
    newer, older = req.get("max_completion_tokens"), req.get("max_tokens")
    if newer is not None:
        if older is not None and int(older) != int(newer):
            notes.append(
                f"sent `max_completion_tokens` ({int(newer)}) as max_tokens, not `max_tokens` "
                f"({int(older)}): OpenAI's newer field supersedes it"
            )
        return int(newer), True, fits
    if older is not None:
        return int(older), True, fits
    if fits < limit:
        notes.append(
            f"sent max_tokens {fits}, not the model's {limit}: what fits the context window "
            "after the estimated prompt"
        )
    return fits, False, fits


def _thinking(call: Call, choice: dict[str, Any] | None, notes: list[str]) -> dict[str, Any] | None:
    """The `thinking` object: the client's own, or one built from `reasoning_effort`."""
    req = call.request
    native, effort = req.get("thinking"), req.get("reasoning_effort")
    thinking: dict[str, Any]
    if isinstance(native, dict):
        thinking = dict(native)
        if effort is not None:
            notes.append("ignored `reasoning_effort`: the request's own `thinking` is sent")
    elif effort is None or effort == "none":
        return None
    elif "reasoning" not in call.model.capabilities:
        notes.append(f"dropped `reasoning_effort`: model {call.model.name!r} does not reason")
        return None
    elif effort not in THINKING_BUDGETS:
        notes.append(f"dropped `reasoning_effort` {effort!r}: not an effort Anthropic maps")
        return None
    else:
        thinking = {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}
    if thinking.get("type") != "disabled" and choice and choice.get("type") in ("any", "tool"):
        notes.append(
            "dropped thinking: Anthropic takes only tool_choice auto or none with thinking, "
            "and the request forces a tool"
        )
        return None
    return thinking


def _fit_budget(
    body: dict[str, Any], thinking: dict[str, Any], client_max: bool, fits: int, notes: list[str]
) -> None:
    """Make max_tokens exceed the thinking budget (Anthropic counts thinking in max_tokens):
    raise max_tokens within what fits, else lower the budget, else drop thinking."""
    budget = int(thinking["budget_tokens"])
    max_tokens = int(body["max_tokens"])
    if max_tokens > budget:
        return
    raised = min(fits, budget + (max_tokens if client_max else MIN_THINKING_BUDGET))
    if raised > budget:
        body["max_tokens"] = raised
        notes.append(
            f"raised max_tokens from {max_tokens} to {raised}: the thinking budget ({budget}) "
            "counts toward it and must be below it"
        )
        return
    body["max_tokens"] = max_tokens = max(max_tokens, raised)
    if max_tokens - 1 >= MIN_THINKING_BUDGET:
        thinking["budget_tokens"] = max_tokens - 1
        notes.append(f"lowered the thinking budget from {budget} to {max_tokens - 1} to fit")
        return
    del body["thinking"]
    notes.append(
        f"dropped thinking: max_tokens {max_tokens} leaves no room for Anthropic's smallest "
        f"budget ({MIN_THINKING_BUDGET})"
    )


def _sampling(req: dict[str, Any], body: dict[str, Any], thinking: bool, notes: list[str]) -> None:
    """temperature / top_p as Anthropic takes them: one of the two (current models refuse
    both); with thinking, no temperature and top_p only within 0.95..1."""
    temperature, top_p = req.get("temperature"), req.get("top_p")
    if thinking:
        if temperature is not None:
            notes.append("dropped `temperature`: Anthropic refuses it with thinking")
        lo, hi = THINKING_TOP_P
        if top_p is not None and lo <= float(top_p) <= hi:
            body["top_p"] = float(top_p)
        elif top_p is not None:
            notes.append(f"dropped `top_p` {top_p}: with thinking Anthropic takes {lo} to {hi}")
        return
    if temperature is not None:
        value = min(max(float(temperature), 0.0), 1.0)
        if value != float(temperature):
            notes.append(f"clamped `temperature` {temperature} to {value}: Anthropic takes 0 to 1")
        body["temperature"] = value
        if top_p is not None:
            notes.append("dropped `top_p`: Claude refuses temperature and top_p together")
    elif top_p is not None:
        body["top_p"] = float(top_p)


def _stop_sequences(stop: Any, notes: list[str]) -> list[str]:
    """The stop sequences Anthropic takes: it refuses whitespace-only ones."""
    given = [stop] if isinstance(stop, str) else list(stop or ())
    kept = [s for s in given if isinstance(s, str) and s.strip()]
    if len(kept) < len(given):
        dropped = [s for s in given if s not in kept]
        notes.append(f"dropped stop sequences {dropped!r}: Anthropic refuses whitespace-only ones")
    return kept


def map_messages(
    messages: list[dict[str, Any]], notes: list[str] | None = None
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """(system text blocks per system message, Anthropic messages) of OpenAI chat messages."""
    notes = notes if notes is not None else []
    system: list[list[dict[str, Any]]] = []
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            blocks = _text_blocks(msg.get("content"))
            if blocks:
                system.append(blocks)
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks(msg, notes)
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


def _system(system: list[list[dict[str, Any]]]) -> str | list[dict[str, Any]]:
    """The `system` value: a string, or text blocks when one of them carries cache_control."""
    if any("cache_control" in b for blocks in system for b in blocks):
        return [b for blocks in system for b in blocks]
    return "\n\n".join("".join(b["text"] for b in blocks) for blocks in system)


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    """Text blocks of a message's content (a string or parts), cache_control kept, empty
    texts skipped (Anthropic refuses them)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        if part.get("type") == "text" and part.get("text"):
            blocks.append(_with_cache({"type": "text", "text": str(part["text"])}, part))
    return blocks


def _with_cache(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    if part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return block


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            if not part.get("text"):
                continue
            block: dict[str, Any] = {"type": "text", "text": str(part["text"])}
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            block = {"type": "image", "source": _source(url)}
        elif kind == "file":
            data = (part.get("file") or {}).get("file_data", "")
            block = {"type": "document", "source": _source(data)}
        else:
            raise _bad(f"content part {kind!r} is not supported by Anthropic")
        blocks.append(_with_cache(block, part))
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


def _assistant_blocks(msg: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """Thinking blocks first (Anthropic wants them before text and tool_use), then text, then
    tool calls (only id, name and arguments: gateway extras such as `extra_content` stay)."""
    blocks = _thinking_blocks(msg, notes)
    blocks.extend(_text_blocks(msg.get("content")))
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


def _thinking_blocks(msg: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """An assistant turn's `thinking_blocks`, as Anthropic needs them back (signed)."""
    out: list[dict[str, Any]] = []
    given = msg.get("thinking_blocks") or ()
    for b in given:
        if not isinstance(b, dict):
            continue
        if (
            b.get("type") == "thinking"
            and isinstance(b.get("thinking"), str)
            and isinstance(b.get("signature"), str)
            and b["signature"]
        ):
            out.append({"type": "thinking", "thinking": b["thinking"], "signature": b["signature"]})
        elif b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str):
            out.append({"type": "redacted_thinking", "data": b["data"]})
    if len(out) < len(given):
        notes.append(
            f"dropped {len(given) - len(out)} thinking block(s) without a signature (or data)"
        )
    if not out and msg.get("reasoning_content"):
        notes.append(
            "dropped `reasoning_content` of an assistant turn: no signed thinking block to send"
        )
    return out


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    content = msg.get("content")
    result: Any = (
        content
        if isinstance(content, str)
        else [
            _with_cache({"type": "text", "text": str(p.get("text", ""))}, p)
            for p in content or ()
            if p.get("type") == "text"
        ]
    )
    return {"type": "tool_result", "tool_use_id": msg.get("tool_call_id", ""), "content": result}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    schema = fn.get("parameters") or {"type": "object", "properties": {}}
    out: dict[str, Any] = {"name": fn.get("name", "")}
    if fn.get("description"):
        out["description"] = fn["description"]
    if fn.get("strict") is True:
        out["input_schema"] = strict_schema(schema)
        out["strict"] = True
    else:
        out["input_schema"] = schema
    if tool.get("cache_control") is not None:
        out["cache_control"] = tool["cache_control"]
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


def _response_format(fmt: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(output_config, system instruction) for a response_format: a strict json_schema goes
    to the API's structured outputs; json_object and a non-strict schema (best effort at
    OpenAI too) become an instruction (Anthropic has no JSON mode)."""
    if not isinstance(fmt, dict):
        return None, None
    if fmt.get("type") == "json_object":
        return (
            None,
            "Respond only with a single valid JSON object, with no text before or after it.",
        )
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object", "properties": {}}
        if spec.get("strict") is True:
            return {"format": {"type": "json_schema", "schema": strict_schema(schema)}}, None
        text = orjson.dumps(schema).decode()
        return None, (
            "Respond only with a single valid JSON value, with no text before or after it, "
            f"that conforms to this JSON Schema: {text}"
        )
    return None, None


_STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)


def strict_schema(schema: Any) -> Any:
    """A JSON Schema reduced to what Anthropic's structured outputs (and strict tools) take,
    by the rule of its SDK's `transform_schema`: objects closed (`additionalProperties:
    false`), `oneOf` as `anyOf`, string formats and `minItems` only where supported; any other
    keyword is kept as text in the description so the model can still follow it."""
    if not isinstance(schema, dict):
        return schema
    src = dict(schema)
    out: dict[str, Any] = {}
    defs = src.pop("$defs", None)
    if isinstance(defs, dict):
        out["$defs"] = {name: strict_schema(d) for name, d in defs.items()}
    if "$ref" in src:
        out["$ref"] = src.pop("$ref")
        if "description" in src:
            out["description"] = src["description"]
        return out
    kind = src.pop("type", None)
    any_of, one_of = src.pop("anyOf", None), src.pop("oneOf", None)
    variants = any_of if isinstance(any_of, list) else one_of
    all_of = src.pop("allOf", None)
    literal = False
    if isinstance(src.get("enum"), list) and src["enum"]:
        out["enum"] = src.pop("enum")
        literal = True
    if "const" in src:
        out["const"] = src.pop("const")
        literal = True
    if isinstance(variants, list):
        out["anyOf"] = [strict_schema(v) for v in variants]
    elif isinstance(all_of, list):
        out["allOf"] = [strict_schema(v) for v in all_of]
    elif not literal and kind is not None:
        out["type"] = kind
    elif not literal:
        return schema  # no type to hold to: sent as given
    for key in ("description", "title"):
        if key in src:
            out[key] = src.pop(key)
    if kind == "object" and not literal:
        props = src.pop("properties", None) or {}
        out["properties"] = {k: strict_schema(v) for k, v in props.items()}
        src.pop("additionalProperties", None)
        out["additionalProperties"] = False
        if "required" in src:
            out["required"] = src.pop("required")
    elif kind == "string" and src.get("format") in _STRING_FORMATS:
        out["format"] = src.pop("format")
    elif kind == "array":
        if "items" in src:
            out["items"] = strict_schema(src.pop("items"))
        if src.get("minItems") in (0, 1):
            out["minItems"] = src.pop("minItems")
    if src:
        rest = ", ".join(f"{k}: {orjson.dumps(v).decode()}" for k, v in src.items())
        described = out.get("description")
        out["description"] = (f"{described}\n\n" if described else "") + "{" + rest + "}"
    return out


def _bad(message: str) -> UpstreamError:
    return UpstreamError("bad_request", message, code="unsupported_by_provider")


# --- response ------------------------------------------------------------------------------


def parse_completion(doc: Any) -> Completion:
    """A Messages API response -> Completion (text joined, tool_use -> tool_calls, thinking ->
    reasoning_content + thinking_blocks); a body of the wrong shape is `upstream_malformed`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
        raise _malformed("response has no content list")
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for block in doc["content"]:
        if not isinstance(block, dict):
            raise _malformed("a content block of the response is not an object")
        kind = block.get("type")
        if kind == "text":
            texts.append(_string(block.get("text"), "text"))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": _string(block.get("id"), "tool_use id"),
                    "type": "function",
                    "function": {
                        "name": _string(block.get("name"), "tool_use name"),
                        "arguments": orjson.dumps(_object(block.get("input"))).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(_thinking_block(block))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking:
        message["reasoning_content"] = "".join(b.get("thinking", "") for b in thinking)
        message["thinking_blocks"] = thinking
    stop = doc.get("stop_reason")
    return Completion(
        message=message,
        finish_reason=STOP_REASONS.get(stop, "stop") if stop else None,
        usage=_usage(doc.get("usage")),
        model=doc.get("model"),
    )


def _thinking_block(block: dict[str, Any]) -> dict[str, Any]:
    """A thinking or redacted_thinking block as the client gets it (and sends it back)."""
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": _string(block.get("data"), "data")}
    return {
        "type": "thinking",
        "thinking": _string(block.get("thinking"), "thinking"),
        "signature": _string(block.get("signature"), "signature"),
    }


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(f"{what} is not a string")
    return value


def _object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed("tool_use input is not an object")
    return value


def _count(u: dict[str, Any], key: str) -> int:
    value = u.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _malformed(f"usage {key} is not a count: {value!r}")
    return value


def _usage(u: Any) -> Usage | None:
    """Anthropic's usage in OpenAI's sense: input counts fresh, cache-read and cache-written
    tokens (Anthropic reports the three apart); the parts stay apart for pricing."""
    if u is None:
        return None
    if not isinstance(u, dict):
        raise _malformed("usage is not an object")
    if "input_tokens" not in u and "output_tokens" not in u:
        return None
    read = _count(u, "cache_read_input_tokens")
    written = _count(u, "cache_creation_input_tokens")
    ttl = u.get("cache_creation")
    written_1h = 0
    if ttl is not None:
        if not isinstance(ttl, dict):
            raise _malformed("usage cache_creation is not an object")
        written_1h = _count(ttl, "ephemeral_1h_input_tokens")
        written = max(written, _count(ttl, "ephemeral_5m_input_tokens") + written_1h)
    output = _count(u, "output_tokens")
    details = u.get("output_tokens_details")
    thinking = _count(details, "thinking_tokens") if isinstance(details, dict) else 0
    return Usage(
        _count(u, "input_tokens") + read + written,
        output,
        cached_input_tokens=read,
        cache_write_tokens=written - written_1h,
        cache_write_1h_tokens=written_1h,
        reasoning_tokens=min(thinking, output),
    )


class AnthropicStream:
    """Anthropic's SSE events as OpenAI chunks; complete only after `message_stop`."""

    def __init__(self, resp: HTTPResponse) -> None:
        self.resp = resp
        self.usage: Usage | None = None
        self.model: str | None = None
        self._usage: dict[str, Any] = {}  # usage fields so far (message_start, message_delta)
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._thinking: dict[int, dict[str, Any]] = {}  # open thinking blocks by index

    def watch_idle(self, hook: FlushHook) -> bool:
        """The transport awaits `hook` before it waits for the network."""
        self.resp.before_wait = hook
        return True

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        done = False
        async for _event, data in http.iter_sse(self.resp):
            doc = http.loads(data)
            if not isinstance(doc, dict):
                raise _malformed("stream payload is not an object")
            kind = doc.get("type")
            if kind == "message_stop":
                done = True
                break
            if kind == "error":
                raise stream_error(doc)
            try:
                chunks = self._chunks(kind, doc)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise _malformed(f"stream event {kind!r} of an unexpected shape: {exc}") from None
            for chunk in chunks:
                yield chunk
        if not done:
            raise UpstreamError(
                "server_error", "stream ended without message_stop", code="stream_truncated"
            )

    def _chunks(self, kind: Any, doc: dict[str, Any]) -> list[Chunk]:
        if kind == "message_start":
            msg = doc["message"]
            self.model = msg.get("model")
            self._add_usage(msg.get("usage"))
            return [Chunk(choices=[_choice({"role": "assistant", "content": ""})], content=False)]
        if kind == "content_block_start":
            return self._block_start(doc.get("index", 0), doc["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(doc.get("index", 0), doc["delta"])
        if kind == "content_block_stop":
            block = self._thinking.pop(doc.get("index", 0), None)
            if block is None:
                return []
            return [_reasoning({"thinking_blocks": [block]})]
        if kind == "message_delta":
            self._add_usage(doc.get("usage"))
            self.usage = _usage(self._usage) if self._usage else None
            stop = doc["delta"].get("stop_reason")
            finish = STOP_REASONS.get(stop, "stop") if stop else None
            chunks = [Chunk(choices=[_choice({}, finish)], content=False)]
            if self.usage is not None:
                chunks.append(Chunk(choices=[], content=False, usage=self.usage))
            return chunks
        return []  # ping, and event types added later

    def _add_usage(self, u: Any) -> None:
        if u is None:
            return
        if not isinstance(u, dict):
            raise _malformed("usage is not an object")
        self._usage.update((k, v) for k, v in u.items() if v is not None)
        _usage(self._usage)  # a field of the wrong type fails here, not at the end

    def _block_start(self, index: int, block: dict[str, Any]) -> list[Chunk]:
        kind = block["type"]
        if kind == "tool_use":
            n = self._tools[index] = len(self._tools)
            given = _object(block.get("input"))
            call = {
                "index": n,
                "id": _string(block.get("id"), "tool_use id"),
                "type": "function",
                "function": {
                    "name": _string(block.get("name"), "tool_use name"),
                    "arguments": orjson.dumps(given).decode() if given else "",
                },
            }
            return [Chunk(choices=[_choice({"tool_calls": [call]})], content=True)]
        if kind in ("thinking", "redacted_thinking"):
            self._thinking[index] = _thinking_block(block)
            text = self._thinking[index].get("thinking")
            return [_reasoning({"reasoning_content": text})] if text else []
        if kind == "text" and block.get("text"):
            text = _string(block["text"], "text")
            return [Chunk(choices=[_choice({"content": text})], content=True)]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[Chunk]:
        kind = delta["type"]
        if kind == "text_delta" and delta.get("text"):
            text = _string(delta["text"], "text")
            return [Chunk(choices=[_choice({"content": text})], content=True)]
        if kind == "input_json_delta" and delta.get("partial_json"):
            n = self._tools.get(index, 0)
            args = _string(delta["partial_json"], "partial_json")
            call = {"index": n, "function": {"arguments": args}}
            return [Chunk(choices=[_choice({"tool_calls": [call]})], content=True)]
        if kind == "thinking_delta":
            text = _string(delta.get("thinking"), "thinking")
            block = self._thinking.setdefault(
                index, {"type": "thinking", "thinking": "", "signature": ""}
            )
            block["thinking"] += text
            return [_reasoning({"reasoning_content": text})] if text else []
        if kind == "signature_delta":
            block = self._thinking.setdefault(
                index, {"type": "thinking", "thinking": "", "signature": ""}
            )
            block["signature"] += _string(delta.get("signature"), "signature")
        return []

    async def aclose(self) -> None:
        """Release the connection."""
        self.resp.release()


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _reasoning(delta: dict[str, Any]) -> Chunk:
    """A chunk of thinking: progress for the first-byte timeout, not content."""
    return Chunk(choices=[_choice(delta)], content=False, reasoning=True)


def _malformed(message: str) -> UpstreamError:
    return UpstreamError("server_error", message, code="upstream_malformed")


# --- errors --------------------------------------------------------------------------------


def _classify(status: int | None, etype: Any, message: str) -> ErrorClass:
    if etype == "invalid_request_error" or (status == 400 and etype is None):
        low = message.lower()
        if any(p in low for p in _CONTEXT_PHRASES):
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
