"""The gateway's own request timeout (`server.request_timeout_s`), before and after commit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest

from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, runtime_config


@pytest.fixture(scope="module")
def short_gw(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = runtime_config(
        fakes.openai.url,
        fakes.anthropic.url,
        fakes.gemini.url,
        timeout_s=5.0,
        first_byte_timeout_s=5.0,
    )
    config = replace(config, request_timeout_s=0.6)
    gw = Gateway(config, Path(tmp_path_factory.mktemp("timeouts")))
    gw.start()
    yield gw
    gw.stop()


def test_no_answer_within_request_timeout_is_504(short_gw: Gateway, clean_fakes: Fakes) -> None:
    client = openai.OpenAI(
        base_url=short_gw.url + "/v1", api_key=short_gw.key(), max_retries=0, timeout=10
    )
    clean_fakes.openai.push(Fault("delay_headers", delay=2.0))
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="solo", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 504
    assert exc.value.code == "request_timeout"
    rec = short_gw.record(exc.value.response.headers["x-request-id"])
    assert (rec["status"], rec["error_code"]) == (504, "request_timeout")
    assert rec["latency_ms"] < 1500


def test_a_stream_past_request_timeout_ends_with_an_error_event(
    short_gw: Gateway, clean_fakes: Fakes
) -> None:
    client = openai.OpenAI(
        base_url=short_gw.url + "/v1", api_key=short_gw.key(name="s"), max_retries=0, timeout=10
    )
    clean_fakes.openai.push(Fault("slow_stream", delay=0.3))
    raw = client.chat.completions.with_raw_response.create(
        model="solo", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in raw.parse():
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert "took longer" in str(exc.value.message)
    assert text.startswith("Hello")
    rec = short_gw.record(raw.headers["x-request-id"])
    assert (rec["status"], rec["error_code"], rec["broke_after_commit"]) == (
        200,
        "request_timeout",
        1,
    )
    # The gateway is still serving.
    assert client.chat.completions.create(
        model="offline", messages=[{"role": "user", "content": "x"}]
    ).choices
