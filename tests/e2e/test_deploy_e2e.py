"""deploy.py end to end, with real parts: Docker engine, Compose v2, sshd on 127.0.0.1.

One story, in order (the tests share a project copy and what is deployed): staging's first
deploy, production on the same host, a no-op, a plan, a routing change, a code change, a
rollback and forward again, a dependency change, production taking the changes, a release
that fails its health check, a port collision, two deploys at once, an SSH connection dropped
mid-deploy, production rolling back after staging pruned its old releases, status and history.
Real deploys are slow, so the cases share state instead of starting over; a case that needs
what an earlier one failed to set up fails at once saying so.

`SYTEST_DEPLOY_LOG=FILE` writes every deploy.py run (arguments, exit code, stdout, stderr) to
FILE at the end, to read what deploy said.

After every case (`Story.case`): the neighbour project's containers and the other
environment's keep their ids and start times, nothing a `down` or a prune would remove is
gone, only our containers carry our labels, the secrets file is 0600 and holds the value,
no secret value shows up in a release, an output or the history, and the deployed gateway
answers a chat completion on its loopback port with a key of its environment.

Locally these tests skip when Docker, Compose v2 or sshd is missing; in CI (CI set) they fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.deploy_env import (
    DeployProject,
    DeployResult,
    Neighbour,
    Sshd,
    chat,
    containers,
    iter_files,
    make_key,
    require_docker,
    run,
    snapshot,
    tmpdir,
)

pytestmark = pytest.mark.docker

ENVS = ("staging", "production")
UP_STARTS = re.compile(r"\bup (--detach|-d)\b")
# `staging: release ID is live at http://127.0.0.1:PORT (healthy)`, perhaps with "nothing changed; "
# before "release" and "; <timing>" after.
FINAL_LINE = re.compile(
    r"^(staging|production): (?:nothing changed; )?release (\S+) is live at "
    r"http://127\.0\.0\.1:(\d+) \(healthy\)(?:;.*)?$"
)
# (The base image's own `dev.switchyard.test-base` label is inherited by every container made from
# it.)
OWNERSHIP_LABELS = {
    "dev.switchyard.managed-by",
    "dev.switchyard.project",
    "dev.switchyard.environment",
    "dev.switchyard.service",
}
CONTRACT_FIELDS = {
    "ok",
    "environment",
    "action",
    "release",
    "previous",
    "url",
    "health",
    "services",
    "steps",
    "error",
}
HISTORY_FIELDS = {
    "action",
    "release",
    "previous",
    "who",
    "when",
    "git_commit",
    "config_hash",
    "services",
    "result",
    "reason",
    "seconds",
}


def other(env: str) -> str:
    return "production" if env == "staging" else "staging"


class Story:
    """What the ordered tests share: the parts, the keys, and what each case must leave alone."""

    def __init__(self, sshd: Sshd, neighbour: Neighbour, project: DeployProject) -> None:
        self.sshd = sshd
        self.neighbour = neighbour
        self.project = project
        self.neighbour_start = snapshot(neighbour.project)
        self.volumes_start = set(run(["docker", "volume", "ls", "-q"]).stdout.split())
        self.keys: dict[str, str] = {}
        self.live: dict[str, bool] = dict.fromkeys(ENVS, False)
        self.marks: dict[str, Any] = {}  # facts one case leaves for a later one

    # -- helpers ------------------------------------------------------------------------

    def cp(self, env: str) -> str:
        return self.project.compose_project(env)

    def deploy(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> DeployResult:
        return self.project.deploy(*args, timeout=timeout, env=env)

    def needs(self, *envs: str) -> None:
        for env in envs:
            if not self.live[env]:
                pytest.fail(
                    f"needs a live {env} (an earlier case of this story failed)", pytrace=False
                )

    def gateways(self, env: str) -> list[dict[str, Any]]:
        """The running gateway containers of `env` (compose services gateway-a1, gateway-b2,
        ...)."""
        return [
            c
            for c in containers(self.cp(env))
            if c["State"]["Status"] == "running"
            and c["Config"]["Labels"].get("dev.switchyard.service") == "gateway"
        ]

    def proxy(self, env: str) -> dict[str, Any]:
        found = [c for c in containers(self.cp(env), "proxy") if c["State"]["Status"] == "running"]
        assert len(found) == 1, (
            f"{env}: expected one running proxy container, found {[c['Name'] for c in found]}"
        )
        return found[0]

    def gateway(self, env: str) -> dict[str, Any]:
        found = self.gateways(env)
        assert len(found) == 1, (
            f"{env}: expected one running gateway container, found {[c['Name'] for c in found]}"
        )
        return found[0]

    def docker_healthy(self, env: str, timeout: float = 30) -> None:
        """Docker's own health checks of every container of `env` that has one pass (deploy may
        finish before the first one has run: it asks each new gateway's /readyz directly)."""
        deadline = time.monotonic() + timeout
        while True:
            states = {
                c["Name"]: (
                    c["State"]["Status"],
                    (c["State"].get("Health") or {}).get("Status", "healthy"),
                )
                for c in containers(self.cp(env))
            }
            assert states and not [n for n, (_, h) in states.items() if h == "unhealthy"], states
            if all(st == "running" and h == "healthy" for st, h in states.values()):
                return
            assert time.monotonic() < deadline, (
                f"{env}: not all containers healthy after {timeout:.0f} s: {states}"
            )
            time.sleep(0.5)

    def chat(self, env: str, **kw: Any) -> str:
        return chat(self.project.ports[env], self.keys[env], **kw)

    def readyz(self, env: str) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.project.ports[env]}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.status), json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def json(self, result: DeployResult) -> dict[str, Any]:
        """The --json document; a deploy, plan or rollback carries every field of the contract."""
        doc = result.json()
        assert set(doc) >= {"ok", "environment", "action", "error"}, doc
        if doc["action"] in ("deploy", "plan", "rollback"):
            assert set(doc) >= CONTRACT_FIELDS, f"missing {CONTRACT_FIELDS - set(doc)}: {doc}"
        return doc

    def final_line(self, result: DeployResult, env: str) -> str:
        """The release id of the last stdout line `ENV: release ID is live at URL (healthy)`."""
        lines = result.stdout.strip().splitlines()
        assert lines, f"no final line on stdout\n{result}"
        m = FINAL_LINE.match(lines[-1])
        assert m, (
            f"final line does not read `{env}: release ID is live at URL (healthy)`: "
            f"{lines[-1]!r}\n{result}"
        )
        assert m.group(1) == env and int(m.group(3)) == self.project.ports[env], lines[-1]
        return m.group(2)

    # -- the invariants ------------------------------------------------------------------

    @contextlib.contextmanager
    def case(self, env: str) -> Iterator[None]:
        """Run one case that deploys `env`; then check everything that must hold after it."""
        outputs_before = len(self.project.outputs)
        untouched = {e: snapshot(self.cp(e)) for e in ENVS if e != env}
        yield
        # The neighbour: same containers, same start times, nothing removed.
        assert snapshot(self.neighbour.project) == self.neighbour_start, (
            "the neighbour's containers were touched"
        )
        assert self.neighbour.intact() == [], "something of the neighbour's is gone"
        # The other environment: same containers, same start times.
        for e, before in untouched.items():
            assert snapshot(self.cp(e)) == before, f"deploying {env} touched {e}'s containers"
        self.check_labels()
        self.check_secrets(self.project.outputs[outputs_before:])
        # The deployed environment serves a chat completion with a key of its own.
        if env in self.keys:
            assert self.chat(env) == "echo: Hello!"

    def check_labels(self) -> None:
        """Our labels are on our containers only; every container of ours is in our projects."""
        ours = {self.cp(e) for e in ENVS}
        for c in containers(self.neighbour.project):
            labels = c["Config"]["Labels"] or {}
            assert not set(labels) & OWNERSHIP_LABELS, f"{c['Name']} got our labels"
        ids = run(
            [
                "docker",
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                f"label=dev.switchyard.project={self.project.name}",
            ]
        ).stdout.split()
        for doc in json.loads(run(["docker", "inspect", *ids]).stdout) if ids else []:
            labels = doc["Config"]["Labels"]
            project = labels.get("com.docker.compose.project")
            assert project in ours, (
                f"{doc['Name']} carries our project label but is in compose project {project!r}"
            )
            env = labels.get("dev.switchyard.environment")
            assert project == self.cp(env), (
                f"{doc['Name']}: environment label {env!r} in compose project {project!r}"
            )
            assert labels.get("dev.switchyard.managed-by") == "switchyard", doc["Name"]
            # gateway-a1, gateway-b2, ... are all the service `gateway`; the proxy is `proxy`.
            service = re.sub(
                r"^gateway-[ab]\d+$", "gateway", labels.get("com.docker.compose.service", "")
            )
            assert labels.get("dev.switchyard.service") == service, doc["Name"]

    def check_secrets(self, outputs: list[DeployResult]) -> None:
        """secrets.env is 0600 and holds the value; no value anywhere else we can see."""
        values = self.project.secret_values
        for env in ENVS:
            env_dir = self.project.env_dir(env)
            secrets_env = env_dir / "secrets.env"
            if not secrets_env.exists():
                continue
            mode = stat.S_IMODE(secrets_env.stat().st_mode)
            assert mode == 0o600, f"{secrets_env} has mode {oct(mode)}"
            assert values[env] in secrets_env.read_text(), (
                f"{env}'s secrets.env lacks its VENDOR_API_KEY value"
            )
            assert values[other(env)] not in secrets_env.read_text(), (
                f"{env}'s secrets.env holds {other(env)}'s value"
            )
            for f in iter_files(env_dir):
                if f == secrets_env:
                    continue
                data = f.read_bytes()
                for value in values.values():
                    assert value.encode() not in data, f"a secret value is in {f}"
        claims = self.project.deploy_dir / "claims.json"
        if claims.exists():
            assert not any(v in claims.read_text() for v in values.values()), (
                "a secret value is in claims.json"
            )
        for result in outputs:
            for value in values.values():
                assert value not in result.output, (
                    f"a secret value was printed by deploy.py {' '.join(result.args)}"
                )


# ---------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def story() -> Iterator[Story]:
    require_docker()
    root = tmpdir("sytest-e2e-")
    sshd = Sshd(root / "sshd").start()
    neighbour: Neighbour | None = None
    project: DeployProject | None = None
    try:
        probe = sshd.ssh("docker", "compose", "version", "--short")
        assert probe.returncode == 0, (
            f"ssh to the test sshd, then docker compose: {probe.stdout}{probe.stderr}"
        )
        neighbour = Neighbour(root / "neighbour").start()
        project = DeployProject(root / "project", sshd).create()
        yield Story(sshd, neighbour, project)
    finally:
        if project is not None and os.environ.get("SYTEST_DEPLOY_LOG"):
            # Every deploy.py run of the story, for reading after the fact.
            Path(os.environ["SYTEST_DEPLOY_LOG"]).write_text(
                "\n".join(str(r) for r in project.outputs)
            )
        if project is not None:
            project.cleanup()
        if neighbour is not None:
            neighbour.stop()
        sshd.stop()
        run(["rm", "-rf", str(root)], check=False)


# ---------------------------------------------------------------------------------------
# the story


def test_01_first_deploy_of_staging(story: Story) -> None:
    p = story.project
    assert not p.env_dir("staging").exists()
    with story.case("staging"):
        r = story.deploy("staging", "--yes")
        assert r.returncode == 0, str(r)
        release = story.final_line(r, "staging")
        assert p.current("staging") == release and p.releases("staging") == [release]
        rel = p.env_dir("staging") / "releases" / release
        assert {f.name for f in rel.iterdir()} >= {
            "compose.yaml",
            "runtime.json",
            "Dockerfile",
            "manifest.json",
            "requirements.txt",
            "runtime",
        }
        assert not (rel / "secrets.env").exists()
        manifest = json.loads((rel / "manifest.json").read_text())
        assert manifest["compose_project"] == story.cp("staging") and manifest["secrets"] == [
            "VENDOR_API_KEY"
        ]
        # The secrets file: 0600, exactly the value, in the environment's directory.
        secrets_env = p.env_dir("staging") / "secrets.env"
        assert stat.S_IMODE(secrets_env.stat().st_mode) == 0o600
        assert re.search(
            rf"^VENDOR_API_KEY='?{re.escape(p.secret_values['staging'])}'?$",
            secrets_env.read_text(),
            re.M,
        )
        # The claims file records the project and its port.
        claims = json.loads((p.deploy_dir / "claims.json").read_text())
        assert claims["projects"][story.cp("staging")]["port"] == p.ports["staging"]
        # One gateway container, ours, healthy, publishing nothing: the proxy alone publishes
        # the environment's port, on 127.0.0.1 only.
        gw = story.gateway("staging")
        labels = gw["Config"]["Labels"]
        assert labels["dev.switchyard.managed-by"] == "switchyard"
        assert (
            labels["dev.switchyard.project"] == p.name
            and labels["dev.switchyard.environment"] == "staging"
        )
        assert labels["com.docker.compose.project"] == story.cp("staging")
        story.docker_healthy("staging")
        assert not any(v for v in gw["NetworkSettings"]["Ports"].values())
        proxy = story.proxy("staging")
        bindings = proxy["NetworkSettings"]["Ports"]["8080/tcp"]
        assert [(b["HostIp"], int(b["HostPort"])) for b in bindings] == [
            ("127.0.0.1", p.ports["staging"])
        ]
        assert (
            gw["Config"]["Image"] == manifest["image"]
            and proxy["Config"]["Image"] == manifest["proxy_image"]
        )
        # The proxy's live config is the release's, for the slot that serves.
        live_cfg = (p.env_dir("staging") / "proxy" / "haproxy.cfg").read_text()
        assert live_cfg.endswith(
            (rel / "proxy" / f"haproxy-{labels['dev.switchyard.slot']}.cfg").read_text()
        )
        status, ready = story.readyz("staging")
        assert status == 200 and ready["ready"] is True, ready
        # The history: one entry, ours.
        history = p.history_lines("staging")
        assert len(history) == 1 and history[0]["release"] == release
        assert history[0]["git_commit"] == p.git("rev-parse", "HEAD").strip()
        assert set(history[0]) >= HISTORY_FIELDS
        story.keys["staging"] = make_key(p, "staging")
        story.live["staging"] = True
    story.marks["staging_first"] = {"release": release, "image": gw["Image"]}


def test_02_production_on_the_same_host(story: Story) -> None:
    story.needs("staging")
    p = story.project
    with story.case("production"):
        r = story.deploy("production", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        assert (
            doc["ok"] is True and doc["action"] == "deploy" and doc["environment"] == "production"
        )
        assert doc["release"] == p.current("production") and doc["previous"] is None
        assert (
            doc["url"] == f"http://127.0.0.1:{p.ports['production']}" and doc["health"] == "healthy"
        )
        assert {s: v["action"] for s, v in doc["services"].items()} == {
            "gateway": "create",
            "proxy": "create",
        }
        assert doc["error"] is None and all(
            s["status"] in ("ok", "skipped") for s in doc["steps"]
        ), doc["steps"]
        gateways = story.gateways("production")
        assert len(gateways) == 2
        story.docker_healthy("production")
        for gw in gateways:  # N replicas cannot share a host port: only the proxy publishes
            assert not any(v for v in gw["NetworkSettings"]["Ports"].values())
        bindings = story.proxy("production")["NetworkSettings"]["Ports"]["8080/tcp"]
        assert [(b["HostIp"], int(b["HostPort"])) for b in bindings] == [
            ("127.0.0.1", p.ports["production"])
        ]
        secrets_env = p.env_dir("production") / "secrets.env"
        assert p.secret_values["production"] in secrets_env.read_text()
        claims = json.loads((p.deploy_dir / "claims.json").read_text())["projects"]
        assert {claims[story.cp(e)]["port"] for e in ENVS} == set(p.ports.values())
        # Keys are per environment: made in replica 2, good through the proxy; staging's is refused.
        story.keys["production"] = make_key(p, "production", index=1)
        with pytest.raises(openai.AuthenticationError):
            chat(p.ports["production"], story.keys["staging"], retry_s=0)
        story.live["production"] = True


def test_03_a_noop_redeploy_restarts_nothing(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    for env in ENVS:
        with story.case(env):
            before, releases = snapshot(story.cp(env)), p.releases(env)
            r = story.deploy(env, "--yes")
            assert r.returncode == 0, str(r)
            assert story.final_line(r, env) == p.current(env)
            assert re.search(r"nothing (has )?changed|no changes", r.output, re.I), (
                f"does not say nothing changed\n{r}"
            )
            assert snapshot(story.cp(env)) == before, "a no-op deploy restarted containers"
            assert p.releases(env) == releases, (
                "a no-op deploy made a release (and may push a rollback target out)"
            )
            story.marks[f"noop_seconds_{env}"] = r.seconds
        # And as JSON: every service unchanged.
        with story.case(env):
            r = story.deploy(env, "--yes", "--json")
            doc = story.json(r)
            assert r.returncode == 0 and doc["ok"] is True, str(r)
            assert {v["action"] for v in doc["services"].values()} == {"unchanged"}, doc["services"]
            assert snapshot(story.cp(env)) == before


def _add_route(story: Story, name: str) -> None:
    story.project.config["routes"][name] = {"candidates": ["mock/echo"]}
    story.project.write_config()
    story.project.commit(f"route {name}")


def test_04_plan_changes_nothing(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    _add_route(story, "summarize")  # a routing change, planned here and deployed by the next case
    env_dir = p.env_dir("staging")
    with story.case("staging"):
        before = {e: snapshot(story.cp(e)) for e in ENVS}
        releases, current, history = (
            p.releases("staging"),
            p.current("staging"),
            len(p.history_lines("staging")),
        )
        secrets_mtime = (env_dir / "secrets.env").stat().st_mtime_ns
        r = story.deploy("staging", "--plan")
        assert r.returncode == 0, str(r)
        assert re.search(r"SERVICE\s+ACTION", r.output), f"no plan table\n{r}"
        assert re.search(r"^\s*gateway\s+replace\b", r.output, re.M), (
            f"the plan does not replace the gateway\n{r}"
        )
        assert "rebuild" not in r.output.split("SERVICE", 1)[1], (
            f"a routing change must not rebuild\n{r}"
        )
        r = story.deploy("staging", "--plan", "--json")
        doc = story.json(r)
        assert r.returncode == 0 and doc["action"] == "plan" and doc["ok"] is True, str(r)
        assert (
            doc["services"]["gateway"]["action"] == "replace"
            and doc["services"]["gateway"]["reasons"]
        ), doc
        assert doc["services"]["proxy"]["action"] == "reload", doc
        # Nothing changed on the host.
        assert {e: snapshot(story.cp(e)) for e in ENVS} == before
        assert p.releases("staging") == releases and p.current("staging") == current
        assert len(p.history_lines("staging")) == history
        assert (env_dir / "secrets.env").stat().st_mtime_ns == secrets_mtime
        assert not [f.name for f in (env_dir / "releases").iterdir() if f.name not in releases], (
            "a plan left files"
        )


def test_05_a_routing_change_replaces_only_the_gateway_without_a_rebuild(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    with story.case("staging"):
        old = story.gateway("staging")
        r = story.deploy("staging", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        assert doc["ok"] is True and doc["services"]["gateway"]["action"] == "replace", doc[
            "services"
        ]
        assert doc["services"]["proxy"]["action"] == "reload", doc["services"]
        new = story.gateway("staging")
        assert (
            new["Config"]["Labels"]["dev.switchyard.slot"]
            != old["Config"]["Labels"]["dev.switchyard.slot"]
        )
        assert new["Id"] != old["Id"], "the gateway was not recreated"
        assert new["Image"] == old["Image"] and new["Config"]["Image"] == old["Config"]["Image"], (
            "the image was rebuilt"
        )
        assert (
            new["Config"]["Labels"]["dev.switchyard.config-hash"]
            != old["Config"]["Labels"]["dev.switchyard.config-hash"]
        )
        assert (
            doc["release"] == p.current("staging")
            and doc["previous"] == story.marks["staging_first"]["release"]
        )
        assert story.chat("staging", model="summarize") == "echo: Hello!"  # the new route is live
    story.marks["routing"] = {
        "release": doc["release"],
        "image": new["Image"],
        "ref": new["Config"]["Image"],
    }


def _touch_runtime(story: Story, note: str) -> None:
    app = story.project.repo / "runtime" / "app.py"
    app.write_text(app.read_text() + f"# {note}\n")
    story.project.commit(note)


def test_06_a_code_change_rebuilds(story: Story) -> None:
    story.needs("staging", "production")
    with story.case("staging"):
        old = story.gateway("staging")
        _touch_runtime(story, "e2e: a code change")
        r = story.deploy("staging", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        assert doc["services"]["gateway"]["action"] == "rebuild", doc["services"]
        assert any("runtime" in reason for reason in doc["services"]["gateway"]["reasons"]), doc[
            "services"
        ]
        new = story.gateway("staging")
        assert new["Id"] != old["Id"] and new["Image"] != old["Image"]
        assert new["Config"]["Image"] != old["Config"]["Image"]
    story.marks["code"] = {
        "release": doc["release"],
        "image": new["Image"],
        "ref": new["Config"]["Image"],
    }


def test_07_rollback_to_the_previous_release_and_forward_again(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    routing, code = story.marks["routing"], story.marks["code"]
    with story.case("staging"):
        r = story.deploy("staging", "--rollback", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        assert doc["action"] == "rollback" and doc["ok"] is True
        assert (
            doc["release"] == routing["release"] == p.current("staging")
            and doc["previous"] == code["release"]
        )
        gw = story.gateway("staging")
        assert gw["Image"] == routing["image"] and gw["Config"]["Image"] == routing["ref"]
        assert not [s for s in doc["steps"] if s["step"].startswith("build")], (
            "a rollback rebuilt an image it has"
        )
        last = p.history_lines("staging")[-1]
        assert last["action"] == "rollback" and last["release"] == routing["release"]
    with story.case("staging"):
        r = story.deploy("staging", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        # The code change's image is still on the host: replaced with it, nothing built.
        assert doc["services"]["gateway"]["action"] == "replace", doc["services"]
        assert any(
            "runtime/ code changed" in why for why in doc["services"]["gateway"]["reasons"]
        ), doc["services"]
        assert not [s for s in doc["steps"] if s["step"].startswith("build")], (
            "an image on the host was built again"
        )
        gw = story.gateway("staging")
        assert gw["Config"]["Image"] == code["ref"], (
            "forward again did not bring back the code change's image"
        )
        assert p.current("staging") == doc["release"] not in (routing["release"], code["release"])


def test_08_a_dependency_change_rebuilds(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    with story.case("staging"):
        old = story.gateway("staging")
        req = p.repo / "runtime" / "requirements.txt"
        req.write_text(req.read_text().rstrip("\n") + "\nsix==1.16.0\n")
        p.commit("e2e: a dependency")
        r = story.deploy("staging", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        assert doc["services"]["gateway"]["action"] == "rebuild", doc["services"]
        assert any("requirements" in reason for reason in doc["services"]["gateway"]["reasons"]), (
            doc["services"]
        )
        new = story.gateway("staging")
        assert new["Id"] != old["Id"] and new["Image"] != old["Image"]
        six = p.gateway_exec("staging", "python", "-c", "import six; print(six.__version__)")
        assert six.stdout.strip() == "1.16.0"


def test_08b_production_takes_the_changes_and_keeps_its_previous_release(story: Story) -> None:
    """Production gets a release of its own with another image; its previous release (and that
    image) is its rollback target, which staging's deploys and their pruning must leave alone."""
    story.needs("staging", "production")
    p = story.project
    with story.case("production"):
        old = story.gateways("production")
        previous = p.current("production")
        r = story.deploy("production", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        assert {s: v["action"] for s, v in doc["services"].items()} == {
            "gateway": "rebuild",
            "proxy": "reload",
        }, doc["services"]
        story.docker_healthy("production")
        new = story.gateways("production")
        assert len(new) == 2 and not {c["Id"] for c in new} & {c["Id"] for c in old}
        assert {c["Config"]["Image"] for c in new} != {c["Config"]["Image"] for c in old}
        assert doc["previous"] == previous and p.releases("production") == sorted(
            [previous, doc["release"]]
        )
    story.marks["production_previous"] = {
        "release": previous,
        "ref": old[0]["Config"]["Image"],
        "image": old[0]["Image"],
    }


BROKEN = "        problems = list(self.not_ready)\n"
BREAK = '        problems = [*self.not_ready, "broken on purpose by the deploy e2e test"]\n'


def test_09_a_release_that_never_becomes_ready_never_takes_traffic(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    app = p.repo / "runtime" / "app.py"
    good = app.read_text()
    assert good.count(BROKEN) == 1, "runtime/app.py changed: update how this test breaks readiness"
    try:
        with story.case("staging"):
            before = snapshot(story.cp("staging"))
            live = p.current("staging")
            history = len(p.history_lines("staging"))
            app.write_text(good.replace(BROKEN, BREAK))
            p.commit("e2e: a release that never becomes ready")
            r = story.deploy("staging", "--yes")
            assert r.returncode == 1, str(r)
            assert "Traceback" not in r.output, str(r)
            assert re.search(rf"release {live} keeps serving, untouched", r.output), str(r)
            # The live release was never touched: the same containers, started at the same time,
            # and the new release's gateways are gone.
            assert p.current("staging") == live
            assert snapshot(story.cp("staging")) == before, (
                "the live release's containers were touched"
            )
            status, ready = story.readyz("staging")
            assert status == 200 and ready["ready"] is True, ready
            entries = p.history_lines("staging")
            assert len(entries) == history + 1 and entries[-1]["result"] == "failed", entries[-1]
            assert entries[-1]["previous"] == live and entries[-1]["reason"]
            failed_release = entries[-1]["release"]
            assert (p.env_dir("staging") / "releases" / failed_release / "FAILED").exists()
            doc = story.json(story.deploy("staging", "--history", "--json"))
            assert doc["entries"][-1]["result"] == "failed"
            failed = r
    finally:
        app.write_text(good)
        p.commit("e2e: fixed")
    # Fixed again: the code equals the live release's, so there is nothing to do.
    with story.case("staging"):
        before_snap = snapshot(story.cp("staging"))
        r = story.deploy("staging", "--yes", "--json")
        assert r.returncode == 0, str(r)
        assert {v["action"] for v in story.json(r)["services"].values()} == {"unchanged"}, r.stdout
        assert snapshot(story.cp("staging")) == before_snap
    # The failed deploy said why: what /readyz of the new release answered, not only "starting".
    assert "broken on purpose" in failed.output, (
        f"the reason (/readyz's problem) is not shown\n{failed}"
    )


def test_10_a_port_collision_is_refused_before_anything_restarts(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    # Another project's published port (found on the host), and production's (the config says so).
    for port, whose in (
        (story.neighbour.port, story.neighbour.project),
        (p.ports["production"], "production"),
    ):
        with story.case("staging"):
            before, releases = snapshot(story.cp("staging")), p.releases("staging")
            p.config["environments"]["staging"]["port"] = port
            p.write_config()
            try:
                r = story.deploy("staging", "--yes")
            finally:
                p.config["environments"]["staging"]["port"] = p.ports["staging"]
                p.write_config()
            assert r.returncode == 1, str(r)
            assert str(port) in r.output and whose in r.output, (
                f"the refusal does not name port {port} and {whose}\n{r}"
            )
            assert snapshot(story.cp("staging")) == before and p.releases("staging") == releases


def _lock_held(path: Path) -> bool:
    """Does someone hold flock on `path`? (Takes and drops it at once when free.)"""
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _finish(
    story: Story, args: tuple[str, ...], proc: Any, started: float, timeout: float = 600
) -> DeployResult:
    try:
        out, err = proc.communicate(timeout=timeout)
    except Exception:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"deploy.py {' '.join(args)} did not finish: {out}{err}") from None
    return story.project.record(args, proc, out, err, time.monotonic() - started)


def test_11_two_deploys_at_once(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    lock, holder = p.env_dir("staging") / "deploy.lock", p.env_dir("staging") / "lock.json"
    who = {n: {"SWITCHYARD_DEPLOY_USER": f"{n}-e2e"} for n in ("alice", "bob", "carol")}
    with story.case("staging"):
        _touch_runtime(story, "e2e: a change two deploys race for")
        a_args = ("staging", "--yes", "--json")
        started = time.monotonic()
        a = p.popen(*a_args, env=who["alice"])
        c: Any = None
        try:
            # Until alice's deploy holds the lock and has said so in lock.json.
            deadline = time.monotonic() + 120
            while not (_lock_held(lock) and "alice-e2e" in _read(holder)):
                assert a.poll() is None, (
                    f"the first deploy ended before it took the lock: {a.communicate()}"
                )
                assert time.monotonic() < deadline, "the first deploy never took the lock"
                time.sleep(0.02)
            # A third deploy waits for the first, then finds nothing left to do...
            c_args = ("staging", "--yes", "--json")
            c_started = time.monotonic()
            c = p.popen(*c_args, env=who["carol"])
            # ...while a second one, with --no-wait, fails at once naming the holder.
            b = story.deploy("staging", "--yes", "--no-wait", env=who["bob"])
            assert a.poll() is None, (
                "the first deploy ended before the others had tried: the test proves nothing"
            )
            a_result = _finish(story, a_args, a, started)
            c_result = _finish(story, c_args, c, c_started)
        finally:
            for proc in (a, c):
                if proc is not None and proc.poll() is None:
                    proc.kill()
        assert b.returncode == 1, str(b)
        assert "locked by alice-e2e" in b.output, f"--no-wait does not name the holder\n{b}"
        assert b.seconds < 30, f"--no-wait took {b.seconds:.0f} s"
        assert a_result.returncode == 0, str(a_result)
        assert c_result.returncode == 0, str(c_result)
        doc_a, doc_c = story.json(a_result), story.json(c_result)
        assert doc_a["services"]["gateway"]["action"] == "rebuild"
        assert "alice-e2e" in c_result.stderr, (
            f"the waiting deploy does not name the holder it waits for\n{c_result}"
        )
        assert {v["action"] for v in doc_c["services"].values()} == {"unchanged"}, (
            f"the third deploy did not see the first's release\n{c_result}"
        )
        assert p.current("staging") == doc_a["release"] == doc_c["release"]
        mine = [
            e
            for e in p.history_lines("staging")
            if e["release"] == doc_a["release"] and e["action"] == "deploy"
        ]
        assert [e["who"] for e in mine][:1] == ["alice-e2e"], mine
        assert not [
            e
            for e in p.history_lines("staging")
            if e["who"] == "bob-e2e" and e["result"] != "refused"
        ], "bob's refused deploy changed something"


def _compose_up_running(story: Story, env: str) -> bool:
    for argv in story.sshd.session_commands():
        if "compose" in argv and "up" in argv and story.cp(env) in argv:
            return True
    return False


def test_12_an_ssh_connection_dropped_mid_deploy_then_deploy_again_converges(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    with story.case("staging"):
        _touch_runtime(story, "e2e: a deploy whose connection drops")
        args = ("staging", "--yes", "--json")
        started = time.monotonic()
        proc = p.popen(*args)
        err_lines: list[str] = []
        out_lines: list[str] = []

        def read(stream: Any, into: list[str]) -> None:
            into.extend(stream)

        readers = [
            threading.Thread(target=read, args=(proc.stderr, err_lines), daemon=True),
            threading.Thread(target=read, args=(proc.stdout, out_lines), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            # Drop the connection while `docker compose ... up` runs in an SSH session on the host.
            deadline = time.monotonic() + 300
            while not _compose_up_running(story, "staging"):
                assert proc.poll() is None and time.monotonic() < deadline, (
                    "never saw `docker compose up` run:\n" + "".join(err_lines)
                )
                time.sleep(0.01)
            dropped = story.sshd.drop_sessions()
            assert dropped, "no live SSH session to drop"
            proc.wait(timeout=180)
            for t in readers:
                t.join(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        r = p.record(args, proc, "".join(out_lines), "".join(err_lines), time.monotonic() - started)
        assert r.returncode == 1, str(r)
        assert "Traceback" not in r.output, str(r)
        doc = story.json(r)
        assert doc["ok"] is False and re.search(r"ssh|connection", doc["error"] or "", re.I), (
            f"no clear message about the lost connection\n{r}"
        )
        up = [s for s in doc["steps"] if UP_STARTS.search(s["step"])]
        assert up and up[-1]["status"] == "failed", (
            f"the connection did not drop during `compose up`: {doc['steps']}"
        )
    # Deploy again: converges.
    with story.case("staging"):
        r = story.deploy("staging", "--yes", "--lock-timeout", "300")
        assert r.returncode == 0, str(r)
        release = story.final_line(r, "staging")
        gw = story.gateway("staging")
        story.docker_healthy("staging")
        manifest = json.loads(
            (p.env_dir("staging") / "releases" / release / "manifest.json").read_text()
        )
        assert gw["Config"]["Image"] == manifest["image"]
        assert p.current("staging") == release
        # and is stable: once more is a no-op.
        before = snapshot(story.cp("staging"))
        r = story.deploy("staging", "--yes", "--json")
        assert r.returncode == 0 and {v["action"] for v in story.json(r)["services"].values()} == {
            "unchanged"
        }, str(r)
        assert snapshot(story.cp("staging")) == before


def test_12b_production_rolls_back_after_all_of_staging_s_deploys(story: Story) -> None:
    """Staging made more releases than it keeps and pruned; production's rollback target
    survived."""
    story.needs("staging", "production")
    p = story.project
    prev = story.marks["production_previous"]
    staging_releases = p.releases("staging")
    # keep_releases (5), plus the one the proxy container was created from (its manifest tells
    # the next deploy that the proxy needs no restart).
    proxy_release = (
        story.proxy("staging")["Config"]["Labels"]["com.docker.compose.project.config_files"]
        .split("/releases/")[1]
        .split("/")[0]
    )
    kept = [r for r in staging_releases if r != proxy_release]
    assert len(kept) <= 5 and p.current("staging") in staging_releases, staging_releases
    assert len(p.history_lines("staging")) > 5, (
        "staging should have made more releases than it keeps"
    )
    assert run(["docker", "image", "inspect", prev["ref"]], check=False).returncode == 0, (
        f"production's previous image {prev['ref']} is gone"
    )
    # Pruned releases took their images with them (those no kept release uses).
    kept_images = {
        json.loads((p.env_dir("staging") / "releases" / r / "manifest.json").read_text())[k]
        for r in staging_releases
        for k in ("image", "proxy_image")
    }
    pruned = {
        e["image"]
        for e in p.history_lines("staging")
        if e.get("image") and e["release"] not in staging_releases
    }
    assert pruned - kept_images, "the story should have pruned a release with an image of its own"
    for image in pruned - kept_images:
        assert run(["docker", "image", "inspect", image], check=False).returncode != 0, (
            f"pruned release's image {image} is still there"
        )
    with story.case("production"):
        r = story.deploy("production", "--rollback", "--yes", "--json")
        assert r.returncode == 0, str(r)
        doc = story.json(r)
        assert doc["action"] == "rollback" and doc["release"] == prev["release"] == p.current(
            "production"
        )
        story.docker_healthy("production")
        assert {(c["Config"]["Image"], c["Image"]) for c in story.gateways("production")} == {
            (prev["ref"], prev["image"])
        }


def test_13_status_and_history(story: Story) -> None:
    story.needs("staging", "production")
    p = story.project
    for env in ENVS:
        with story.case(env):
            r = story.deploy(env, "--status", "--json")
            assert r.returncode == 0, str(r)
            doc = story.json(r)
            assert (
                doc["action"] == "status"
                and doc["release"] == p.current(env)
                and doc["health"] == "healthy"
            )
            running = {c["Id"]: c for c in containers(story.cp(env))}
            listed = {c["id"]: c for cs in doc["containers"].values() for c in cs}
            assert {i[:12] for i in listed} == {i[:12] for i in running}, (listed, list(running))
            for c in listed.values():
                assert c["state"] == "running", c
                # The gateways are the current release's; the proxy is recreated only when its own
                # image or definition changes, so it may be an older release's.
                assert c["service"] == "proxy" or c["release"] == p.current(env), c
            assert doc["serving"]["release"] == p.current(env) and doc["unfinished"] == [], doc
            text = story.deploy(env, "--status")
            assert (
                text.returncode == 0 and p.current(env) in text.output and "healthy" in text.output
            ), str(text)
            h = story.deploy(env, "--history", "--json")
            assert h.returncode == 0, str(h)
            entries = story.json(h)["entries"]
            assert len(entries) == len(p.history_lines(env))
            assert all(set(e) >= HISTORY_FIELDS for e in entries)
            assert all(e["who"] and e["when"] and e["config_hash"] for e in entries)
            text = story.deploy(env, "--history")
            assert text.returncode == 0 and p.current(env) in text.output, str(text)
    # The contract's fields are in every --json document, status and history included.
    for env in ENVS:
        for action in ("--status", "--history"):
            doc = story.json(story.deploy(env, action, "--json"))
            assert set(doc) >= CONTRACT_FIELDS, (
                f"{env} {action} --json lacks {sorted(CONTRACT_FIELDS - set(doc))}"
            )
    staging = story.json(story.deploy("staging", "--history", "--json"))["entries"]
    assert {"failed", "interrupted"} <= {e["result"] for e in staging}
    assert {"deploy", "rollback"} <= {e["action"] for e in staging}


def test_14_no_secret_value_anywhere(story: Story) -> None:
    """Over the whole story: every output, every release, the history."""
    story.check_secrets(story.project.outputs)
    assert len(story.project.outputs) > 20


def test_15_no_anonymous_volume_left_behind(story: Story) -> None:
    """Every container deploy removed (old slots, failed releases, throwaway `haproxy -c` runs)
    went with its anonymous volumes: the only new volumes are the environments' named `data`."""
    new = set(run(["docker", "volume", "ls", "-q"]).stdout.split()) - story.volumes_start
    assert new <= {f"{story.cp(e)}_data" for e in ENVS}, sorted(new)
