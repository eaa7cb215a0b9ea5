"""Token estimates for routing (context window, cost cap) and for records without usage.

A deliberately simple rule — about four characters per token, a fixed cost per message and per
image — fast enough for the hot path. Records that use it are flagged `usage_estimated`.
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKENS = 765  # an OpenAI high-detail 512px tile set; a conservative middle
MESSAGE_OVERHEAD = 4


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def prompt_tokens(request: dict[str, Any]) -> int:
    """Estimated input tokens of a chat-completions request (messages, tools, images)."""
    total = 0
    for msg in request.get("messages") or ():
        total += MESSAGE_OVERHEAD
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            total += text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    total += text_tokens(str(part.get("text", "")))
                elif part.get("type") in ("image_url", "input_image", "image"):
                    total += IMAGE_TOKENS
                else:
                    total += text_tokens(str(part))
        for call in msg.get("tool_calls") or ():
            total += text_tokens(str(call))
    tools = request.get("tools")
    if tools:
        total += text_tokens(str(tools))
    return total


def message_tokens(message: dict[str, Any]) -> int:
    """Estimated output tokens of an assistant message."""
    total = 0
    content = message.get("content")
    if isinstance(content, str):
        total += text_tokens(content)
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        total += text_tokens(str(fn.get("name", ""))) + text_tokens(str(fn.get("arguments", "")))
    return total


def delta_chars(choices: list[dict[str, Any]]) -> int:
    """Characters of output in one stream chunk's choices (for estimating streamed output)."""
    n = 0
    for c in choices:
        d = c.get("delta") or {}
        content = d.get("content")
        if content:
            n += len(content)
        for call in d.get("tool_calls") or ():
            fn = call.get("function") or {}
            n += len(fn.get("name") or "") + len(fn.get("arguments") or "")
    return n
