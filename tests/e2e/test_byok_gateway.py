"""BYOK end to end: an org's own provider key, stored sealed with `python -m runtime byok set`,
is what the gateway sends upstream for that org's requests — and only for them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import openai

from runtime.config import OrgConfig, SecretSpec
from tests.fakes.openai_fake import openai_fake
from tests.gateway_env import ROOT, Gateway, runtime_config

ORG_KEY = "org-own-openai-key-4f9d2c"
SECRET = "byok-sealing-secret-" + "k" * 24


def test_org_credentials_are_used_only_for_that_org(tmp_path: Path) -> None:
    with openai_fake(api_key=ORG_KEY) as fake:
        config = runtime_config(fake.url, "http://127.0.0.1:9", "http://127.0.0.1:9")
        globex = OrgConfig("globex", None, None, frozenset({"openai"}), "GLOBEX_BYOK_KEY")
        secret = SecretSpec("GLOBEX_BYOK_KEY", "orgs.globex.byok.encryption_key", optional=True)
        config = replace(
            config,
            orgs={**config.orgs, "globex": globex},
            secrets={**config.secrets, "GLOBEX_BYOK_KEY": secret},
        )
        gw = Gateway(config, tmp_path, env={"GLOBEX_BYOK_KEY": SECRET})
        gw.data_dir.mkdir(parents=True)
        stored = subprocess.run(
            [
                sys.executable,
                "-m",
                "runtime",
                "byok",
                "set",
                "--env",
                "test",
                "--org",
                "globex",
                "--provider",
                "openai",
                "--config",
                str(gw.config_path),
                "--data-dir",
                str(gw.data_dir),
            ],
            input=ORG_KEY + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "GLOBEX_BYOK_KEY": SECRET},
            timeout=30,
        )
        assert stored.returncode == 0, stored.stderr
        assert ORG_KEY not in stored.stdout + stored.stderr
        with gw:
            globex = openai.OpenAI(
                base_url=gw.url + "/v1", api_key=gw.key(org="globex"), max_retries=0
            )
            acme = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key(org="acme"), max_retries=0)
            reply = globex.chat.completions.create(
                model="solo", messages=[{"role": "user", "content": "hi"}]
            )
            assert (reply.choices[0].message.content or "").startswith("Hello from fake-openai")
            assert fake.requests[-1].headers["Authorization"] == f"Bearer {ORG_KEY}"
            # acme has no BYOK: the environment's key goes upstream, which this fake refuses.
            try:
                acme.chat.completions.create(
                    model="solo", messages=[{"role": "user", "content": "hi"}]
                )
                raise AssertionError("acme must not get globex's credentials")
            except openai.APIStatusError as exc:
                assert exc.status_code == 502 and exc.code == "upstream_auth_failed"
            assert fake.requests[-1].headers["Authorization"] == "Bearer test-openai-key"
            rows = gw.records(wait_for=2)
        log = gw.log.read_text()
        db = b"".join(p.read_bytes() for p in gw.data_dir.iterdir() if p.is_file())
        for secret in (ORG_KEY, SECRET):
            assert secret not in log
            assert secret.encode() not in db
            assert secret not in str(rows)
