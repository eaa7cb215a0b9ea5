"""Budgets hold under concurrency in one gateway process (issue 12, point 3).

A real `python -m runtime serve` over the fake OpenAI provider. Route `solo` (openai/gpt) is
priced at $0 input and $2,000 per 1M output tokens; a request with `max_tokens: 5` therefore
reserves a worst case of exactly $0.01, and the fake's answer to "a b" ("Hello from
fake-openai: a b", 5 tokens) costs exactly that. The key's daily budget is $0.05: room for 5.
"""

from __future__ import annotations

import calendar
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runtime.config import Budget, Price
from tests.conftest import Fakes
from tests.fakes.base import Fault
from tests.gateway_env import Gateway, replace_model, runtime_config

BODY = {"model": "solo", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 5}


def _post(gw: Gateway, key: str, body: Any = BODY) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(
        gw.url + "/v1/chat/completions",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return (
                resp.status,
                {k.lower(): v for k, v in resp.headers.items()},
                json.loads(resp.read()),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


@pytest.fixture
def budget_gateway(clean_fakes: Fakes, tmp_path: Path) -> Iterator[Gateway]:
    config = runtime_config(
        clean_fakes.openai.url, clean_fakes.anthropic.url, clean_fakes.gemini.url
    )
    config = replace_model(config, "openai", "gpt", price=Price(0.0, 2000.0))
    limits = replace(config.limits, key_budget=Budget(usd_per_day=0.05, usd_per_month=None))
    gw = Gateway(replace(config, limits=limits), tmp_path)
    gw.start()
    yield gw
    gw.stop()


def test_fifty_concurrent_requests_against_room_for_five_admit_exactly_five(
    clean_fakes: Fakes, budget_gateway: Gateway
) -> None:
    gw = budget_gateway
    key = gw.key(name="burst")
    # The provider answers after a second, so every request is in flight at once.
    clean_fakes.openai.default = Fault("delay_headers", delay=1.0)
    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda _: _post(gw, key), range(50)))
    clean_fakes.openai.default = Fault("ok")

    outcomes = Counter(
        (status, None if status == 200 else body["error"]["code"]) for status, _, body in replies
    )
    assert outcomes == {(200, None): 5, (429, "budget_exceeded"): 45}
    assert len(clean_fakes.openai.requests) == 5
    assert all(int(h["retry-after"]) >= 1 for s, h, _ in replies if s == 429)
    records = gw.records(wait_for=50)
    costs = sorted(r["cost_usd"] for r in records if r["status"] == 200)
    assert costs == [pytest.approx(0.01)] * 5
    # Spent to the cent: the next one is refused too.
    status, _, body = _post(gw, key)
    assert (status, body["error"]["code"]) == (429, "budget_exceeded")


def test_one_after_another_the_sixth_is_refused_until_the_day_ends(
    budget_gateway: Gateway,
) -> None:
    gw = budget_gateway
    key = gw.key(name="steady")
    assert [_post(gw, key)[0] for _ in range(5)] == [200] * 5
    status, headers, body = _post(gw, key)
    assert (status, body["error"]["code"]) == (429, "budget_exceeded")
    message = body["error"]["message"]
    assert message.startswith("the daily budget of the key ($0.05) has $0 left")
    assert "worst-case cost of $0.01" in message and "smaller max_tokens" in message
    day_end = calendar.timegm((*time.gmtime()[:3], 0, 0, 0)) + 86400
    assert abs(int(headers["retry-after"]) - (day_end - time.time())) <= 5

    # A larger max_tokens reserves more: $0.06 never fits $0.05, $0.05 does.
    fresh = gw.key(name="fresh")
    status, _, body = _post(gw, fresh, {**BODY, "max_tokens": 30})
    assert (status, body["error"]["code"]) == (429, "budget_exceeded")
    assert "worst-case cost of $0.06" in body["error"]["message"]
    assert _post(gw, fresh, {**BODY, "max_tokens": 25})[0] == 200

    # After a restart the spend comes back from the request log.
    gw.stop()
    gw.start()
    assert _post(gw, key)[2]["error"]["code"] == "budget_exceeded"
    assert _post(gw, gw.key(name="after-restart"))[0] == 200


def test_bad_requests_after_authentication_use_up_requests_per_minute(
    clean_fakes: Fakes, tmp_path: Path
) -> None:
    config = runtime_config(
        clean_fakes.openai.url, clean_fakes.anthropic.url, clean_fakes.gemini.url
    )
    gw = Gateway(replace(config, limits=replace(config.limits, requests_per_minute=4)), tmp_path)
    with gw:
        key = gw.key(name="flood")
        bad = [
            b"{not json",
            {"model": "no-such-route", "messages": [{"role": "user", "content": "x"}]},
        ]
        assert [_post(gw, key, bad[i % 2])[0] for i in range(4)] == [400, 404, 400, 404]
        status, headers, body = _post(gw, key)
        assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
        assert int(headers["retry-after"]) >= 1
        assert clean_fakes.openai.requests == []
