"""Keys and BYOK shared by two hosts through PostgreSQL, end to end.

Two `python -m runtime serve` processes with separate data dirs (two hosts) and one
PostgreSQL database, started at the same moment on the empty database (both migrate). A key
made with `python -m runtime keys create --config runtime.json` works on both; revoked with
`keys revoke`, both refuse it (401 `key_revoked`) within a second of the command returning.
An org's own credential stored with `byok set` is what both send upstream within a couple of
seconds. Neither the URL's password nor a credential appears in any output or log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import psycopg

from runtime.config import OrgConfig, RuntimeConfig, SecretSpec, StateConfig
from tests.fakes.openai_fake import openai_fake
from tests.gateway_env import ROOT, Gateway, run_cli, runtime_config

URL_VAR = "SHARED_PG_URL"
PASSWORD = "pw-of-the-shared-db-51fa"  # trust auth ignores it; it must appear nowhere
BYOK_VAR = "GLOBEX_BYOK_KEY"
BYOK_SECRET = "byok-sealing-secret-" + "s" * 24
ORG_KEY = "globex-own-openai-key-93b1"


def shared_config(openai_url: str) -> RuntimeConfig:
    config = runtime_config(openai_url, "http://127.0.0.1:9", "http://127.0.0.1:9")
    globex = OrgConfig("globex", None, None, frozenset({"openai"}), BYOK_VAR)
    return replace(
        config,
        orgs={**config.orgs, "globex": globex},
        secrets={
            **config.secrets,
            BYOK_VAR: SecretSpec(BYOK_VAR, "orgs.globex.byok.encryption_key", optional=True),
        },
        state=StateConfig(keys_store="postgres", postgres_url_secret=URL_VAR),
    ).with_hash()


def status(gw: Gateway, key: str) -> tuple[int, str]:
    """(HTTP status, error code or "") of GET /v1/models with `key`."""
    req = urllib.request.Request(gw.url + "/v1/models", headers={"authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, str(json.loads(exc.read())["error"]["code"])


def start_together(*gateways: Gateway) -> None:
    errors: list[BaseException] = []

    def start(gw: Gateway) -> None:
        try:
            gw.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(gw,)) for gw in gateways]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_two_hosts_share_keys_and_byok_through_postgres(postgres_url: str, tmp_path: Path) -> None:
    url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    env = {URL_VAR: url, BYOK_VAR: BYOK_SECRET}
    with openai_fake(api_key=ORG_KEY) as fake:
        config = shared_config(fake.url)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = Gateway(config, tmp_path / "a", env=env)
        b = Gateway(config, tmp_path / "b", env=env)
        cli_env = {**a.env}
        outputs: list[str] = []
        start_together(a, b)  # both migrate the empty database at once
        try:
            with psycopg.connect(postgres_url) as conn:
                ledger = conn.execute(
                    "SELECT component, version FROM switchyard_migrations ORDER BY 1"
                ).fetchall()
            assert ledger == [("byok", 1), ("keys", 1)]

            made = run_cli(
                "keys",
                "create",
                "--config",
                str(a.config_path),
                "--org",
                "globex",
                "--name",
                "ci",
                env=cli_env,
            )
            outputs.append(made.stderr)  # stdout is the key itself, shown once
            key = made.stdout.strip().splitlines()[-1]
            key_id = key.split("_")[2]
            for gw in (a, b):
                gw.wait_for_key(key, timeout=2)
                assert status(gw, key) == (200, "")

            # BYOK: stored once through PostgreSQL, used by both hosts.
            stored = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "runtime",
                    "byok",
                    "set",
                    "--config",
                    str(b.config_path),
                    "--org",
                    "globex",
                    "--provider",
                    "openai",
                ],
                cwd=ROOT,
                env={**cli_env, "SWITCHYARD_CONFIG": ""},
                input=ORG_KEY,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert stored.returncode == 0, stored.stderr
            outputs.append(stored.stdout + stored.stderr)
            for gw in (a, b):
                deadline = time.monotonic() + 3
                while True:
                    req = urllib.request.Request(
                        gw.url + "/v1/chat/completions",
                        data=json.dumps(
                            {"model": "solo", "messages": [{"role": "user", "content": "hi"}]}
                        ).encode(),
                        headers={
                            "authorization": f"Bearer {key}",
                            "content-type": "application/json",
                        },
                    )
                    try:
                        with urllib.request.urlopen(req, timeout=5) as resp:
                            assert resp.status == 200
                            break
                    except urllib.error.HTTPError:
                        # the environment's key goes upstream until the org's is seen
                        assert time.monotonic() < deadline, "BYOK credential not picked up"
                        time.sleep(0.1)
                assert fake.requests[-1].headers["Authorization"] == f"Bearer {ORG_KEY}"

            # Both hosts are watched from before the command runs, so the time each starts
            # refusing is measured from the revocation's commit (revoked_at), not from the
            # command's exit.
            refused: dict[str, float] = {}
            stop = threading.Event()

            def watch(name: str, gw: Gateway) -> None:
                while not stop.is_set():
                    if status(gw, key) == (401, "key_revoked"):
                        refused[name] = time.time()
                        return
                    time.sleep(0.01)

            watchers = [
                threading.Thread(target=watch, args=(name, gw), daemon=True)
                for name, gw in (("a", a), ("b", b))
            ]
            for w in watchers:
                w.start()
            revoked = run_cli("keys", "revoke", "--config", str(a.config_path), key_id, env=cli_env)
            outputs.append(revoked.stdout + revoked.stderr)
            for w in watchers:
                w.join(5)
            stop.set()
            with psycopg.connect(postgres_url) as conn:
                row = conn.execute(
                    "SELECT revoked_at FROM switchyard_keys WHERE id = %s", (key_id,)
                ).fetchone()
            assert row is not None and row[0] is not None
            delays = {name: at - float(row[0]) for name, at in refused.items()}
            assert set(delays) == {"a", "b"}, f"not refused by every host: {delays}"
            assert max(delays.values()) < 1.0, f"revocation took {delays} s"

            listed = run_cli("keys", "list", "--config", str(b.config_path), env=cli_env)
            outputs.append(listed.stdout + listed.stderr)
            assert key_id in listed.stdout and "revoked" in listed.stdout
        finally:
            a.stop()
            b.stop()
        for gw in (a, b):
            assert not (gw.data_dir / "keys.db").exists()
            assert not (gw.data_dir / "byok.db").exists()
            outputs.append(gw.log.read_text())
        text = "\n".join(outputs)
        for hidden in (PASSWORD, ORG_KEY, BYOK_SECRET, key):
            assert hidden not in text


def test_serve_refuses_a_key_store_it_cannot_use_in_one_line(tmp_path: Path) -> None:
    from tests.servers import free_port

    dead = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nothing"
    for env, expected in (({}, f"environment variable {URL_VAR}"), ({URL_VAR: dead}, "refused")):
        gw = Gateway(shared_config("http://127.0.0.1:9"), tmp_path, env=env)
        if not env:
            gw.env.pop(URL_VAR, None)
        argv = ["serve", "--config", str(gw.config_path), "--port", str(gw.port)]
        proc = subprocess.run(
            [sys.executable, "-m", "runtime", *argv, "--data-dir", str(gw.data_dir)],
            cwd=ROOT,
            env=gw.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        assert expected in proc.stderr and "state.keys" in proc.stderr
        assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout


def readyz(gw: Gateway) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(gw.url + "/readyz", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_postgres_outage_serves_the_last_keys_and_says_so(tmp_path: Path) -> None:
    from tests.servers import PostgresServer, fresh_database

    server = PostgresServer.start()
    try:
        url = fresh_database(server.url)
        gw = Gateway(shared_config("http://127.0.0.1:9"), tmp_path, env={URL_VAR: url})
        gw.start()
        try:
            made = run_cli(
                "keys",
                "create",
                "--config",
                str(gw.config_path),
                "--org",
                "acme",
                "--name",
                "ci",
                env=gw.env,
            )
            key = made.stdout.strip().splitlines()[-1]
            gw.wait_for_key(key, timeout=2)
            server.stop()
            time.sleep(1.0)
            assert status(gw, key) == (200, "")  # served from memory
            code, body = readyz(gw)
            assert code == 200 and body["ready"] is True
            assert any("key store unreachable" in str(w) for w in body["warnings"]), body
            server.resume()
            revoked = run_cli(
                "keys", "revoke", "--config", str(gw.config_path), key.split("_")[2], env=gw.env
            )
            assert revoked.returncode == 0
            deadline = time.monotonic() + 10
            while status(gw, key) != (401, "key_revoked"):
                assert time.monotonic() < deadline, "no recovery after PostgreSQL came back"
                time.sleep(0.05)
            warnings = readyz(gw)[1]["warnings"]
            assert not any("unreachable" in str(w) for w in warnings), warnings
            log = gw.log.read_text()
            assert log.count("cannot refresh the keys") == 1, log
        finally:
            gw.stop()
    finally:
        server.remove()
