"""Editors (issue 14): in a repository of a team's own that holds only a gateway.yaml and the
local schema copy `python -m compiler schema --write` made, yaml-language-server (the engine
behind VS Code's YAML extension and most editors' YAML support, from npm) reports a typo'd key
and a wrong type at their lines — driven over stdio as an editor drives it.

The server comes from npm: `.ci/run` installs it and sets SWITCHYARD_YAML_LANGUAGE_SERVER to
its executable; without it the test skips locally and fails in CI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_env import ROOT

SERVER_ENV = "SWITCHYARD_YAML_LANGUAGE_SERVER"


def _server() -> str:
    path = os.environ.get(SERVER_ENV) or shutil.which("yaml-language-server")
    if not path:
        if os.environ.get("CI"):
            pytest.fail(f"{SERVER_ENV} is not set: .ci/run installs yaml-language-server")
        pytest.skip("yaml-language-server is not installed (npm install yaml-language-server)")
    return path


class Lsp:
    """A minimal LSP client over a server's stdio (Content-Length framing, JSON-RPC)."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.next_id = 0

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def request(self, method: str, params: Any) -> int:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        return self.next_id

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        length = 0
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise EOFError("the language server exited")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        message: dict[str, Any] = json.loads(self.proc.stdout.read(length))
        return message

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def _diagnostics(lsp: Lsp, uri: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Answer the server's own requests until it publishes non-empty diagnostics for `uri`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = lsp.read()
        if "id" in msg and "method" in msg:  # a request from the server
            method = msg["method"]
            result: Any = None
            if method == "workspace/configuration":
                result = [
                    {"validate": True, "schemaStore": {"enable": False}}
                    for _ in msg["params"]["items"]
                ]
            lsp.send({"id": msg["id"], "result": result})
        elif msg.get("method") == "textDocument/publishDiagnostics":
            params = msg["params"]
            if params["uri"] == uri and params["diagnostics"]:
                found: list[dict[str, Any]] = params["diagnostics"]
                return found
    raise TimeoutError("no diagnostics within the timeout")


def test_an_editor_sees_a_typo_and_a_wrong_type_at_their_lines(tmp_path: Path) -> None:
    server = _server()
    repo = tmp_path / "team-repo"  # a team's own repository: a gateway.yaml, nothing else
    repo.mkdir()
    wrote = subprocess.run(
        [sys.executable, "-m", "compiler", "schema", "--write", "schema/gateway.schema.json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    modeline = wrote.stdout.strip().splitlines()[-1].split("gateway.yaml: ", 1)[1]
    lines = (ROOT / "gateway.yaml").read_text().splitlines()
    lines[0] = modeline  # the example's own modeline points at the checkout's schema
    typo = next(i for i, t in enumerate(lines) if t.strip() == "timeout_s: 120")
    lines[typo] = lines[typo].replace("timeout_s", "timeout_sec")
    workers = next(i for i, t in enumerate(lines) if t.strip() == "workers: 1")
    lines[workers] = lines[workers].replace("workers: 1", 'workers: "two"')
    doc = repo / "gateway.yaml"
    doc.write_text("\n".join(lines) + "\n")
    uri = doc.as_uri()

    lsp = Lsp([server, "--stdio"], repo)
    try:
        lsp.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": repo.as_uri(),
                "capabilities": {
                    "workspace": {"configuration": True},
                    "textDocument": {"publishDiagnostics": {}},
                },
            },
        )
        while "result" not in lsp.read():
            pass
        lsp.send({"method": "initialized", "params": {}})
        lsp.send(
            {
                "method": "workspace/didChangeConfiguration",
                "params": {
                    "settings": {"yaml": {"validate": True, "schemaStore": {"enable": False}}}
                },
            }
        )
        lsp.send(
            {
                "method": "textDocument/didOpen",
                "params": {
                    "textDocument": {
                        "uri": uri,
                        "languageId": "yaml",
                        "version": 1,
                        "text": doc.read_text(),
                    }
                },
            }
        )
        found = _diagnostics(lsp, uri)
    finally:
        lsp.close()
    by_line = {d["range"]["start"]["line"]: d["message"] for d in found}
    assert typo in by_line and "timeout_sec" in by_line[typo], found
    assert workers in by_line and "integer" in by_line[workers].lower(), found
