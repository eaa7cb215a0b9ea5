"""Anthropic's Messages API request body, from a chat-completions request.

This module owns the request half of the Anthropic adapter (runtime/adapters/anthropic.py):
system/developer messages become the top-level `system` (a list of text blocks when a part
carries `cache_control`); user, assistant and tool messages become content-block messages
(consecutive same-role messages merged, tool results as `tool_result` blocks of a user
message, thinking blocks sent back first); function tools (with `strict`) and tool_choice map
to Anthropic's; `reasoning_effort` becomes adaptive thinking with `output_config.effort` on
Claude 4.6 and later (and unversioned ids), a `thinking` budget on earlier models; a strict
`json_schema` response format becomes `output_config.format`; the client's own `thinking` and
`output_config` objects are sent as given; sampling parameters are dropped (the SDK type has
none). The body holds only what the SDK's `MessageCreateParams` declares. What Anthropic
cannot take as sent is mapped or dropped with a line in `call.notes`; a request it cannot
serve at all (`n > 1`, audio, an image or file type it cannot read) raises `Unservable`.
The rules and their sources: docs/runtime.md, section "Anthropic".
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson

from runtime import tokens
from runtime.adapters.base import Call
from runtime.errors import Unservable, UpstreamError

DEFAULT_MAX_TOKENS = 4096

# reasoning_effort -> thinking.budget_tokens, for models before adaptive thinking (Claude 4.5
# and earlier; Anthropic: at least 1024, below max_tokens).
THINKING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}
# reasoning_effort -> output_config.effort with `thinking: {type: "adaptive"}` (Claude 4.6 and
# later, and model ids without a version). Anthropic's lowest effort is `low`.
EFFORTS: dict[str, str] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
}
# The first Claude version with adaptive thinking, and the first that takes effort `xhigh`.
ADAPTIVE_SINCE = (4, 6)
XHIGH_SINCE = (4, 7)
MIN_THINKING_BUDGET = 1024
# Sampling parameters: not in the SDK's `MessageCreateParams`, refused by current models.
SAMPLING = ("temperature", "top_p", "top_k")
# The user turn sent when a request holds only system/developer messages (Anthropic refuses
# `messages: []` and empty text blocks).
SYSTEM_ONLY_USER_TURN = "."
# The base64 image types Anthropic reads (SDK `Base64ImageSourceParam.media_type`).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
# OpenAI parameters the Messages API has no equivalent for: dropped with a note.
UNMAPPED = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "verbosity",
    "web_search_options",
    "moderation",
)


def build_request(call: Call, stream: bool = False) -> dict[str, Any]:
    """The Messages API body for a chat-completions request.

    Appends to `call.notes` what it mapped or dropped; raises `Unservable` when Anthropic
    cannot serve the request at all and bad_request when a field cannot be mapped."""
    req = call.request
    notes = call.notes
    if int(req.get("n") or 1) > 1:
        raise Unservable("n > 1: Anthropic answers one choice")
    if req.get("audio") or "audio" in (req.get("modalities") or ()):
        raise Unservable("audio output: Anthropic answers in text")
    if req.get("functions"):
        raise Unservable("legacy `functions`: Anthropic takes them only as `tools`")
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
    fmt_config, instruction = _response_format(req.get("response_format"))
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
    thinking, effort = _thinking(call, choice, messages, notes)
    if thinking is not None:
        body["thinking"] = thinking
        budget = thinking.get("budget_tokens")
        if thinking.get("type") == "enabled" and isinstance(budget, int):
            _fit_budget(body, thinking, client_max, cap, notes)
            if "thinking" not in body:
                thinking = None
    _sampling(req, notes)
    stop = _stop_sequences(req.get("stop"), notes)
    if stop:
        body["stop_sequences"] = stop
    output_config = _output_config(req.get("output_config"), fmt_config, effort, notes)
    if output_config:
        body["output_config"] = output_config
    user = req.get("safety_identifier") or req.get("user")
    if user:
        body["metadata"] = {"user_id": str(user)}
    dropped = [k for k in UNMAPPED if req.get(k) not in (None, False, {}, [], "")]
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


def claude_version(upstream: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model id, None when it names no version.

    Ids put the numbers after the family (`claude-sonnet-4-6`, `claude-haiku-4-5-20251001`,
    Bedrock's `anthropic.claude-opus-4-6-v1`, Vertex's `claude-opus-4-1@20250805`) or before it
    (`claude-3-7-sonnet-20250219`): the first number is the major version, the next one (not
    an 8-digit date) the minor."""
    numbers: list[int] = []
    for token in re.split(r"[-_.@:/]", upstream.lower()):
        if not token.isdigit():
            continue
        if len(token) >= 8:
            break  # a date ends the version
        numbers.append(int(token))
        if len(numbers) == 2:
            break
    if not numbers:
        return None
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def _thinking(
    call: Call, choice: dict[str, Any] | None, messages: list[dict[str, Any]], notes: list[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """(the `thinking` object, the `output_config.effort`): the client's own `thinking`, or
    both built from `reasoning_effort` by the model's version (docs/runtime.md, "Anthropic")."""
    req = call.request
    native, wanted = req.get("thinking"), req.get("reasoning_effort")
    thinking: dict[str, Any]
    effort: str | None = None
    if isinstance(native, dict):
        thinking = dict(native)
        if wanted is not None:
            notes.append("ignored `reasoning_effort`: the request's own `thinking` is sent")
    elif wanted is None or wanted == "none":
        return None, None
    elif "reasoning" not in call.model.capabilities:
        notes.append(f"dropped `reasoning_effort`: model {call.model.name!r} does not reason")
        return None, None
    elif wanted not in EFFORTS:
        notes.append(f"dropped `reasoning_effort` {wanted!r}: not an effort Anthropic maps")
        return None, None
    else:
        version = claude_version(call.model.upstream)
        if version is not None and version < ADAPTIVE_SINCE:
            thinking = {"type": "enabled", "budget_tokens": THINKING_BUDGETS[wanted]}
        else:
            thinking = {"type": "adaptive", "display": "summarized"}
            effort = EFFORTS[wanted]
            if effort == "xhigh" and version is not None and version < XHIGH_SINCE:
                effort = "high"
                notes.append(
                    f"sent effort `high` for `reasoning_effort` 'xhigh': Claude "
                    f"{version[0]}.{version[1]} takes effort up to high"
                )
    if thinking.get("type") not in ("disabled", "between_tools") and (
        choice and choice.get("type") in ("any", "tool")
    ):
        notes.append(
            "dropped thinking: Anthropic takes only tool_choice auto or none with thinking, "
            "and the request forces a tool"
        )
        return None, None
    if not isinstance(native, dict) and _unsigned_tool_turn(messages):
        notes.append(
            "dropped thinking: the tool-calling assistant turn being answered carries no "
            "thinking block, and with thinking on Anthropic needs it to start with one"
        )
        return None, None
    return thinking, effort


def _unsigned_tool_turn(messages: list[dict[str, Any]]) -> bool:
    """Whether the last assistant turn called tools whose results follow, without starting
    with a thinking block: with thinking on, Anthropic refuses that (400 "a final `assistant`
    message must start with a thinking block ... To avoid this requirement, disable
    `thinking`"), e.g. when the client drops `thinking_blocks` or the turn came from another
    provider."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] != "assistant":
            continue
        content = messages[i]["content"]
        if not any(b.get("type") == "tool_use" for b in content):
            return False
        answered = any(
            b.get("type") == "tool_result" for m in messages[i + 1 :] for b in m["content"]
        )
        return answered and content[0].get("type") not in ("thinking", "redacted_thinking")
    return False


def _output_config(
    native: Any, fmt: dict[str, Any] | None, effort: str | None, notes: list[str]
) -> dict[str, Any]:
    """`output_config`: the client's own object as given, plus the structured-output format
    of `response_format` and the effort of `reasoning_effort` where it sets neither."""
    out: dict[str, Any] = dict(native) if isinstance(native, dict) else {}
    if fmt is not None:
        if out.get("format") is None:
            out["format"] = fmt
        else:
            notes.append("ignored `response_format`: the request's own `output_config.format`")
    if effort is not None:
        if out.get("effort") is None:
            out["effort"] = effort
        else:
            notes.append("ignored `reasoning_effort`: the request's own `output_config.effort`")
    return out


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


def _sampling(req: dict[str, Any], notes: list[str]) -> None:
    """Drop the sampling parameters with one note: the Messages API as the SDK types define it
    (`MessageCreateParams`) takes none, and Claude Opus 4.7 and later refuse them with a 400."""
    sent = [k for k in SAMPLING if req.get(k) is not None]
    if sent:
        names = ", ".join(f"`{k}`" for k in sent)
        notes.append(
            f"dropped {names}: Anthropic's Messages API takes no sampling parameters "
            "(Claude Opus 4.7 and later refuse them)"
        )


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
            raise Unservable(
                f"message role {role!r}: Anthropic takes system, user, assistant, tool"
            )
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
            block = {"type": "image", "source": _image_source(url)}
        elif kind == "file":
            block = {"type": "document", "source": _document_source(part.get("file") or {})}
        else:
            raise Unservable(
                f"content part {kind!r}: Anthropic takes text, images and PDF or text files"
            )
        blocks.append(_with_cache(block, part))
    return blocks


def _data_url(url: str) -> tuple[str, str]:
    """(media type, base64 data) of a base64 data: URL."""
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64":
        raise bad_request("data: URLs must be base64-encoded")
    return media_type.lower(), data


def _image_source(url: str) -> dict[str, Any]:
    """An image's source: base64 for the media types Anthropic reads (SDK
    `Base64ImageSourceParam`), else the candidate is skipped; by URL for http(s)."""
    if url.startswith("data:"):
        media_type, data = _data_url(url)
        if media_type not in IMAGE_TYPES:
            raise Unservable(f"image type {media_type!r}: Anthropic takes {', '.join(IMAGE_TYPES)}")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise bad_request("image parts need a data: or http(s) URL")


def _document_source(file: dict[str, Any]) -> dict[str, Any]:
    """A file part's document source (SDK `DocumentBlockParam.source`): a PDF as base64 or by
    URL, plain text as text; other types and OpenAI file ids skip the candidate."""
    data = file.get("file_data") or ""
    if not data and file.get("file_id"):
        raise Unservable("a file part by `file_id`: Anthropic cannot read OpenAI's stored files")
    if data.startswith(("http://", "https://")):
        return {"type": "url", "url": data}
    if not data.startswith("data:"):
        raise bad_request("file parts need `file_data` as a base64 data: URL")
    media_type, payload = _data_url(data)
    if media_type == "application/pdf":
        return {"type": "base64", "media_type": media_type, "data": payload}
    if media_type == "text/plain":
        try:
            text = base64.b64decode(payload, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise bad_request("a text/plain file part is not base64-encoded UTF-8") from None
        return {"type": "text", "media_type": media_type, "data": text}
    raise Unservable(f"file type {media_type!r}: Anthropic takes PDF and plain text documents")


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
            raise bad_request(f"tool call {tc.get('id')!r} arguments are not valid JSON") from None
        if not isinstance(args, dict):
            raise bad_request(f"tool call {tc.get('id')!r} arguments must be a JSON object")
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
        raise Unservable(
            f"tool_choice {choice!r}: Anthropic takes auto, none, required, a function"
        )
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _response_format(fmt: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(output_config.format, system instruction) for a response_format: a strict json_schema
    goes to the API's structured outputs; json_object and a non-strict schema (best effort at
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
            return {"type": "json_schema", "schema": strict_schema(schema)}, None
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


def bad_request(message: str) -> UpstreamError:
    """The error for a request field that cannot be mapped (the client's to fix)."""
    return UpstreamError("bad_request", message, code="unsupported_by_provider")
