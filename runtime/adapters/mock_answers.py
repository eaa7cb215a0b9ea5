"""What the mock provider answers: a function of the request alone (runtime/adapters/mock.py).

- text: "echo: <text of the last user message>" (an image part reads "[image]");
- tools given and the last message is the user's: a call of the first tool (or the one
  `tool_choice` names; none when it is "none") with arguments that match its JSON schema
  (`example_value`); finish_reason "tool_calls";
- `response_format` json_schema: JSON that matches the schema (`example_value`);
  json_object: JSON matching the first JSON schema written in the messages (JSON-mode
  clients such as instructor put their model's schema in the system message), else
  `{"reply": "echo: <text>"}`; a JSON answer is never cut, so it always parses;
- `max_tokens` / `max_completion_tokens`: a text answer is cut to 4 characters per token and
  finish_reason is "length";
- `n`: n choices, each with its own index (identical content; each tool call its own id).
Usage: input = sum over messages of ceil(chars / 4) + 4; output = ceil(chars / 4) of every
choice's reply, summed (OpenAI counts every choice's tokens).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from runtime.adapters.base import Usage

_MAX_DEPTH = 16  # a schema whose required properties recurse this deep gets no deeper value
_SCAN_LIMIT = 64  # `{` positions tried per message when looking for a JSON schema in it


@dataclass(frozen=True, slots=True)
class Choice:
    """One choice of the answer: the message, why it ended, and its stream deltas in order."""

    message: dict[str, Any]
    finish_reason: str
    pieces: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Answer:
    """The whole answer: `n` choices and the usage of all of them."""

    choices: list[Choice]
    usage: Usage


def answer_to(request: dict[str, Any]) -> Answer:
    """The mock's answer to a chat-completions request; see the module docstring."""
    input_tokens = sum(math.ceil(len(text(m.get("content"))) / 4) + 4 for m in messages(request))
    n = request.get("n")
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    made = [_choice(request, i) for i in range(count)]
    return Answer([c for c, _ in made], Usage(input_tokens, sum(out for _, out in made)))


def _choice(request: dict[str, Any], index: int) -> tuple[Choice, int]:
    """Choice `index` and its output tokens."""
    tool = _tool_to_call(request)
    if tool is not None:
        name = str(tool.get("name", ""))
        args = orjson.dumps(example_value(_object_schema(tool.get("parameters")))).decode()
        seed = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
        if index:
            seed += f"#{index}".encode()
        call_id = "call_" + hashlib.sha256(seed).hexdigest()[:24]
        head = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            ],
        }
        pieces = [
            {"tool_calls": [head]},
            {"tool_calls": [{"index": 0, "function": {"arguments": args}}]},
        ]
        return Choice(message, "tool_calls", pieces), math.ceil(len(name + args) / 4)
    reply, is_json = _reply_text(request)
    finish = "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if (
        not is_json
        and isinstance(limit, int)
        and not isinstance(limit, bool)
        and limit >= 0
        and len(reply) > limit * 4
    ):
        reply, finish = reply[: limit * 4], "length"
    choice = Choice(
        {"role": "assistant", "content": reply}, finish, [{"content": w} for w in _words(reply)]
    )
    return choice, math.ceil(len(reply) / 4)


def _reply_text(request: dict[str, Any]) -> tuple[str, bool]:
    """The reply's text, and whether it is JSON (then it is never cut)."""
    echo = "echo: " + last_user_text(request)
    fmt = request.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        schema = _schema_in_messages(request)
        value = example_value(schema) if schema is not None else {"reply": echo}
        return orjson.dumps(value).decode(), True
    if kind == "json_schema" and isinstance(fmt, dict):
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(example_value(_object_schema(schema))).decode(), True
    return echo, False


def example_value(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value valid against a JSON schema, deterministically, with only its required parts.

    Understood: `$ref` into `$defs`/`definitions`, `const`, `enum` (its first value),
    `allOf` (merged), `anyOf`/`oneOf` (the first option that is not null), `type` (one or a
    list), objects (required properties), arrays (`items`, `prefixItems`, `minItems`,
    `uniqueItems`), string `minLength`/`maxLength`/`format`, number bounds and
    `multipleOf`. Not understood: `pattern`, `not`, `if`/`then`."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return "example"
    if depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve(ref, root)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        merged = _merge([target, rest]) if rest else target
        return example_value(merged, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        parts = [_deref(p, root) for p in schema["allOf"]]
        return example_value(_merge([rest, *parts]), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            real = [o for o in options if _deref(o, root).get("type") != "null"] or options
            rest = {k: v for k, v in schema.items() if k != key}
            option = _merge([rest, _deref(real[0], root)]) if rest else real[0]
            return example_value(option, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = [str(r) for r in required] if isinstance(required, list) else []
        return {name: example_value(props.get(name, {}), root, depth + 1) for name in names}
    if kind == "array":
        return _array(schema, root, depth)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema)


def _array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    size = max(_int(schema.get("minItems"), 0), len(prefix))
    items = schema.get("items")
    out = [example_value(prefix[i], root, depth + 1) for i in range(len(prefix))]
    out += [example_value(items, root, depth + 1) for _ in range(size - len(out))]
    if schema.get("uniqueItems"):
        out = _distinct(out, _deref(items, root))
    return out


def _distinct(values: list[Any], items: dict[str, Any]) -> list[Any]:
    """Make repeated values distinct (enum values in turn, numbers counted up, strings
    numbered); what cannot be told apart is left as it is."""
    enum = items.get("enum")
    out: list[Any] = []
    for i, v in enumerate(values):
        if isinstance(enum, list) and i < len(enum):
            v = enum[i]
        elif isinstance(v, bool) or v is None:
            pass
        elif isinstance(v, (int, float)):
            v = v + i
        elif isinstance(v, str) and i:
            v = f"{v}{i}"
        out.append(v)
    return out


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low: float | None = None
    high: float | None = None
    if _is_num(schema.get("minimum")):
        low = schema["minimum"]
    if _is_num(schema.get("exclusiveMinimum")):
        low = schema["exclusiveMinimum"] + 1
    if _is_num(schema.get("maximum")):
        high = schema["maximum"]
    if _is_num(schema.get("exclusiveMaximum")):
        high = schema["exclusiveMaximum"] - 1
    value: float = 0
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    step = schema.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        value = math.ceil(value / step) * step
        if high is not None and value > high:
            value -= step
    return math.ceil(value) if integer else value


def _string(schema: dict[str, Any]) -> str:
    formats = {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "00:00:00Z",
        "email": "user@example.com",
        "uri": "https://example.com/",
        "url": "https://example.com/",
        "uuid": "00000000-0000-4000-8000-000000000000",
        "ipv4": "192.0.2.1",
        "hostname": "example.com",
    }
    value = formats.get(str(schema.get("format")), "example")
    low = _int(schema.get("minLength"), 0)
    if len(value) < low:
        value += "x" * (low - len(value))
    high = schema.get("maxLength")
    if isinstance(high, int) and not isinstance(high, bool) and len(value) > high:
        value = value[:high]
    return value


def _resolve(ref: str, root: Any) -> dict[str, Any]:
    """The schema a local `$ref` ("#/$defs/Name", "#/definitions/Name", "#") points at."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _deref(schema: Any, root: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    return _resolve(ref, root) if isinstance(ref, str) else schema


def _merge(schemas: list[Any]) -> dict[str, Any]:
    """One schema asking what all of `schemas` ask, for `allOf` (properties and required
    united; any other key from the first schema that has it)."""
    merged: dict[str, Any] = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    for s in schemas:
        if not isinstance(s, dict):
            continue
        for k, v in s.items():
            if k == "properties" and isinstance(v, dict):
                props.update(v)
            elif k == "required" and isinstance(v, list):
                required += [r for r in v if r not in required]
            else:
                merged.setdefault(k, v)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _schema_in_messages(request: dict[str, Any]) -> dict[str, Any] | None:
    """The first JSON schema of an object written in the messages (system first), if any."""
    decoder = json.JSONDecoder()
    for m in messages(request):
        body = text(m.get("content"))
        start = body.find("{")
        tries = 0
        while start != -1 and tries < _SCAN_LIMIT:
            tries += 1
            try:
                value, _ = decoder.raw_decode(body, start)
            except ValueError:
                value = None
            if isinstance(value, dict) and (
                isinstance(value.get("properties"), dict) or value.get("type") == "object"
            ):
                return value
            start = body.find("{", start + 1)
    return None


def _object_schema(schema: Any) -> dict[str, Any]:
    return schema if isinstance(schema, dict) else {"type": "object"}


def _tool_to_call(request: dict[str, Any]) -> dict[str, Any] | None:
    tools = request.get("tools")
    last = last_message(request)
    if not isinstance(tools, list) or not tools or last is None or last.get("role") != "user":
        return None
    functions: list[dict[str, Any]] = [
        t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = request.get("tool_choice")
    if choice == "none" or not functions:
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        return next((f for f in functions if f.get("name") == wanted), functions[0])
    return functions[0]


def messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's messages that are objects."""
    found = request.get("messages")
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def last_message(request: dict[str, Any]) -> dict[str, Any] | None:
    """The request's last message, if any."""
    found = messages(request)
    return found[-1] if found else None


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user message ("" without one)."""
    for m in reversed(messages(request)):
        if m.get("role") == "user":
            return text(m.get("content"))
    return ""


def text(content: Any) -> str:
    """A message content's text: its text parts joined, an image part as "[image]"."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for p in content:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "text":
            parts.append(str(p.get("text", "")))
        elif p.get("type") in ("image_url", "image", "input_image"):
            parts.append("[image]")
    return " ".join(parts)


def _words(reply: str) -> list[str]:
    """Pieces that concatenate back to `reply`: each word with the space before it."""
    words = reply.split(" ")
    return [w for w in [words[0]] + [" " + w for w in words[1:]] if w]


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
