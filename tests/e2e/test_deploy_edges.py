"""deploy.py end to end, the cases beside the main story (tests/e2e/test_deploy_e2e.py):

- a compose project name already used on the host by containers we do not own is refused,
  and those containers are left alone;
- replicas 1 -> 2 in a release that never becomes ready: the single live gateway and the proxy
  are not touched, and the new release's gateways are removed;
- `target: local` runs the same steps on this machine;
- SSH host keys: an unknown host is trusted once and remembered (or refused with
  --strict-host-keys); a changed host key is always refused.

Real Docker engine, Compose v2 and sshd on 127.0.0.1; skipped locally without them, failed in CI.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy_env import (
    BASE_IMAGE,
    DeployProject,
    Sshd,
    chat,
    containers,
    free_port,
    make_key,
    remove_project_resources,
    require_docker,
    run,
    snapshot,
    tmpdir,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    require_docker()
    root = tmpdir("sytest-edges-")
    server = Sshd(root / "sshd").start()
    try:
        yield server
    finally:
        server.stop()
        run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def project(sshd: Sshd, tmp_path: Path) -> Iterator[DeployProject]:
    p = DeployProject(tmp_path / "project", sshd).create()
    try:
        yield p
    finally:
        p.cleanup()


def running(project: DeployProject, env: str) -> dict[str, list[str]]:
    """{service: [container names]} of the running containers of `env`."""
    out: dict[str, list[str]] = {}
    for c in containers(project.compose_project(env)):
        if c["State"]["Status"] == "running":
            out.setdefault(c["Config"]["Labels"]["com.docker.compose.service"], []).append(
                c["Name"].lstrip("/")
            )
    return out


def test_a_compose_project_used_by_containers_we_do_not_own_is_refused(
    project: DeployProject,
) -> None:
    cp = project.compose_project("staging")
    intruder = f"{cp}-intruder"
    run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            intruder,
            "--label",
            f"com.docker.compose.project={cp}",
            "--label",
            "com.docker.compose.service=gateway",
            BASE_IMAGE,
            "sleep",
            "600",
        ]
    )
    try:
        before = snapshot(cp)
        result = project.deploy("staging", "--yes")
        assert result.returncode == 1, result
        last = result.stdout.strip().splitlines()[-1]
        assert "Switchyard does not own" in last and intruder in last and f"'{cp}'" in last, last
        assert snapshot(cp) == before, "the intruder was touched"
        assert project.releases("staging") == [], (
            "a release was uploaded although the deploy was refused"
        )
        assert not (project.env_dir("staging") / "secrets.env").exists(), (
            "secrets were written although the deploy was refused"
        )
    finally:
        run(["docker", "rm", "-f", intruder], check=False)


BROKEN = "        problems = list(self.not_ready)\n"
BREAK = '        problems = [*self.not_ready, "broken on purpose by the edge test"]\n'


def test_a_failed_release_with_more_replicas_leaves_the_single_gateway_untouched(
    project: DeployProject,
) -> None:
    env = "production"
    single = copy.deepcopy(project.config)
    single["environments"][env]["replicas"] = 1
    project.config = single
    project.write_config()
    project.commit("production with one replica")
    first = project.deploy(env, "--yes")
    assert first.returncode == 0, first
    before = running(project, env)
    assert before.keys() == {"gateway-a1", "proxy"}, before
    snap = snapshot(project.compose_project(env))
    old_release = project.current(env)
    key = make_key(project, env)
    assert chat(project.ports[env], key) == "echo: Hello!"

    # Two replicas, and a release whose gateways never become ready.
    project.config["environments"][env]["replicas"] = 2
    project.write_config()
    app = project.repo / "runtime" / "app.py"
    assert app.read_text().count(BROKEN) == 1, (
        "runtime/app.py changed: update how this test breaks readiness"
    )
    app.write_text(app.read_text().replace(BROKEN, BREAK))
    project.commit("two replicas, never ready")
    result = project.deploy(env, "--yes", "--json")
    assert result.returncode == 1, result
    doc = result.json()
    assert doc["result"] == "failed", doc
    assert doc["services"]["gateway"]["action"] == "rebuild", doc["services"]
    assert (
        "broken on purpose" in doc["error"]
        and f"release {old_release} keeps serving, untouched" in doc["error"]
    ), doc["error"]
    # Exactly what ran before: the same containers, started at the same time; the new ones are gone.
    assert snapshot(project.compose_project(env)) == snap
    assert project.current(env) == old_release
    assert chat(project.ports[env], key) == "echo: Hello!"
    history = project.history_lines(env)
    assert [h["result"] for h in history] == ["ok", "failed"], history


def test_a_local_target_runs_the_same_steps_on_this_machine(project: DeployProject) -> None:
    env = "local"
    local = {
        k: v
        for k, v in project.config["environments"]["staging"].items()
        if k not in ("host", "ssh_port", "ssh_user")
    }
    local.update(
        target="local",
        port=free_port(),
        secrets={"VENDOR_API_KEY": {"env": "SYTEST_LOCAL_VENDOR_KEY", "optional": True}},
    )
    project.config["environments"][env] = local
    project.ports[env] = local["port"]
    project.write_config()
    project.commit("a local environment")
    cp = project.compose_project(env)
    try:
        first = project.deploy(env, "--yes")
        assert first.returncode == 0, first
        assert first.stdout.strip().splitlines()[-1].startswith(f"{env}: release "), first
        before = snapshot(cp)
        assert sorted(running(project, env)) == ["gateway-a1", "proxy"]
        key = make_key(project, env)
        assert chat(project.ports[env], key) == "echo: Hello!"
        again = project.deploy(env, "--yes")
        assert again.returncode == 0 and "nothing changed" in again.stdout, again
        assert snapshot(cp) == before
        assert project.current(env) is not None and len(project.releases(env)) == 1
    finally:
        remove_project_resources(cp, [f"{cp}/*"])


def host_key_line(sshd: Sshd, pub: Path) -> str:
    kind, b64 = pub.read_text().split()[:2]
    return f"[127.0.0.1]:{sshd.port} {kind} {b64}"


def test_an_unknown_host_key_is_remembered_on_first_use_and_then_checked_strictly(
    project: DeployProject, sshd: Sshd
) -> None:
    assert not project.known_hosts.exists()
    strict = project.deploy("staging", "--plan", "--strict-host-keys")
    assert strict.returncode == 1, strict
    assert "not found in known_hosts" in strict.stdout and "ssh-keyscan -p" in strict.stdout, strict
    assert not project.deploy_dir.exists() or not any(project.deploy_dir.iterdir())

    first = project.deploy("staging", "--plan")
    assert first.returncode == 0, first
    assert (
        f"first connection to [127.0.0.1]:{sshd.port}: trusted its ssh-ed25519 key" in first.stderr
    ), first
    assert project.known_hosts.read_text().splitlines() == [
        host_key_line(sshd, sshd.dir / "host_ed25519.pub")
    ]
    assert oct(project.known_hosts.stat().st_mode & 0o777) == "0o600"

    again = project.deploy("staging", "--plan", "--strict-host-keys")
    assert again.returncode == 0 and "first connection" not in again.stderr, again
    assert len(project.known_hosts.read_text().splitlines()) == 1


def test_a_changed_host_key_is_refused(project: DeployProject, sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "impostor"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)])
    project.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    project.known_hosts.write_text(host_key_line(sshd, other.with_suffix(".pub")) + "\n")
    result = project.deploy("staging", "--yes")
    assert result.returncode == 1, result
    assert "its host key CHANGED" in result.stdout and "man-in-the-middle" in result.stdout, result
    assert project.known_hosts.read_text() == host_key_line(sshd, other.with_suffix(".pub")) + "\n"
    assert project.releases("staging") == []
