"""runtime/scrub.py: no credential survives in provider text, a log line or a traceback."""

from __future__ import annotations

import logging

import pytest

from runtime import scrub
from runtime.errors import UpstreamError

# Key shapes as the providers document them (fake values of the real length and alphabet).
OPENAI_KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2
ANTHROPIC_KEY = "sk-ant-api03-" + "Zy9xWv8uTs7rQp6oNm5lKj4iHg3fEd2cBa1" * 3
GOOGLE_KEY = "AIzaSyD" + "x1Y2z3A4b5C6d7E8f9G0h1I2j3K4l5M"


@pytest.mark.parametrize("key", [OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY, "sk-abc***********wxyz"])
def test_key_shaped_strings_are_redacted_whatever_their_value(key: str) -> None:
    text = f"Incorrect API key provided: {key}. You can find your API key in the console."
    clean = scrub.scrub(text)
    assert key not in clean
    assert (
        clean == "Incorrect API key provided: [redacted]. You can find your API key in the console."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [redacted]"),
        ("proxy said basic dXNlcjpwYXNz here", "proxy said basic [redacted] here"),
        (
            "GET /v1beta/models?alt=sse&key=notshapedatall failed",
            "GET /v1beta/models?alt=sse&key=[redacted] failed",
        ),
        ('{"x-goog-api-key": "plainvalue42"}', '{"x-goog-api-key": "[redacted]"}'),
        ("x-api-key: plainvalue42, retry", "x-api-key: [redacted], retry"),
    ],
)
def test_a_labelled_secret_is_redacted_and_its_label_kept(text: str, expected: str) -> None:
    assert scrub.scrub(text) == expected


def test_a_registered_secret_is_redacted_wherever_it_appears() -> None:
    value = "corp-gateway-9f8e7d6c5b4a"  # no known shape: only its registration finds it
    assert scrub.scrub(f"bad key {value}!") == f"bad key {value}!"
    scrub.register([value, None, ""])
    assert scrub.scrub(f"bad key {value}!{value}") == "bad key [redacted]![redacted]"


def test_a_secret_that_contains_another_is_redacted_whole() -> None:
    scrub.register(["inner-secret-11", "outer-inner-secret-11-tail"])
    assert scrub.scrub("x outer-inner-secret-11-tail y") == "x [redacted] y"


def test_short_values_are_not_registered() -> None:
    scrub.register(["abcdefg"])
    assert scrub.scrub("abcdefg abcdefgh") == "abcdefg abcdefgh"


def test_scrubbing_twice_changes_nothing_more() -> None:
    text = f"Bearer {OPENAI_KEY} and key={GOOGLE_KEY}&x=1"
    once = scrub.scrub(text)
    assert once == "Bearer [redacted] and key=[redacted]&x=1"
    assert scrub.scrub(once) == once


def test_ordinary_text_is_left_alone() -> None:
    text = "task-force: the model's maximum context length is 8192 tokens (risk-aware)"
    assert scrub.scrub(text) == text


def test_an_upstream_error_is_clean_from_the_start() -> None:
    err = UpstreamError("auth", f"bad key {OPENAI_KEY}", code=f"key {GOOGLE_KEY}")
    assert err.message == "bad key [redacted]"
    assert str(err) == "bad key [redacted]"
    assert err.code == "key [redacted]"


def test_the_credential_headers_sent_are_the_values_to_register() -> None:
    headers = {
        "authorization": "Bearer tok-1234567",
        "x-api-key": "ant-7654321",
        "content-type": "application/json",
    }
    assert scrub.secret_values(headers) == ["tok-1234567", "ant-7654321"]


def test_log_lines_and_tracebacks_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("switchyard.chat")
    with caplog.at_level(logging.INFO, logger="switchyard"):
        log.warning("provider said %s", f"invalid key {ANTHROPIC_KEY}")
        try:
            raise ValueError(f"echo {GOOGLE_KEY}")
        except ValueError:
            log.exception("reading failed for %s", OPENAI_KEY)
    text = caplog.text
    assert "provider said invalid key [redacted]" in text
    assert "reading failed for [redacted]" in text
    assert "ValueError: echo [redacted]" in text
    for key in (OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY):
        assert key not in text
