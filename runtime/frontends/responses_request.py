"""Check a Responses API request (`POST /v1/responses`) and translate it to chat completions.

Reference for every shape: the official `openai` SDK's request types,
`openai.types.responses.response_create_params.ResponseCreateParamsBase` and the types it
names (`ResponseInputParam` and its items: `EasyInputMessageParam`, `Message`,
`ResponseOutputMessageParam`, `ResponseFunctionToolCallParam`, `FunctionCallOutput`,
`ResponseReasoningItemParam`, `ItemReference`; `ResponseInputTextParam`,
`ResponseInputImageParam`, `ResponseInputFileParam`; `ToolParam`, `FunctionToolParam`;
`ResponseTextConfigParam`; `shared_params.Reasoning`), as of openai-python 3.x. A 400's
`param` is the field's path in Responses terms (`input[2].content[0].image_url`); the bounds
(nesting, names, strings) are runtime/request_check.py's, imported from there.

What is decided here (docs/api-responses.md):
- The gateway stores no responses: `previous_response_id`, `conversation`, `prompt` (a
  stored prompt), `background: true` and `item_reference` input items are refused, each
  naming what to send instead. `store` is accepted (passed through to OpenAI).
- Built-in tools (every tool type but `function`) and the input items only OpenAI can read
  (a `web_search_call`, an `mcp_call`...) are collected by type into `builtin_tools`: the
  router skips every candidate that cannot pass the body through, with that reason.
- `reasoning` input items are dropped from the translation (their content means something
  to OpenAI only); `file_id` images and files are refused (the gateway serves no files).
"""

from __future__ import annotations

from typing import Any

from runtime.adapters.base import NativeRequest
from runtime.frontends.base import Parsed
from runtime.records import RequestRecord
from runtime.request_check import (
    IMAGE_DETAILS,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_TOKENS_LIMIT,
    MAX_USER_CHARS,
    REASONING_EFFORTS,
    TOOL_CHOICES,
    _array,
    _bool,
    _bounded,
    _enum,
    _fail,
    _function_name,
    _int,
    _metadata,
    _model,
    _number,
    _object,
    _str,
    _wrong,
    check,
    decode,
    quote,
)

API = "responses"
ENDPOINT = "/v1/responses"

ROLES = frozenset({"user", "assistant", "system", "developer"})
ITEM_STATUSES = frozenset({"in_progress", "completed", "incomplete"})
TEXT_FORMATS = frozenset({"text", "json_object", "json_schema"})
SUMMARIES = frozenset({"auto", "concise", "detailed"})
VERBOSITIES = frozenset({"low", "medium", "high"})
TRUNCATIONS = frozenset({"auto", "disabled"})

# Input items of OpenAI's built-in tools (openai.types.responses.ResponseInputItemParam):
# only a candidate that passes the body through to OpenAI can read them.
BUILTIN_ITEMS = frozenset(
    {
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "web_search_call",
        "tool_search_call",
        "tool_search_output",
        "additional_tools",
        "configuration_update",
        "compaction",
        "compaction_trigger",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "program",
        "program_output",
    }
)

_STORED = (
    "the gateway does not store responses: send the whole conversation in `input` (the"
    " earlier turns' items, as the OpenAI Agents SDK and langchain do by default)"
)


def parse(body: bytes, rec: RequestRecord) -> Parsed:
    """The checked Responses request of `body` and its chat-completions translation; sets
    `rec.requested_model` (bounded) and `rec.stream` first, so they are kept even when the
    request is refused. Raises GatewayError 400 naming the field at fault."""
    doc = decode(body, rec)
    for key, value in doc.items():
        _bounded(value, quote(key), 2)  # every field at once: nothing below can nest deeper
    request, builtin = _translate(doc)
    check(request)  # the chat-completions checks and normalization (integral floats...)
    return Parsed(
        request=request,
        stream=rec.stream,
        native=NativeRequest(API, doc),
        builtin_tools=tuple(builtin),
    )


def _present(doc: dict[str, Any], key: str) -> Any:
    """The field's value; None when absent or null ("not sent", as OpenAI reads it)."""
    return doc.get(key)


def _translate(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check every known field of `doc`; the chat-completions request and the built-in tool
    types (in order of appearance, without repeats)."""
    if "model" not in doc:
        _fail("model", "is required: a route name")
    _model(doc, "model", doc["model"])
    for key in ("previous_response_id", "conversation", "prompt"):
        if _present(doc, key) is not None:
            _fail(key, f"is not supported: {_STORED}")
    background = _present(doc, "background")
    if background is not None:
        _bool(background, "background")
        if background:
            _fail(
                "background",
                "is not supported: the gateway does not store responses to poll later; send"
                " the request without it (stream it for long answers)",
            )
    builtin: list[str] = []
    request: dict[str, Any] = {"model": doc["model"]}
    messages: list[dict[str, Any]] = []
    instructions = _present(doc, "instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": _str(instructions, "instructions")})
    if "input" not in doc or doc["input"] is None:
        _fail("input", "is required: a string or an array of input items")
    _input(doc["input"], messages, builtin)
    if not messages:
        _fail("input", "has no message to answer: send at least one input item")
    request["messages"] = messages

    stream = _present(doc, "stream")
    if stream is not None:
        _bool(stream, "stream")
        request["stream"] = stream
    options = _present(doc, "stream_options")
    if options is not None:
        _object(options, "stream_options")
        if options.get("include_obfuscation") is not None:
            _bool(options["include_obfuscation"], "stream_options.include_obfuscation")
        if stream is not True:
            _fail("stream_options", "is only allowed when `stream` is true")
    tools = _present(doc, "tools")
    if tools is not None:
        chat_tools = _tools(tools, builtin)
        if chat_tools:
            request["tools"] = chat_tools
    choice = _present(doc, "tool_choice")
    if choice is not None:
        translated = _tool_choice(choice, builtin)
        if translated is not None:
            request["tool_choice"] = translated
    for key in ("parallel_tool_calls", "store"):
        value = _present(doc, key)
        if value is not None:
            _bool(value, key)
    if _present(doc, "parallel_tool_calls") is not None and "tools" in request:
        request["parallel_tool_calls"] = doc["parallel_tool_calls"]
    text = _present(doc, "text")
    if text is not None:
        _text(text, request)
    reasoning = _present(doc, "reasoning")
    if reasoning is not None:
        _reasoning(reasoning, request)
    limit = _present(doc, "max_output_tokens")
    if limit is not None:
        request["max_completion_tokens"] = _int(limit, "max_output_tokens", 1, MAX_TOKENS_LIMIT)
    for key, lo, hi in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = _present(doc, key)
        if value is not None:
            _number(value, key, lo, hi)
            request[key] = value
    for key in ("user", "safety_identifier", "prompt_cache_key"):
        value = _present(doc, key)
        if value is not None:
            request[key] = _str(value, key, MAX_USER_CHARS)
    meta = _present(doc, "metadata")
    if meta is not None:
        _metadata(doc, "metadata", meta)
        request["metadata"] = meta
    _accepted(doc)
    return request, builtin


def _accepted(doc: dict[str, Any]) -> None:
    """Fields checked for their type and passed through to OpenAI only (a translated answer
    has no use for them)."""
    top = _present(doc, "top_logprobs")
    if top is not None:
        _int(top, "top_logprobs", 0, 20)
    tools = _present(doc, "max_tool_calls")
    if tools is not None:
        _int(tools, "max_tool_calls", 1, MAX_TOKENS_LIMIT)
    truncation = _present(doc, "truncation")
    if truncation is not None:
        _enum(truncation, "truncation", TRUNCATIONS)
    include = _present(doc, "include")
    if include is not None:
        for j, item in enumerate(_array(include, "include")):
            _str(item, f"include[{j}]", MAX_NAME_CHARS)
    for key in ("service_tier", "prompt_cache_retention"):
        value = _present(doc, key)
        if value is not None:
            _str(value, key, MAX_NAME_CHARS)
    for key in (
        "access_programs",
        "background_options",
        "image",
        "moderation",
        "prompt_cache_options",
    ):
        value = _present(doc, key)
        if value is not None:
            _object(value, key)
    context = _present(doc, "context_management")
    if context is not None:
        for j, entry in enumerate(_array(context, "context_management")):
            _str(
                _object(entry, f"context_management[{j}]").get("type"),
                f"context_management[{j}].type",
            )


# -- input -------------------------------------------------------------------------------


def _input(value: Any, messages: list[dict[str, Any]], builtin: list[str]) -> None:
    if type(value) is str:
        messages.append({"role": "user", "content": value})
        return
    items = _array(value, "input", nonempty=True)
    for i, item in enumerate(items):
        path = f"input[{i}]"
        if type(item) is not dict:
            _wrong(path, "an input item (an object with a `type` or a `role`)", item)
        kind = item.get("type")
        if kind is None:
            if "role" not in item:
                _fail(f"{path}.type", "is required (or a `role`, for a message)")
            kind = "message"
        _str(kind, f"{path}.type")
        if kind == "message":
            messages.append(_message(item, path))
        elif kind == "function_call":
            _function_call(item, path, messages)
        elif kind == "function_call_output":
            messages.append(_function_output(item, path))
        elif kind == "reasoning":
            _array(item.get("summary", []), f"{path}.summary")  # dropped: OpenAI's own
        elif kind == "item_reference":
            _fail(path, f"(an `item_reference`) is not supported: {_STORED}")
        elif kind in BUILTIN_ITEMS:
            if kind not in builtin:
                builtin.append(kind)
        else:
            _fail(f"{path}.type", f"is '{quote(kind)}', not an input item type")


def _message(item: dict[str, Any], path: str) -> dict[str, Any]:
    role = item.get("role")
    if role is None:
        _fail(f"{path}.role", "is required: one of " + ", ".join(sorted(ROLES)))
    _enum(role, f"{path}.role", ROLES)
    if item.get("status") is not None:
        _enum(item["status"], f"{path}.status", ITEM_STATUSES)
    if "content" not in item:
        _fail(f"{path}.content", "is required: a string or an array of content parts")
    content = item["content"]
    if type(content) is str:
        return {"role": role, "content": content}
    parts = _array(content, f"{path}.content")
    if role == "assistant":
        return _assistant(parts, f"{path}.content")
    return {
        "role": role,
        "content": [_part(p, f"{path}.content[{j}]") for j, p in enumerate(parts)],
    }


def _assistant(parts: list[Any], path: str) -> dict[str, Any]:
    """An earlier answer: its text parts joined (output_text; input_text as the SDK allows),
    a refusal as the message's `refusal`."""
    texts: list[str] = []
    refusal = None
    for j, part in enumerate(parts):
        p = f"{path}[{j}]"
        kind = _enum(
            _object(part, p).get("type"),
            f"{p}.type",
            frozenset({"output_text", "input_text", "refusal"}),
        )
        if kind == "refusal":
            refusal = _str(part.get("refusal"), f"{p}.refusal")
        else:
            texts.append(_str(part.get("text"), f"{p}.text"))
            if part.get("annotations") is not None:
                _array(part["annotations"], f"{p}.annotations")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if refusal is not None:
        msg["refusal"] = refusal
    return msg


def _part(part: Any, path: str) -> dict[str, Any]:
    """One input content part as a chat-completions part."""
    kind = _enum(
        _object(part, path).get("type"),
        f"{path}.type",
        frozenset({"input_text", "input_image", "input_file"}),
    )
    if kind == "input_text":
        return {"type": "text", "text": _str(part.get("text"), f"{path}.text")}
    if kind == "input_image":
        if part.get("file_id") is not None:
            _fail(
                f"{path}.file_id",
                "is not supported: the gateway serves no files; send the image as `image_url`"
                " (a URL or a base64 data URL)",
            )
        url = part.get("image_url")
        if url is None:
            _fail(f"{path}.image_url", "is required: a URL or a base64 data URL")
        image: dict[str, Any] = {"url": _str(url, f"{path}.image_url")}
        if part.get("detail") is not None:
            image["detail"] = _enum(part["detail"], f"{path}.detail", IMAGE_DETAILS)
        return {"type": "image_url", "image_url": image}
    for field in ("file_id", "file_url"):
        if part.get(field) is not None:
            _fail(
                f"{path}.{field}",
                "is not supported: the gateway serves no files; send the file's content as"
                " `file_data` (a base64 data URL) with its `filename`",
            )
    data = part.get("file_data")
    if data is None:
        _fail(f"{path}.file_data", "is required: the file as a base64 data URL")
    file = {"file_data": _str(data, f"{path}.file_data")}
    if part.get("filename") is not None:
        file["filename"] = _str(part["filename"], f"{path}.filename")
    return {"type": "file", "file": file}


def _function_call(item: dict[str, Any], path: str, messages: list[dict[str, Any]]) -> None:
    """A call the model made: a tool call of the assistant message before it (consecutive
    calls, and calls right after the assistant's text, make one assistant message)."""
    call = {
        "id": _str(item.get("call_id"), f"{path}.call_id", MAX_ID_CHARS),
        "type": "function",
        "function": {
            "name": _str(item.get("name"), f"{path}.name", MAX_NAME_CHARS),
            "arguments": _str(item.get("arguments"), f"{path}.arguments"),
        },
    }
    if item.get("status") is not None:
        _enum(item["status"], f"{path}.status", ITEM_STATUSES)
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output(item: dict[str, Any], path: str) -> dict[str, Any]:
    call_id = _str(item.get("call_id"), f"{path}.call_id", MAX_ID_CHARS)
    output = item.get("output")
    if type(output) is str:
        content: Any = output
    elif type(output) is list:
        content = [_part(p, f"{path}.output[{j}]") for j, p in enumerate(output)]
        if not content:
            content = ""
    else:
        _wrong(f"{path}.output", "a string or an array of content parts", output)
    return {"role": "tool", "tool_call_id": call_id, "content": content}


# -- tools -------------------------------------------------------------------------------


def _tools(value: Any, builtin: list[str]) -> list[dict[str, Any]]:
    chat: list[dict[str, Any]] = []
    for j, tool in enumerate(_array(value, "tools")):
        p = f"tools[{j}]"
        kind = _str(_object(tool, p).get("type"), f"{p}.type", MAX_NAME_CHARS)
        if kind != "function":
            if kind not in builtin:
                builtin.append(kind)
            continue
        _function_name(tool.get("name"), f"{p}.name")
        fn: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description") is not None:
            fn["description"] = _str(tool["description"], f"{p}.description")
        if tool.get("parameters") is not None:
            fn["parameters"] = _object(tool["parameters"], f"{p}.parameters")
        if tool.get("strict") is not None:
            _bool(tool["strict"], f"{p}.strict")
            fn["strict"] = tool["strict"]
        chat.append({"type": "function", "function": fn})
    return chat


def _tool_choice(value: Any, builtin: list[str]) -> Any:
    """The chat-completions `tool_choice`; None when it names a built-in tool (added to
    `builtin`: only OpenAI can honour it)."""
    if type(value) is str:
        return _enum(value, "tool_choice", TOOL_CHOICES)
    choice = _object(value, "tool_choice")
    kind = _str(choice.get("type"), "tool_choice.type", MAX_NAME_CHARS)
    if kind == "function":
        return {
            "type": "function",
            "function": {"name": _str(choice.get("name"), "tool_choice.name", MAX_NAME_CHARS)},
        }
    if kind == "allowed_tools":
        mode = _enum(choice.get("mode"), "tool_choice.mode", frozenset({"auto", "required"}))
        tools = []
        for j, tool in enumerate(_array(choice.get("tools"), "tool_choice.tools")):
            p = f"tool_choice.tools[{j}]"
            tkind = _str(_object(tool, p).get("type"), f"{p}.type", MAX_NAME_CHARS)
            if tkind == "function":
                name = _str(tool.get("name"), f"{p}.name", MAX_NAME_CHARS)
                tools.append({"type": "function", "function": {"name": name}})
            elif tkind not in builtin:
                builtin.append(tkind)
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}
    if kind not in builtin:
        builtin.append(kind)
    return None


# -- output format and reasoning ---------------------------------------------------------


def _text(value: Any, request: dict[str, Any]) -> None:
    text = _object(value, "text")
    verbosity = text.get("verbosity")
    if verbosity is not None:
        request["verbosity"] = _enum(verbosity, "text.verbosity", VERBOSITIES)
    fmt = text.get("format")
    if fmt is None:
        return
    kind = _enum(_object(fmt, "text.format").get("type"), "text.format.type", TEXT_FORMATS)
    if kind != "json_schema":
        request["response_format"] = {"type": kind}
        return
    _function_name(fmt.get("name"), "text.format.name")
    spec: dict[str, Any] = {"name": fmt["name"]}
    if fmt.get("description") is not None:
        spec["description"] = _str(fmt["description"], "text.format.description")
    if fmt.get("schema") is None:
        _fail("text.format.schema", "is required: the JSON Schema of the answer")
    spec["schema"] = _object(fmt["schema"], "text.format.schema")
    if fmt.get("strict") is not None:
        _bool(fmt["strict"], "text.format.strict")
        spec["strict"] = fmt["strict"]
    request["response_format"] = {"type": "json_schema", "json_schema": spec}


def _reasoning(value: Any, request: dict[str, Any]) -> None:
    reasoning = _object(value, "reasoning")
    effort = reasoning.get("effort")
    if effort is not None:
        request["reasoning_effort"] = _enum(effort, "reasoning.effort", REASONING_EFFORTS)
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) is not None:
            _enum(reasoning[key], f"reasoning.{key}", SUMMARIES)
