"""Anthropic's Messages API request: checked, and translated to chat completions.

This module owns the request half of the `/v1/messages` frontend (runtime/frontends/
messages.py): `check` holds a decoded body to the official `anthropic` SDK's request types
(`anthropic.types.MessageCreateParams` and the block params it names: `TextBlockParam`,
`ImageBlockParam`, `DocumentBlockParam`, `ToolUseBlockParam`, `ToolResultBlockParam`,
`ThinkingBlockParam`, `RedactedThinkingBlockParam`, `ToolParam`, `ToolChoiceParam`,
`ThinkingConfigParam`, `OutputConfigParam`, `MetadataParam`; anthropic-python 2.x), with 400s
whose `param` is the path in Messages terms (`messages[1].content[0].source`); `translate`
builds the chat-completions request the router plans and translating adapters send. The
scalar checks are runtime/request_check.py's own (same bounds, same messages).

What is decided here (docs/api-messages.md has the user's view):
- `max_tokens` is required (as Anthropic), from 1; `model` at most MAX_MODEL_CHARS.
- Unknown top-level fields pass through to a native candidate (beta fields the SDK sends as
  `extra_body`), bounded in depth like every free-form value; they are left out of the
  translation.
- Server tools (a tool whose `type` is not `custom`: `web_search_*`, `bash_*`,
  `text_editor_*`, `code_execution_*`, ...) and the server-tool blocks of a history are
  `builtin_tools`: only a candidate speaking the Messages API natively serves them.
- Documents: a base64 PDF or a plain-text source becomes a chat `file` part (a data: URL);
  other sources (a URL, a Files API id, content blocks) are a 400 (see UNTRANSLATED_SOURCES).
- Thinking: `thinking` maps to `reasoning_effort` (EFFORT_BY_BUDGET); thinking blocks handed
  back become the assistant message's `reasoning_content` and `thinking_blocks` (the chat
  path's extension, runtime/request_check.py `_extensions`), which the Anthropic adapter
  sends back signed.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from runtime import request_check as rc
from runtime.records import RequestRecord

# thinking.budget_tokens -> reasoning_effort: the largest effort whose budget is reached, on
# the budgets the Anthropic adapter sends for each effort (runtime/adapters/
# anthropic_request.py THINKING_BUDGETS: low 2048, medium 8192, high 16384), so an effort
# survives the round trip. Capped at `high`: the effort every reasoning provider takes.
EFFORT_BY_BUDGET: tuple[tuple[int, str], ...] = ((16384, "high"), (4096, "medium"), (0, "low"))
# Adaptive thinking without `output_config.effort`: OpenAI's own default effort.
ADAPTIVE_EFFORT = "medium"
# output_config.effort (Anthropic) -> reasoning_effort (chat); the gateway's effort names
# (request_check.REASONING_EFFORTS) hold Anthropic's too.
MIN_THINKING_BUDGET = 1024  # Anthropic: budget_tokens >= 1024 and < max_tokens
TOOL_NAME_CHARS = 64
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
THINKING_TYPES = frozenset({"enabled", "disabled", "adaptive", "between_tools"})
THINKING_DISPLAYS = frozenset({"summarized", "omitted"})
EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
SERVICE_TIERS = frozenset({"auto", "standard_only"})
# A tool_result's text for `is_error: true` starts with this (chat tool messages have no
# error flag).
TOOL_ERROR_PREFIX = "Error: "
# Blocks of a history only Anthropic itself can read (its server tools' calls and results):
# they make the request native-only, like the server tools.
SERVER_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "search_result",
    }
)
UNTRANSLATED_SOURCES = "a base64 PDF or a plain-text source"

_USER_BLOCKS = frozenset({"text", "image", "document", "tool_result"})
_ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
_CACHE = "cache_control"


def decode(body: bytes, rec: RequestRecord | None) -> dict[str, Any]:
    """The decoded body (an object); fills the record's `requested_model` (bounded) and
    `stream` first, so they are kept even when the request is refused."""
    return rc.decode(body, rec)


def check(request: dict[str, Any], count_only: bool = False) -> tuple[str, ...]:
    """Check a decoded Messages request (GatewayError 400 on the first fault); the built-in
    tools it needs (server tools and server-tool blocks, by type). `count_only`: the body
    of `count_tokens` (`MessageCountTokensParams`: no `max_tokens`, no `stream`)."""
    builtin: list[str] = []
    for key in ("model", "messages") if count_only else ("model", "max_tokens", "messages"):
        if request.get(key) is None:
            rc._fail(key, "is required" + (": a route name" if key == "model" else ""))
    for key, value in request.items():
        checker = _TOP.get(key)
        if value is None:
            continue  # an optional field sent as null: not set (the required ones are above)
        if checker is not None:
            checker(value, key, request, builtin)
        elif type(value) is dict or type(value) is list:
            rc._bounded(value, rc.quote(key), 2)
    thinking = request.get("thinking")
    if thinking is not None and thinking.get("type") == "enabled" and not count_only:
        budget = thinking["budget_tokens"]
        if budget >= request["max_tokens"]:
            rc._fail(
                "thinking.budget_tokens",
                f"({budget}) must be less than `max_tokens` ({request['max_tokens']})",
            )
    return tuple(dict.fromkeys(builtin))


# -- top-level fields ----------------------------------------------------------------------


def _model(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    rc._model(request, key, value)


def _max_tokens(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    request[key] = rc._int(value, key, 1, rc.MAX_TOKENS_LIMIT)


def _stream(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    rc._bool(value, key)


def _ranged(lo: float, hi: float) -> Any:
    def check(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
        rc._number(value, key, lo, hi)

    return check


def _top_k(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    request[key] = rc._int(value, key, 0, rc.MAX_TOKENS_LIMIT)


def _stop_sequences(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    for j, item in enumerate(rc._array(value, key)):
        rc._str(item, f"{key}[{j}]")


def _metadata(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    meta = rc._object(value, key)
    if meta.get("user_id") is not None:
        rc._str(meta["user_id"], f"{key}.user_id", rc.MAX_USER_CHARS)
    rc._rest(meta, frozenset({"user_id"}), key, 2)


def _system(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    if type(value) is not str:
        _text_blocks(value, key)


def _text_blocks(value: Any, path: str) -> None:
    for j, block in enumerate(rc._array(value, path)):
        p = f"{path}[{j}]"
        rc._enum(rc._object(block, p).get("type"), f"{p}.type", frozenset({"text"}))
        _text(block, p)


def _text(block: dict[str, Any], p: str) -> None:
    rc._str(block.get("text"), f"{p}.text")
    _cache_control(block, p)
    rc._rest(block, frozenset({"type", "text", _CACHE}), p, 5)


def _cache_control(block: dict[str, Any], p: str) -> None:
    if block.get(_CACHE) is not None:
        _cache(block[_CACHE], f"{p}.{_CACHE}")


def _cache(value: Any, path: str) -> None:
    cache = rc._object(value, path)
    rc._enum(cache.get("type"), f"{path}.type", frozenset({"ephemeral"}))
    if cache.get("ttl") is not None:
        rc._enum(cache["ttl"], f"{path}.ttl", frozenset({"5m", "1h"}))
    rc._rest(cache, frozenset({"type", "ttl"}), path, 6)


def _top_cache(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    _cache(value, key)


def _thinking(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    thinking = rc._object(value, key)
    kind = rc._enum(thinking.get("type"), f"{key}.type", THINKING_TYPES)
    if kind == "enabled":
        thinking["budget_tokens"] = rc._int(
            thinking.get("budget_tokens"),
            f"{key}.budget_tokens",
            MIN_THINKING_BUDGET,
            rc.MAX_TOKENS_LIMIT,
        )
    if thinking.get("display") is not None:
        rc._enum(thinking["display"], f"{key}.display", THINKING_DISPLAYS)
    rc._rest(thinking, frozenset({"type", "budget_tokens", "display"}), key, 2)


def _output_config(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    config = rc._object(value, key)
    if config.get("effort") is not None:
        rc._enum(config["effort"], f"{key}.effort", EFFORTS)
    fmt = config.get("format")
    if fmt is not None:
        p = f"{key}.format"
        rc._enum(rc._object(fmt, p).get("type"), f"{p}.type", frozenset({"json_schema"}))
        schema = rc._object(fmt.get("schema"), f"{p}.schema")
        rc._bounded(schema, f"{p}.schema", 3)
        rc._rest(fmt, frozenset({"type", "schema"}), p, 2)
    rc._rest(config, frozenset({"effort", "format"}), key, 2)


def _service_tier(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    rc._enum(value, key, SERVICE_TIERS)


def _short_string(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    rc._str(value, key, rc.MAX_USER_CHARS)


def _tools(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    for j, tool in enumerate(rc._array(value, key)):
        p = f"{key}[{j}]"
        rc._object(tool, p)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            rc._str(kind, f"{p}.type", rc.MAX_NAME_CHARS)
            if tool.get("name") is not None:
                rc._str(tool["name"], f"{p}.name", TOOL_NAME_CHARS)
            rc._bounded(tool, p, 2)
            builtin.append(kind)
            continue
        rc._function_name(tool.get("name"), f"{p}.name")
        if tool.get("description") is not None:
            rc._str(tool["description"], f"{p}.description")
        schema = rc._object(tool.get("input_schema"), f"{p}.input_schema")
        rc._bounded(schema, f"{p}.input_schema", 3)
        if tool.get("strict") is not None:
            rc._bool(tool["strict"], f"{p}.strict")
        _cache_control(tool, p)
        rc._rest(
            tool, frozenset({"type", "name", "description", "input_schema", "strict", _CACHE}), p, 2
        )


def _tool_choice(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    choice = rc._object(value, key)
    kind = rc._enum(choice.get("type"), f"{key}.type", TOOL_CHOICES)
    if kind == "tool":
        rc._str(choice.get("name"), f"{key}.name", TOOL_NAME_CHARS)
    if choice.get("disable_parallel_tool_use") is not None:
        rc._bool(choice["disable_parallel_tool_use"], f"{key}.disable_parallel_tool_use")
    rc._rest(choice, frozenset({"type", "name", "disable_parallel_tool_use"}), key, 2)


# -- messages ------------------------------------------------------------------------------


def _messages(value: Any, key: str, request: dict[str, Any], builtin: list[str]) -> None:
    for i, msg in enumerate(rc._array(value, key, nonempty=True)):
        p = f"messages[{i}]"
        if type(msg) is not dict:
            rc._wrong(p, "an object with a `role` and `content`", msg)
        role = rc._enum(msg.get("role"), f"{p}.role", frozenset({"user", "assistant", "system"}))
        content = msg.get("content")
        if content is None:
            rc._fail(f"{p}.content", "is required: a string or an array of content blocks")
        if type(content) is not str:
            blocks = rc._array(content, f"{p}.content")
            if role == "system":
                _text_blocks(blocks, f"{p}.content")
            else:
                for j, block in enumerate(blocks):
                    _block(block, f"{p}.content[{j}]", role, builtin)
        rc._rest(msg, frozenset({"role", "content"}), p, 2)


def _block(block: Any, p: str, role: str, builtin: list[str]) -> None:
    if type(block) is not dict:
        rc._wrong(p, "a content block (an object with a `type`)", block)
    kind = rc._str(block.get("type"), f"{p}.type", rc.MAX_NAME_CHARS)
    if kind in SERVER_BLOCKS:
        rc._bounded(block, p, 4)
        builtin.append(kind)
        return
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    if kind not in allowed:
        rc._fail(
            f"{p}.type",
            f"is '{rc.quote(kind)}'; a {role} message takes blocks of type "
            + ", ".join(sorted(allowed)),
        )
    if kind == "text":
        _text(block, p)
        return
    _cache_control(block, p)
    if kind == "image":
        _image(block, p)
    elif kind == "document":
        _document(block, p)
    elif kind == "tool_use":
        rc._str(block.get("id"), f"{p}.id", rc.MAX_ID_CHARS)
        rc._str(block.get("name"), f"{p}.name", TOOL_NAME_CHARS)
        rc._object(block.get("input"), f"{p}.input")
    elif kind == "tool_result":
        rc._str(block.get("tool_use_id"), f"{p}.tool_use_id", rc.MAX_ID_CHARS)
        if block.get("is_error") is not None:
            rc._bool(block["is_error"], f"{p}.is_error")
        content = block.get("content")
        if content is not None and type(content) is not str:
            for k, part in enumerate(rc._array(content, f"{p}.content")):
                q = f"{p}.content[{k}]"
                sub = rc._enum(
                    rc._object(part, q).get("type"), f"{q}.type", frozenset({"text", "image"})
                )
                if sub == "text":
                    _text(part, q)
                else:
                    _cache_control(part, q)
                    _image(part, q)
    elif kind == "thinking":
        rc._str(block.get("thinking"), f"{p}.thinking")
        rc._str(block.get("signature"), f"{p}.signature")
    elif kind == "redacted_thinking":
        rc._str(block.get("data"), f"{p}.data")
    rc._bounded(block, p, 4)


def _image(block: dict[str, Any], p: str) -> None:
    source = rc._object(block.get("source"), f"{p}.source")
    kind = rc._enum(source.get("type"), f"{p}.source.type", frozenset({"base64", "url", "file"}))
    if kind == "base64":
        rc._enum(source.get("media_type"), f"{p}.source.media_type", IMAGE_TYPES)
        rc._str(source.get("data"), f"{p}.source.data")
    elif kind == "url":
        url = rc._str(source.get("url"), f"{p}.source.url")
        if not url.startswith(("http://", "https://")):
            rc._fail(f"{p}.source.url", "must be an http(s) URL")
    else:
        rc._fail(
            f"{p}.source",
            "is a Files API image (`file`): the gateway takes images as `base64` or `url`",
        )


def _document(block: dict[str, Any], p: str) -> None:
    source = rc._object(block.get("source"), f"{p}.source")
    kind = rc._str(source.get("type"), f"{p}.source.type")
    media = source.get("media_type")
    pdf = kind == "base64" and media == "application/pdf"
    if pdf or (kind == "text" and media in (None, "text/plain")):
        rc._str(source.get("data"), f"{p}.source.data")
    else:
        rc._fail(
            f"{p}.source",
            f"is a {rc.quote(str(kind))} document source: the gateway takes documents with "
            f"{UNTRANSLATED_SOURCES}",
        )
    if block.get("title") is not None:
        rc._str(block["title"], f"{p}.title")


_TOP: dict[str, Any] = {
    "model": _model,
    "max_tokens": _max_tokens,
    "messages": _messages,
    "system": _system,
    "stream": _stream,
    "temperature": _ranged(0, 1),
    "top_p": _ranged(0, 1),
    "top_k": _top_k,
    "stop_sequences": _stop_sequences,
    "metadata": _metadata,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "thinking": _thinking,
    "output_config": _output_config,
    "service_tier": _service_tier,
    "inference_geo": _short_string,
    "user_profile_id": _short_string,
    "workspace_id": _short_string,
    "cache_control": _top_cache,
}


# -- translation ---------------------------------------------------------------------------


def translate(request: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions request of a checked Messages request."""
    out: dict[str, Any] = {"model": request["model"]}
    messages: list[dict[str, Any]] = []
    system = request.get("system")
    if system is not None:
        messages.append(_system_message(system))
    for msg in request["messages"]:
        role, content = msg["role"], msg["content"]
        if role == "system":
            messages.append(_system_message(content))
        elif role == "user":
            messages.extend(_user_messages(content))
        else:
            messages.append(_assistant_message(content))
    out["messages"] = messages
    if request.get("max_tokens") is not None:
        out["max_tokens"] = request["max_tokens"]
    for key in ("temperature", "top_p", "stream"):
        if request.get(key) is not None:
            out[key] = request[key]
    if request.get("stop_sequences"):
        out["stop"] = list(request["stop_sequences"])
    user = (request.get("metadata") or {}).get("user_id")
    if user is not None:
        out["user"] = user
    tools = [_tool(t) for t in request.get("tools") or () if t.get("type") in (None, "custom")]
    if tools:
        out["tools"] = tools
        choice = request.get("tool_choice")
        if choice is not None:
            out["tool_choice"] = _tool_choice_of(choice)
            if choice.get("disable_parallel_tool_use") is True:
                out["parallel_tool_calls"] = False
    effort = reasoning_effort(request.get("thinking"), request.get("output_config"))
    if effort is not None:
        out["reasoning_effort"] = effort
    fmt = (request.get("output_config") or {}).get("format")
    if fmt is not None:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True},
        }
    return out


def reasoning_effort(thinking: Any, output_config: Any) -> str | None:
    """The chat `reasoning_effort` of Anthropic's `thinking` (and `output_config.effort`):
    enabled -> by budget (EFFORT_BY_BUDGET); adaptive -> the given effort or ADAPTIVE_EFFORT;
    disabled, between_tools or absent -> None (the candidate's default)."""
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking["budget_tokens"]
        return next(effort for floor, effort in EFFORT_BY_BUDGET if budget >= floor)
    if kind == "adaptive":
        given = (output_config or {}).get("effort")
        return str(given) if given is not None else ADAPTIVE_EFFORT
    return None


def _text_part(block: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": block["text"]}
    if block.get(_CACHE) is not None:
        part[_CACHE] = block[_CACHE]
    return part


def _system_message(content: Any) -> dict[str, Any]:
    if type(content) is str:
        return {"role": "system", "content": content}
    if any(b.get(_CACHE) is not None for b in content):
        return {"role": "system", "content": [_text_part(b) for b in content]}
    return {"role": "system", "content": "\n\n".join(b["text"] for b in content)}


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block["source"]
    if source["type"] == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
    else:
        url = source["url"]
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if block.get(_CACHE) is not None:
        part[_CACHE] = block[_CACHE]
    return part


def _file_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block["source"]
    if source["type"] == "base64":
        data = f"data:application/pdf;base64,{source['data']}"
        name = "document.pdf"
    else:
        encoded = base64.b64encode(source["data"].encode()).decode()
        data = f"data:text/plain;base64,{encoded}"
        name = "document.txt"
    title = block.get("title")
    file = {"file_data": data, "filename": title if isinstance(title, str) and title else name}
    part: dict[str, Any] = {"type": "file", "file": file}
    if block.get(_CACHE) is not None:
        part[_CACHE] = block[_CACHE]
    return part


def _user_messages(content: Any) -> list[dict[str, Any]]:
    """One user turn: its tool results as `tool` messages first (chat wants them right after
    the assistant's calls), then the rest as one user message, with the images of the tool
    results (a chat tool message holds text only)."""
    if type(content) is str:
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block["type"]
        if kind == "text":
            parts.append(_text_part(block))
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "document":
            parts.append(_file_part(block))
        elif kind == "tool_result":
            message, images = _tool_message(block)
            out.append(message)
            if images:
                parts.append(
                    {"type": "text", "text": f"(images of tool result {block['tool_use_id']})"}
                )
                parts.extend(images)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _tool_message(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif type(content) is str:
        text = content
    else:
        text = "".join(p["text"] for p in content if p["type"] == "text")
        images = [_image_part(p) for p in content if p["type"] == "image"]
    if block.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}, images


def _assistant_message(content: Any) -> dict[str, Any]:
    if type(content) is str:
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for block in content:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": orjson.dumps(block["input"]).decode(),
                    },
                }
            )
        elif kind == "thinking":
            thinking.append(
                {"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]}
            )
        elif kind == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": block["data"]})
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    if thinking:
        msg["reasoning_content"] = "".join(b.get("thinking", "") for b in thinking)
        msg["thinking_blocks"] = thinking
    return msg


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description") is not None:
        fn["description"] = tool["description"]
    fn["parameters"] = tool["input_schema"]
    if tool.get("strict") is not None:
        fn["strict"] = tool["strict"]
    out: dict[str, Any] = {"type": "function", "function": fn}
    if tool.get(_CACHE) is not None:
        out[_CACHE] = tool[_CACHE]
    return out


def _tool_choice_of(choice: dict[str, Any]) -> Any:
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]
