"""Shared fixtures: fake providers (real loopback servers) and a running gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.anthropic_fake import anthropic_fake
from tests.fakes.base import FakeProvider
from tests.fakes.gemini_fake import gemini_fake
from tests.fakes.openai_fake import openai_fake
from tests.gateway_env import Gateway, runtime_config
from tests.servers import postgres_server, postgres_url, redis_server, redis_url  # noqa: F401


class Fakes:
    def __init__(self) -> None:
        self.openai = openai_fake().start()
        self.anthropic = anthropic_fake().start()
        self.gemini = gemini_fake().start()

    def all(self) -> list[FakeProvider]:
        return [self.openai, self.anthropic, self.gemini]

    def reset(self) -> None:
        for f in self.all():
            f.reset()

    def stop(self) -> None:
        for f in self.all():
            f.stop()


@pytest.fixture(scope="session")
def fakes() -> Iterator[Fakes]:
    f = Fakes()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway per test module, serving runtime_config() over the fakes."""
    config = runtime_config(fakes.openai.url, fakes.anthropic.url, fakes.gemini.url)
    gw = Gateway(config, Path(tmp_path_factory.mktemp("gateway")))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def clean_fakes(fakes: Fakes) -> Iterator[Fakes]:
    fakes.reset()
    yield fakes
    fakes.reset()
