"""Deploy unit tests, without a Docker engine or an sshd: claims.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from deployer import claims
from deployer import commands as cmd
from deployer.bundle import Bundle, DeployError
from deployer.hosts import LocalHost, Result
from deployer.state import (
    Paths,
)
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    Compile,
    changed,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
compile_env = support.compile_env
no_secret_sources = support.no_secret_sources
staging = support.staging


class CannedDocker(LocalHost):
    """This machine for files and flock; `docker` answers with a canned `docker ps` output."""

    def __init__(self, ps: str = "") -> None:
        self.ps = ps
        self.docker_calls: list[list[str]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        if argv[0] == "docker":
            self.docker_calls.append(list(argv))
            return Result(0, self.ps, "")
        return super().run(argv, stdin=stdin, check=check, timeout=timeout)


def test_published_ports_are_read_from_docker_ps() -> None:
    host = CannedDocker(
        "aaa\tneighbour\t127.0.0.1:8200->8000/tcp, [::1]:8200->8000/tcp\n"
        "bbb\t\t0.0.0.0:9000->9000/tcp, :::9000->9000/tcp\n"
        "ccc\tquiet\t8000/tcp\n"
        "ddd\tv4v6\t0.0.0.0:9100->80/tcp, [::]:9101->80/tcp, 10.1.2.3:9102->81/udp\n"
    )
    assert claims.published_ports(host) == {
        8200: "neighbour",
        9000: "container bbb",
        9100: "v4v6",
        9101: "v4v6",
        9102: "v4v6",
    }
    assert host.docker_calls == [cmd.published_containers()]
    assert cmd.published_containers() == [
        "docker",
        "ps",
        "--format",
        '{{.ID}}\t{{.Label "com.docker.compose.project"}}\t{{.Ports}}',
    ]


def test_a_published_port_range_counts_as_taken() -> None:
    host = CannedDocker("eee\trange\t0.0.0.0:8199-8201->8199-8201/tcp\n")
    assert claims.published_ports(host).get(8200) == "range"


def test_another_project_claiming_our_port_is_a_conflict(staging: Bundle) -> None:
    theirs = {"acme-prod": claims.Claim("acme", "prod", 8200)}
    assert claims.conflicts(staging, theirs, {}) == [
        "port 8200 is claimed on this host by 'acme-prod' (project 'acme', environment 'prod'); "
        "pick another environments.staging.port"
    ]


def test_our_compose_project_claimed_by_someone_else_is_a_conflict(staging: Bundle) -> None:
    theirs = {"hello-gateway-staging": claims.Claim("other-team", "staging", 9999)}
    assert claims.conflicts(staging, theirs, {}) == [
        "the compose project 'hello-gateway-staging' is claimed on this host by project "
        "'other-team' environment "
        "'staging'; set environments.staging.compose_project to another name"
    ]


def test_a_port_published_by_a_foreign_container_is_a_conflict(staging: Bundle) -> None:
    published = claims.published_ports(
        CannedDocker("aaa\tneighbour\t127.0.0.1:8200->8000/tcp, [::1]:8200->8000/tcp\n")
    )
    assert claims.conflicts(staging, {}, published) == [
        "port 8200 is already published on this host by 'neighbour'; pick another "
        "environments.staging.port"
    ]
    published = claims.published_ports(CannedDocker("0123456789ab\t\t0.0.0.0:8200->8200/tcp\n"))
    assert claims.conflicts(staging, {}, published) == [
        "port 8200 is already published on this host by 'container 0123456789ab'; pick another "
        "environments.staging.port"
    ]


def test_our_own_claim_and_our_own_containers_are_no_conflict(staging: Bundle) -> None:
    ours = {
        "hello-gateway-staging": claims.Claim("hello-gateway", "staging", 8200),
        "hello-gateway-production": claims.Claim("hello-gateway", "production", 8300),
    }
    assert (
        claims.conflicts(
            staging, ours, {8200: "hello-gateway-staging", 8300: "hello-gateway-production"}
        )
        == []
    )


def test_claims_render_and_parse_round_trip() -> None:
    theirs = {
        "b-prod": claims.Claim("b", "prod", 8301),
        "a-staging": claims.Claim("a", "staging", 8200),
    }
    data = claims.render(theirs, "alice@laptop", "2026-01-01T00:00:00Z")
    assert claims.parse(data) == theirs
    doc = json.loads(data)
    assert (doc["version"], doc["updated_by"], doc["updated"], list(doc["projects"])) == (
        1,
        "alice@laptop",
        "2026-01-01T00:00:00Z",
        ["a-staging", "b-prod"],
    )
    assert claims.parse(None) == {} and claims.parse(b"") == {}


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[1, 2]",
        b'{"projects": {"x": {"project": "a"}}}',
        b'{"projects": {"x": {"project": "a", "environment": "e", "port": "eighty"}}}',
        b'{"projects": {"x": "a"}}',
    ],
)
def test_an_unreadable_claims_file_stops_the_deploy_naming_the_fix(data: bytes) -> None:
    with pytest.raises(
        DeployError,
        match=r"^.*claims\.json on the host is not a valid claims file \(.*\); fix it by hand, or "
        r"remove it and deploy every environment on this host again$",
    ):
        claims.parse(data)


def test_claim_records_ours_and_refuses_a_second_project_on_our_port(
    staging: Bundle, compile_env: Compile, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    host = CannedDocker()
    claims.claim(
        host,
        Paths(str(root), staging.compose_project),
        staging,
        "alice@laptop",
        "2026-01-01T00:00:00Z",
    )
    written = (root / "claims.json").read_bytes()
    assert claims.parse(written) == {
        "hello-gateway-staging": claims.Claim("hello-gateway", "staging", 8200)
    }

    other = compile_env(changed(lambda c: c.update(project="other-gateway")), "staging")
    with pytest.raises(DeployError) as err:
        claims.claim(
            host, Paths(str(root), other.compose_project), other, "bob@desk", "2026-01-02T00:00:00Z"
        )
    assert str(err.value) == (
        "refusing to deploy: port 8200 is claimed on this host by 'hello-gateway-staging' "
        "(project 'hello-gateway', environment 'staging'); pick another environments.staging.port"
    )
    assert (root / "claims.json").read_bytes() == written
    # the claims lock was released on the way out
    held, _ = LocalHost().hold(cmd.lock(str(root / "claims.lock"), None), "locked", 5)
    assert held is not None
    held.release()
