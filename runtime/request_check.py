"""Validate a decoded chat-completions request once, up front, before routing.

This module owns one job: turn the body of `POST /v1/chat/completions` into a request every
later stage (router, token estimates, adapters, records) can read without a type check — or
refuse it with a 400 in OpenAI's error shape whose `param` is the path of the field at fault
(`messages[2].tool_calls`, `tools[0].function.parameters`). Nothing a client sends reaches the
rest of the gateway as a 500.

Reference for every shape: the official `openai` SDK's request types,
`openai.types.chat.completion_create_params.CompletionCreateParamsBase` and the types it names
(`ChatCompletionMessageParam` and its six roles, `ChatCompletionContentPartParam`,
`ChatCompletionMessageToolCallUnionParam`, `ChatCompletionToolUnionParam`,
`ChatCompletionToolChoiceOptionParam`, `ChatCompletionStreamOptionsParam`,
`shared_params.ResponseFormat*`, `shared_params.FunctionDefinition`, `shared.ReasoningEffort`,
`shared_params.Metadata`), as of openai-python 2.x. Where the SDK is silent (numeric ranges,
string lengths) OpenAI's API reference is, and where that is silent too the bound is ours; each
is a constant below and in docs/runtime.md "Request validation".

What is decided here:
- Types are checked for every known field at every depth; values for enumerations the
  adapters branch on (roles, part and tool types, tool_choice, response_format, effort).
- `null` for an optional top-level field means "not sent": the key is removed, so no adapter
  sees `max_completion_tokens: null` beside a `max_tokens` (a way around the cost cap).
- Integer fields take integers; an integral float (`5000.0`, JSON has one number type) is
  accepted and rewritten as the integer; anything else (`"5000"`, `5000.5`, `true`) is a 400.
- `max_tokens` and `max_completion_tokens` both set to different values is a 400, as OpenAI
  answers; equal values are accepted. The effective output limit (`output_limit`) is then one
  number every adapter sends and the router caps costs with.
- `stream` must be a boolean (`"false"` is a 400, never a stream); `stream_options` only
  with `stream: true` (OpenAI's rule).
- Unknown top-level fields pass through (providers' own extensions), as do unknown fields of
  messages, parts and tools; all of them, like every free-form value (JSON Schemas,
  metadata), are held to MAX_DEPTH levels of nesting, checked without recursion.
- Strings that are stored or echoed are bounded: `model` (MAX_MODEL_CHARS; the error and the
  record quote at most QUOTE_CHARS), ids and names a client sends.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from runtime.errors import GatewayError
from runtime.records import RequestRecord

MAX_DEPTH = 64  # levels of nesting in the whole body; the body itself is level 1
MAX_MODEL_CHARS = 256
QUOTE_CHARS = 64  # of a client's string, at most this much is echoed in an error or stored
MAX_ID_CHARS = 256  # tool_call ids (OpenAI's are ~40; Anthropic's and Gemini's similar)
MAX_NAME_CHARS = 64  # function, tool, schema and participant names (OpenAI: 64)
MAX_USER_CHARS = 256  # `user`, `safety_identifier`, `prompt_cache_key`
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # OpenAI's documented
MAX_TOKENS_LIMIT = 2**31 - 1
SEED_RANGE = (-(2**63), 2**63 - 1)
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for function names

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
IMAGE_DETAILS = frozenset({"auto", "low", "high", "original"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})
FUNCTION_CALLS = frozenset({"none", "auto"})

_Checker = Callable[[dict[str, Any], str, Any], None]  # (request, key, value), raises on a fault

_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def parse(body: bytes, rec: RequestRecord) -> dict[str, Any]:
    """The decoded, checked and normalized request of `body`; fills the record's
    `requested_model` (bounded) and `stream` first, so they are kept even when the request
    is refused. Raises GatewayError 400 naming the field at fault."""
    request = decode(body, rec)
    check(request)
    return request


def decode(body: bytes, rec: RequestRecord | None, streams: bool = True) -> dict[str, Any]:
    """The body decoded as a JSON object (a 400 otherwise), for every endpoint; fills the
    record's `requested_model` (bounded) and, for an endpoint that `streams`, `stream` first,
    so they are kept even when the request is refused."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, "invalid_json", f"the request body is not valid JSON: {exc}"
        ) from None
    if type(request) is not dict:
        raise GatewayError(400, "invalid_request", "the request body must be a JSON object")
    if rec is not None:
        model = request.get("model")
        if type(model) is str:
            rec.requested_model = quote(model) if len(model) > MAX_MODEL_CHARS else model
        if streams:
            rec.stream = request.get("stream") is True
    return request


def quote(text: str) -> str:
    """At most QUOTE_CHARS of a client's string, marked when cut."""
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "..."


def output_limit(request: dict[str, Any]) -> int | None:
    """The effective output limit of a request: the largest of `max_completion_tokens` and
    `max_tokens` an upstream may honour (after `check` they are equal or one is absent),
    None when neither is a positive integer."""
    limit = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is int and value > 0 and (limit is None or value > limit):
            limit = value
    return limit


def check(request: dict[str, Any]) -> None:
    """Check and normalize a decoded request in place; GatewayError 400 on the first fault."""
    if "model" not in request:
        _fail("model", "is required: a route name")
    if "messages" not in request:
        _fail("messages", "is required: a non-empty array of messages")
    nulls = None
    for key, value in request.items():
        checker = _TOP.get(key)
        if checker is None:
            if type(value) is dict or type(value) is list:
                _bounded(value, quote(key), 2)
        elif value is None and key in _OPTIONAL:
            nulls = [key] if nulls is None else [*nulls, key]
        else:
            checker(request, key, value)
    if nulls is not None:
        for key in nulls:
            del request[key]
    if request.get("stream_options") is not None and request.get("stream") is not True:
        raise GatewayError(
            400,
            "invalid_request",
            "the `stream_options` parameter is only allowed when `stream` is true",
            param="stream_options",
        )
    newer, older = request.get("max_completion_tokens"), request.get("max_tokens")
    if newer is not None and older is not None and newer != older:
        raise GatewayError(
            400,
            "invalid_request",
            f"`max_tokens` ({older}) and `max_completion_tokens` ({newer}) disagree: send one"
            " (`max_completion_tokens` is OpenAI's current name)",
            param="max_tokens",
        )


# -- failures ----------------------------------------------------------------------------


def _fail(path: str, message: str) -> NoReturn:
    raise GatewayError(400, "invalid_request", f"`{path}` {message}", param=path)


def _wrong(path: str, expected: str, value: Any) -> NoReturn:
    _fail(path, f"must be {expected}, not {_KINDS.get(type(value), 'a ' + type(value).__name__)}")


def _key(path: str, key: str) -> str:
    """`path.key`, the key cut to QUOTE_CHARS (it is the client's string)."""
    return f"{path}.{quote(key)}"


# -- nesting -----------------------------------------------------------------------------


def _bounded(value: Any, path: str, depth: int) -> None:
    """Refuse `value` (at `depth`; the body is depth 1) when its containers nest deeper than
    MAX_DEPTH. Iterative, level by level: a deep document cannot exhaust the stack."""
    t = type(value)
    if t is not dict and t is not list:
        return
    level = [value]
    d = depth
    while level:
        if d > MAX_DEPTH:
            _too_deep(value, path, depth)
        below = []
        for v in level:
            for child in v.values() if type(v) is dict else v:
                ct = type(child)
                if ct is dict or ct is list:
                    below.append(child)
        level = below
        d += 1


def _too_deep(value: Any, path: str, depth: int) -> NoReturn:
    """The failure of `_bounded`, with the path of the first container past the limit (found
    by a second walk that carries paths: only refused requests pay for them)."""
    stack: list[tuple[Any, int, str]] = [(value, depth, path)]
    while stack:
        v, d, p = stack.pop()
        if d > MAX_DEPTH:
            _fail(p, f"nests deeper than {MAX_DEPTH} levels (the body is level 1)")
        items = v.items() if type(v) is dict else enumerate(v)
        for k, child in items:
            if type(child) is dict or type(child) is list:
                stack.append((child, d + 1, _key(p, k) if type(k) is str else f"{p}[{k}]"))
    raise AssertionError("unreachable: _bounded found a container too deep")  # pragma: no cover


# -- scalars -----------------------------------------------------------------------------


def _str(value: Any, path: str, limit: int | None = None) -> str:
    if type(value) is not str:
        _wrong(path, "a string", value)
    if limit is not None and len(value) > limit:
        _fail(path, f"is {len(value)} characters; at most {limit} are allowed")
    return value


def _enum(value: Any, path: str, allowed: frozenset[str]) -> str:
    if type(value) is not str:
        _wrong(path, "a string", value)
    if value not in allowed:
        _fail(path, f"is '{quote(value)}'; one of {', '.join(sorted(allowed))} is expected")
    return value


def _bool(value: Any, path: str) -> None:
    if type(value) is not bool:
        _wrong(path, "a boolean (true or false)", value)


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; an integral float is taken as that integer."""
    t = type(value)
    if t is int:
        n: int = value
    elif t is float:
        if not value.is_integer():
            _fail(path, "must be an integer, not a fraction")
        if not lo <= value <= hi:
            _fail(path, f"must be an integer from {lo} to {hi}")
        n = int(value)
    else:
        _wrong(path, "an integer", value)
    if not lo <= n <= hi:
        _fail(path, f"must be an integer from {lo} to {hi}")
    return n


def _number(value: Any, path: str, lo: float, hi: float) -> None:
    t = type(value)
    if t is not int and t is not float:
        _wrong(path, "a number", value)
    if not lo <= value <= hi:
        _fail(path, f"must be from {lo:g} to {hi:g}")


def _object(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        _wrong(path, "an object", value)
    return value


def _array(value: Any, path: str, nonempty: bool = False) -> list[Any]:
    if type(value) is not list:
        _wrong(path, "an array", value)
    if nonempty and not value:
        _fail(path, "must not be empty")
    return value


def _rest(obj: dict[str, Any], known: frozenset[str], path: str, depth: int) -> None:
    """Unknown fields of a known object pass through, bounded in depth (the object is at
    `depth`, so its fields' values are at depth + 1)."""
    for k, v in obj.items():
        if k not in known and (type(v) is dict or type(v) is list):
            _bounded(v, _key(path, k), depth + 1)


def _function_name(value: Any, path: str) -> None:
    if type(value) is not str:
        _wrong(path, "a string", value)
    if FUNCTION_NAME.fullmatch(value) is None:
        _fail(
            path,
            f"is '{quote(value)}'; a function name is 1 to {MAX_NAME_CHARS} letters, digits,"
            " underscores or dashes",
        )


# -- messages ----------------------------------------------------------------------------

_MESSAGE_FIELDS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal"}
)
_PART_FIELDS = frozenset({"type", "text", "image_url", "input_audio", "file", "refusal"})


_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
_MISSING = object()


def _messages(request: dict[str, Any], key: str, value: Any) -> None:
    messages = _array(value, "messages", nonempty=True)
    for i, msg in enumerate(messages):
        # The common messages ({role, content: "text"}, a tool result, an assistant's tool
        # calls) are checked here; any other shape by `_message`, which also builds the paths
        # its errors name.
        if type(msg) is dict:
            n = len(msg)
            role = msg.get("role")
            content = msg.get("content", _MISSING)
            if type(content) is str:
                if n == 2 and type(role) is str and role in _PLAIN_ROLES:
                    continue
                if n == 3 and role == "tool":
                    tid = msg.get("tool_call_id")
                    if type(tid) is str and len(tid) <= MAX_ID_CHARS:
                        continue
            if n == 3 and role == "assistant" and (content is None or type(content) is str):
                calls = msg.get("tool_calls")
                if type(calls) is list:
                    _tool_calls(calls, f"messages[{i}].tool_calls")
                    continue
        _message(msg, i)


def _message(msg: Any, i: int) -> None:
    """One message of any shape (see `_messages`)."""
    path = f"messages[{i}]"
    if type(msg) is not dict:
        _wrong(path, "an object with a `role`", msg)
    role = msg.get("role")
    if role is None:
        _fail(f"{path}.role", "is required: one of " + ", ".join(sorted(ROLES)))
    _enum(role, f"{path}.role", ROLES)
    if "content" in msg:
        content = msg["content"]
        if content is None:
            if role not in ("assistant", "function"):
                _wrong(f"{path}.content", "a string or an array of content parts", content)
        elif type(content) is not str:
            _parts(content, f"{path}.content")
    elif role not in ("assistant",):
        _fail(f"{path}.content", "is required")
    name = msg.get("name")
    if name is not None:
        _str(name, f"{path}.name", MAX_NAME_CHARS)
    elif role == "function":
        _fail(f"{path}.name", "is required in a `function` message")
    if role == "tool":
        _str(msg.get("tool_call_id"), f"{path}.tool_call_id", MAX_ID_CHARS)
    elif "tool_call_id" in msg:
        _str(msg["tool_call_id"], f"{path}.tool_call_id", MAX_ID_CHARS)
    calls = msg.get("tool_calls")
    if calls is not None:
        _tool_calls(calls, f"{path}.tool_calls")
    call = msg.get("function_call")
    if call is not None:
        _called_function(call, f"{path}.function_call", 4)
    refusal = msg.get("refusal")
    if refusal is not None:
        _str(refusal, f"{path}.refusal")
    if len(msg) > 2:
        _extensions(msg, path)
    _rest(msg, _MESSAGE_FIELDS, path, 3)


def _extensions(msg: dict[str, Any], path: str) -> None:
    """The gateway's own message fields (docs/runtime.md "Anthropic"): reasoning handed back
    (`reasoning_content`, `thinking_blocks`) and `cache_control`."""
    reasoning = msg.get("reasoning_content")
    if reasoning is not None:
        _str(reasoning, f"{path}.reasoning_content")
    blocks = msg.get("thinking_blocks")
    if blocks is not None:
        for j, block in enumerate(_array(blocks, f"{path}.thinking_blocks")):
            _object(block, f"{path}.thinking_blocks[{j}]")
    cache = msg.get("cache_control")
    if cache is not None:
        _object(cache, f"{path}.cache_control")


def _parts(value: Any, path: str) -> None:
    parts = _array(value, path, nonempty=True)
    for j, part in enumerate(parts):
        if (
            type(part) is dict
            and len(part) == 2
            and part.get("type") == "text"
            and type(part.get("text")) is str
        ):
            continue  # the common part, {type: text, text}
        p = f"{path}[{j}]"
        if type(part) is not dict:
            _wrong(p, "a content part (an object with a `type`)", part)
        kind = part.get("type")
        if type(kind) is not str:
            _wrong(f"{p}.type", "a string", kind)
        if kind == "text":
            _str(part.get("text"), f"{p}.text")
        elif kind == "image_url":
            url = part.get("image_url")
            if type(url) is not dict:
                _wrong(f"{p}.image_url", "an object with a `url`", url)
            _str(url.get("url"), f"{p}.image_url.url")
            if url.get("detail") is not None:
                _enum(url["detail"], f"{p}.image_url.detail", IMAGE_DETAILS)
            _rest(url, frozenset({"url", "detail"}), f"{p}.image_url", 6)
        elif kind == "input_audio":
            audio = _object(part.get("input_audio"), f"{p}.input_audio")
            _str(audio.get("data"), f"{p}.input_audio.data")
            _str(audio.get("format"), f"{p}.input_audio.format")
            _rest(audio, frozenset({"data", "format"}), f"{p}.input_audio", 6)
        elif kind == "file":
            file = _object(part.get("file"), f"{p}.file")
            for field in ("file_data", "file_id", "filename"):
                if file.get(field) is not None:
                    _str(file[field], f"{p}.file.{field}")
            _rest(file, frozenset({"file_data", "file_id", "filename"}), f"{p}.file", 6)
        elif kind == "refusal":
            _str(part.get("refusal"), f"{p}.refusal")
        if part.get("cache_control") is not None:
            _object(part["cache_control"], f"{p}.cache_control")
        _rest(part, _PART_FIELDS, p, 5)


def _tool_calls(value: Any, path: str) -> None:
    calls = _array(value, path)
    for j, call in enumerate(calls):
        if type(call) is dict and len(call) == 3 and call.get("type") == "function":
            # the common call, {id, type: function, function: {name, arguments}}
            cid, fn = call.get("id"), call.get("function")
            if (
                type(cid) is str
                and len(cid) <= MAX_ID_CHARS
                and type(fn) is dict
                and len(fn) == 2
                and type(fn.get("name")) is str
                and len(fn["name"]) <= MAX_NAME_CHARS
                and type(fn.get("arguments")) is str
            ):
                continue
        p = f"{path}[{j}]"
        if type(call) is not dict:
            _wrong(p, "a tool call (an object with `id`, `type` and `function`)", call)
        _str(call.get("id"), f"{p}.id", MAX_ID_CHARS)
        kind = call.get("type", "function")
        if kind == "custom":
            custom = _object(call.get("custom"), f"{p}.custom")
            _str(custom.get("name"), f"{p}.custom.name", MAX_NAME_CHARS)
            _str(custom.get("input"), f"{p}.custom.input")
            _rest(custom, frozenset({"name", "input"}), f"{p}.custom", 6)
        else:
            _enum(kind, f"{p}.type", frozenset({"function", "custom"}))
            _called_function(call.get("function"), f"{p}.function", 6)
        _rest(call, frozenset({"id", "type", "function", "custom"}), p, 5)


def _called_function(value: Any, path: str, depth: int) -> None:
    """`{name, arguments}` of a call the model made (arguments: the JSON text, a string)."""
    fn = _object(value, path)
    _str(fn.get("name"), f"{path}.name", MAX_NAME_CHARS)
    _str(fn.get("arguments"), f"{path}.arguments")
    _rest(fn, frozenset({"name", "arguments"}), path, depth)


# -- tools -------------------------------------------------------------------------------


def _tools(request: dict[str, Any], key: str, value: Any) -> None:
    tools = _array(value, key)
    for j, tool in enumerate(tools):
        p = f"{key}[{j}]"
        if type(tool) is not dict:
            _wrong(p, "a tool (an object with `type` and `function`)", tool)
        kind = _enum(tool.get("type"), f"{p}.type", frozenset({"function", "custom"}))
        if kind == "function":
            _function_definition(tool.get("function"), f"{p}.function", 4)
        else:
            custom = _object(tool.get("custom"), f"{p}.custom")
            _function_name(custom.get("name"), f"{p}.custom.name")
            if custom.get("description") is not None:
                _str(custom["description"], f"{p}.custom.description")
            _rest(custom, frozenset({"name", "description"}), f"{p}.custom", 4)
        if tool.get("cache_control") is not None:
            _object(tool["cache_control"], f"{p}.cache_control")
        _rest(tool, frozenset({"type", "function", "custom"}), p, 3)


def _functions(request: dict[str, Any], key: str, value: Any) -> None:
    for j, fn in enumerate(_array(value, key)):
        _function_definition(fn, f"{key}[{j}]", 3)


def _function_definition(value: Any, path: str, depth: int) -> None:
    fn = _object(value, path)
    _function_name(fn.get("name"), f"{path}.name")
    if fn.get("description") is not None:
        _str(fn["description"], f"{path}.description")
    params = fn.get("parameters")
    if params is not None:
        _bounded(_object(params, f"{path}.parameters"), f"{path}.parameters", depth + 1)
    if fn.get("strict") is not None:
        _bool(fn["strict"], f"{path}.strict")
    _rest(fn, frozenset({"name", "description", "parameters", "strict"}), path, depth)


def _tool_choice(request: dict[str, Any], key: str, value: Any) -> None:
    if type(value) is str:
        _enum(value, key, TOOL_CHOICES)
        return
    choice = _object(value, key)
    kind = _enum(
        choice.get("type"), f"{key}.type", frozenset({"function", "allowed_tools", "custom"})
    )
    if kind == "allowed_tools":
        allowed = _object(choice.get("allowed_tools"), f"{key}.allowed_tools")
        _enum(allowed.get("mode"), f"{key}.allowed_tools.mode", frozenset({"auto", "required"}))
        for j, tool in enumerate(_array(allowed.get("tools"), f"{key}.allowed_tools.tools")):
            p = f"{key}.allowed_tools.tools[{j}]"
            _bounded(_object(tool, p), p, 5)
    else:
        named = _object(choice.get(kind), f"{key}.{kind}")
        _str(named.get("name"), f"{key}.{kind}.name", MAX_NAME_CHARS)
    _rest(choice, frozenset({"type", "function", "custom", "allowed_tools"}), key, 2)


def _function_call(request: dict[str, Any], key: str, value: Any) -> None:
    if type(value) is str:
        _enum(value, key, FUNCTION_CALLS)
        return
    _str(_object(value, key).get("name"), f"{key}.name", MAX_NAME_CHARS)
    _rest(value, frozenset({"name"}), key, 2)


def _response_format(request: dict[str, Any], key: str, value: Any) -> None:
    fmt = _object(value, key)
    kind = _enum(fmt.get("type"), f"{key}.type", frozenset({"text", "json_object", "json_schema"}))
    if kind == "json_schema":
        p = f"{key}.json_schema"
        spec = _object(fmt.get("json_schema"), p)
        _function_name(spec.get("name"), f"{p}.name")
        if spec.get("description") is not None:
            _str(spec["description"], f"{p}.description")
        schema = spec.get("schema")
        if schema is not None:
            _bounded(_object(schema, f"{p}.schema"), f"{p}.schema", 4)
        if spec.get("strict") is not None:
            _bool(spec["strict"], f"{p}.strict")
        _rest(spec, frozenset({"name", "description", "schema", "strict"}), p, 3)
    _rest(fmt, frozenset({"type", "json_schema"}), key, 2)


# -- the other top-level fields ----------------------------------------------------------


def _model(request: dict[str, Any], key: str, value: Any) -> None:
    if type(value) is not str:
        _wrong(key, "a string: a route name", value)
    if not value:
        _fail(key, "is empty: name a route")
    if len(value) > MAX_MODEL_CHARS:
        _fail(
            key,
            f"is {len(value)} characters ('{quote(value)}'); a model name has at most"
            f" {MAX_MODEL_CHARS}",
        )


def _stream(request: dict[str, Any], key: str, value: Any) -> None:
    _bool(value, key)


def _stream_options(request: dict[str, Any], key: str, value: Any) -> None:
    options = _object(value, key)
    for field in ("include_usage", "include_obfuscation"):
        if options.get(field) is not None:
            _bool(options[field], f"{key}.{field}")
    _rest(options, frozenset({"include_usage", "include_obfuscation"}), key, 2)


def _integer(lo: int, hi: int) -> _Checker:
    def check(request: dict[str, Any], key: str, value: Any) -> None:
        n = _int(value, key, lo, hi)
        if type(value) is not int:
            request[key] = n  # 5000.0 -> 5000: what every adapter sends and the cap uses

    return check


def _ranged(lo: float, hi: float) -> _Checker:
    def check(request: dict[str, Any], key: str, value: Any) -> None:
        _number(value, key, lo, hi)

    return check


def _boolean(request: dict[str, Any], key: str, value: Any) -> None:
    _bool(value, key)


def _string(limit: int | None) -> _Checker:
    def check(request: dict[str, Any], key: str, value: Any) -> None:
        _str(value, key, limit)

    return check


def _strings(request: dict[str, Any], key: str, value: Any) -> None:
    for j, item in enumerate(_array(value, key)):
        _str(item, f"{key}[{j}]")


def _stop(request: dict[str, Any], key: str, value: Any) -> None:
    if type(value) is not str:
        if type(value) is not list:
            _wrong(key, "a string or an array of strings", value)
        _strings(request, key, value)


def _reasoning_effort(request: dict[str, Any], key: str, value: Any) -> None:
    _enum(value, key, REASONING_EFFORTS)


def _metadata(request: dict[str, Any], key: str, value: Any) -> None:
    meta = _object(value, key)
    if len(meta) > METADATA_PAIRS:
        _fail(key, f"has {len(meta)} pairs; at most {METADATA_PAIRS} are allowed")
    for k, v in meta.items():
        if len(k) > METADATA_KEY_CHARS:
            _fail(key, f"has a key of {len(k)} characters; at most {METADATA_KEY_CHARS}")
        _str(v, _key(key, k), METADATA_VALUE_CHARS)


def _logit_bias(request: dict[str, Any], key: str, value: Any) -> None:
    for k, v in _object(value, key).items():
        _number(v, _key(key, k), -100, 100)


def _free_object(request: dict[str, Any], key: str, value: Any) -> None:
    _bounded(_object(value, key), key, 2)


def _thinking(request: dict[str, Any], key: str, value: Any) -> None:
    """Anthropic's own `thinking` (the Anthropic adapter passes it on)."""
    thinking = _object(value, key)
    _str(thinking.get("type"), f"{key}.type")
    if thinking.get("budget_tokens") is not None:
        _int(thinking["budget_tokens"], f"{key}.budget_tokens", 0, MAX_TOKENS_LIMIT)
    _rest(thinking, frozenset({"type", "budget_tokens"}), key, 2)


_TOP: dict[str, _Checker] = {
    "model": _model,
    "messages": _messages,
    "stream": _stream,
    "stream_options": _stream_options,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _boolean,
    "functions": _functions,
    "function_call": _function_call,
    "response_format": _response_format,
    "max_tokens": _integer(1, MAX_TOKENS_LIMIT),
    "max_completion_tokens": _integer(1, MAX_TOKENS_LIMIT),
    "n": _integer(1, 128),
    "seed": _integer(*SEED_RANGE),
    "top_logprobs": _integer(0, 20),
    "logprobs": _boolean,
    "temperature": _ranged(0, 2),
    "top_p": _ranged(0, 1),
    "presence_penalty": _ranged(-2, 2),
    "frequency_penalty": _ranged(-2, 2),
    "logit_bias": _logit_bias,
    "stop": _stop,
    "user": _string(MAX_USER_CHARS),
    "safety_identifier": _string(MAX_USER_CHARS),
    "prompt_cache_key": _string(MAX_USER_CHARS),
    "prompt_cache_retention": _string(MAX_NAME_CHARS),
    "service_tier": _string(MAX_NAME_CHARS),
    "verbosity": _string(MAX_NAME_CHARS),
    "metadata": _metadata,
    "reasoning_effort": _reasoning_effort,
    "store": _boolean,
    "modalities": _strings,
    "audio": _free_object,
    "prediction": _free_object,
    "web_search_options": _free_object,
    "thinking": _thinking,
}
# Every known field but the two required ones may be `null`, which means "not sent".
_OPTIONAL = frozenset(_TOP) - {"model", "messages"}
