"""A credential that cannot travel in an HTTP header (outside Latin-1, or with a line break):
the gateway refuses to start naming the provider and the secret (runtime/app.py, `serve`), and
a per-request (BYOK) credential is a classified refusal of that candidate, never a 500. The
value is never printed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runtime.adapters import ADAPTERS
from runtime.adapters.base import Call
from runtime.adapters.transport import Transport
from runtime.app import create_app, unsendable_credentials
from runtime.config import ConfigError
from runtime.errors import Unservable
from tests.e2e.test_transport import answering, response, serve
from tests.gateway_env import FAKE_KEYS, free_port, run_cli, runtime_config

LOCAL = "http://127.0.0.1:9"
BAD = {
    "a character outside Latin-1": "sk-ключ-123",
    "a line break": "sk-abc123\n",
}


@pytest.mark.parametrize("why", list(BAD))
def test_the_gateway_refuses_to_start_naming_the_provider_and_the_secret(
    why: str, tmp_path: Path
) -> None:
    env = {**FAKE_KEYS, "ANTHROPIC_API_KEY": BAD[why]}
    config = runtime_config(LOCAL + "/v1", LOCAL, LOCAL)
    problems = unsendable_credentials(config, env)
    assert problems == [
        f"secret ANTHROPIC_API_KEY (api_key of provider anthropic) contains {why} and cannot "
        "be sent in an HTTP header; set it to the provider's key exactly"
    ]
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY") as exc:
        create_app(config, tmp_path, env)
    assert BAD[why].strip() not in str(exc.value)
    assert unsendable_credentials(config, FAKE_KEYS) == []
    assert unsendable_credentials(config, {**FAKE_KEYS, "GEMINI_API_KEY": "clé-é"}) == []


def test_serve_exits_with_a_clear_error_and_never_prints_the_value(tmp_path: Path) -> None:
    config = runtime_config(LOCAL + "/v1", LOCAL, LOCAL).with_hash()
    path = tmp_path / "runtime.json"
    path.write_text(config.to_json())
    env = {**os.environ, **FAKE_KEYS, "OPENAI_API_KEY": "sk-ключ-секрет"}
    proc = run_cli(
        "serve",
        "--config",
        str(path),
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        env=env,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(
        "error: secret OPENAI_API_KEY (api_key of provider openai) contains a character "
        "outside Latin-1"
    ), proc.stderr
    assert "ключ" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("adapter", ["openai", "anthropic", "gemini"])
def test_a_per_request_credential_that_cannot_be_sent_skips_the_candidate(adapter: str) -> None:
    """BYOK credentials come per request: the adapter raises Unservable (the fallback loop
    skips the candidate with this reason and tries the next) and sends nothing."""

    async def main() -> None:
        async with serve(answering(response(b"{}"))) as srv, Transport() as t:
            provider = runtime_config(srv.url("/v1"), srv.url(""), srv.url("")).providers[adapter]
            model = next(iter(provider.models.values()))
            impl = ADAPTERS[provider.adapter](provider, t)
            call = Call(
                request={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                model=model,
                credentials={"api_key": "sk-ключ"},
                request_id="req-1",
            )
            with pytest.raises(Unservable) as exc:
                await impl.complete(call)
            assert "outside Latin-1" in exc.value.message
            assert "ключ" not in exc.value.message
            with pytest.raises(Unservable):
                await impl.open_stream(call)
            await asyncio.sleep(0.05)
            assert srv.connections == 0

    asyncio.run(main())


@pytest.mark.parametrize("value", ["sk-ключ", "sk-abc\r\nx-injected: 1"])
def test_the_mock_transport_refuses_such_a_header_as_the_real_one_does(value: str) -> None:
    from runtime.adapters.mock_transport import MockResponse, MockTransport
    from runtime.adapters.transport import InvalidHeader, Timeout

    async def main() -> None:
        mock = MockTransport(lambda request: MockResponse(200, b"{}"))
        with pytest.raises(InvalidHeader, match="'x-api-key'") as exc:
            await mock.post("http://x/", {"x-api-key": value}, b"", Timeout(1, 1, 1))
        assert value not in str(exc.value)
        assert mock.requests == []
        async with serve(answering(response(b"{}"))) as srv, Transport() as t:
            with pytest.raises(InvalidHeader, match="'x-api-key'"):
                await t.post(srv.url(), {"x-api-key": value}, b"", Timeout(1, 1, 1))

    asyncio.run(main())
