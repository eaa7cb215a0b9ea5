"""What is deployed on a host: releases, the live one, our containers and what else is there.

Read only. The truth about what runs is the containers themselves: compose labels each with
the compose file it was created from, which names its release directory. `current` is the
last release that passed its health check.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from compiler.manifest import Manifest, ManifestError, release_manifest
from deployer import commands as cmd
from deployer.bundle import DeployError
from deployer.hosts import Host


@dataclass(frozen=True)
class Paths:
    """Where an environment lives on its host."""

    root: str
    compose_project: str

    @property
    def env_dir(self) -> str:
        return posixpath.join(self.root, self.compose_project)

    @property
    def releases(self) -> str:
        return posixpath.join(self.env_dir, "releases")

    def release(self, release_id: str) -> str:
        return posixpath.join(self.releases, release_id)

    def compose_file(self, release_id: str) -> str:
        return posixpath.join(self.release(release_id), "compose.yaml")

    @property
    def secrets(self) -> str:
        return posixpath.join(self.env_dir, "secrets.env")

    @property
    def history(self) -> str:
        return posixpath.join(self.env_dir, "history.jsonl")

    @property
    def lock(self) -> str:
        return posixpath.join(self.env_dir, "deploy.lock")

    @property
    def op_lock(self) -> str:
        return posixpath.join(self.env_dir, "compose.lock")

    @property
    def holder(self) -> str:
        return posixpath.join(self.env_dir, "lock.json")

    @property
    def proxy_dir(self) -> str:
        """Mounted into the proxy container: the live haproxy.cfg (and the staged one)."""
        return posixpath.join(self.env_dir, "proxy")

    @property
    def proxy_cfg(self) -> str:
        return posixpath.join(self.proxy_dir, "haproxy.cfg")

    @property
    def proxy_next(self) -> str:
        return posixpath.join(self.proxy_dir, "haproxy.cfg.next")

    @property
    def claims(self) -> str:
        return posixpath.join(self.root, "claims.json")

    @property
    def claims_lock(self) -> str:
        return posixpath.join(self.root, "claims.lock")

    def release_of(self, compose_file: str) -> str | None:
        """The release id a container was created from, by the compose file path compose
        recorded."""
        prefix = self.releases + "/"
        for path in compose_file.split(","):
            if path.startswith(prefix):
                return path[len(prefix) :].split("/", 1)[0]
        return None


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str  # what it is: gateway, proxy (our label), else its compose service
    state: str  # running, exited, restarting, created, ...
    health: str  # healthy, unhealthy, starting, none
    started_at: str
    release: str | None
    image_id: str
    owned: bool  # carries our ownership labels for this project and environment
    exit_code: int = 0
    labels: dict[str, str] = field(default_factory=dict, repr=False)
    health_log: str = field(default="", repr=False)
    compose_service: str = ""  # gateway-a1, proxy, ...
    slot: str | None = None  # a gateway's slot (a or b)
    ip: str = ""  # its address on the project's network

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class ProxyHeader:
    """What deploy last made the proxy's live configuration (the first line of haproxy.cfg)."""

    release: str
    slot: str
    config: str

    PREFIX = "# switchyard-live:"

    def line(self) -> str:
        return f"{self.PREFIX} release={self.release} slot={self.slot} config={self.config}"

    @classmethod
    def parse(cls, line: str) -> ProxyHeader | None:
        if not line.startswith(cls.PREFIX):
            return None
        fields = dict(part.partition("=")[::2] for part in line[len(cls.PREFIX) :].split())
        if not all(fields.get(k) for k in ("release", "slot", "config")):
            return None
        return cls(fields["release"], fields["slot"], fields["config"])


@dataclass
class HostState:
    paths: Paths
    exists: bool
    current: str | None = None
    releases: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    containers: list[Container] = field(default_factory=list)
    manifests: dict[str, Manifest] = field(default_factory=dict)  # of this Switchyard's layout
    images: dict[str, bool] = field(default_factory=dict)  # of the images asked about: present?
    claims: str | None = None  # the host's claims file as read (with `claims_file`)
    published: str = ""  # `docker ps` ports of every running container
    secrets_same: bool | None = None  # the secrets given equal the host's file (None: not asked)
    proxy_live: ProxyHeader | None = None  # what haproxy.cfg says the proxy serves
    compose: str = ""  # `docker compose version --short` on the host ("" if missing)
    lock_holder: str = ""  # lock.json as found (a deploy in progress, or one that never finished)
    lock_free: bool | None = None  # nobody holds the deploy lock (None: not asked)
    leftovers: list[str] = field(
        default_factory=list
    )  # half-written uploads (hidden, never a release)

    def owned(self, service: str | None = None) -> list[Container]:
        return [c for c in self.containers if c.owned and (service is None or c.service == service)]

    def gateways(self, slot: str | None = None) -> list[Container]:
        """Our gateways of the two-slot layout (of one slot)."""
        return [
            c
            for c in self.owned("gateway")
            if c.slot is not None and (slot is None or c.slot == slot)
        ]

    def proxy(self) -> Container | None:
        found = self.owned("proxy")
        return max(found, key=lambda c: (c.running, c.started_at)) if found else None

    def foreign(self) -> list[Container]:
        return [c for c in self.containers if not c.owned]

    def previous(self) -> str | None:
        """The release before `current` that is still on the host (for --rollback)."""
        if self.current is None:
            return None
        older = [r for r in self.releases if r < self.current and r not in self.failed]
        return older[-1] if older else None


def resolve_root(host: Host, root: str, *, create: bool, env: str) -> str | None:
    """The deploy directory as an absolute path on the host (None when absent and not created);
    DeployError naming `environments.<env>.deploy_dir` when it cannot be used."""
    out = host.run(cmd.resolve_root(root, create)).stdout.strip()
    place = f"environments.{env}.deploy_dir: {root} on {host.name}"
    user = "the user running deploy.py" if host.name == "localhost" else "the SSH user"
    word, _, why = out.partition(" ") if out.startswith("cannotcreate") else (out, "", "")
    problems = {
        "notdir": f"{place} is a file, not a directory; pick another deploy_dir, or move that file "
        "away",
        "cannotcreate": f"{place} cannot be created by {user} ({why or 'mkdir failed'}); create it "
        "and give that user "
        "write access, or pick another deploy_dir",
        "notwritable": f"{place} is not writable by {user}; give that user write access, or pick "
        "another deploy_dir",
    }
    if word in problems:
        raise DeployError(problems[word])
    return None if out in ("", "absent") else out


def parse_container(raw: dict[str, Any], paths: Paths, project: str, env: str) -> Container:
    labels: dict[str, str] = raw.get("Config", {}).get("Labels") or {}
    state = raw.get("State", {})
    health = state.get("Health") or {}
    log = health.get("Log") or []
    owned = (
        labels.get(cmd.OWNER_LABEL) == cmd.OWNER
        and labels.get("dev.switchyard.project") == project
        and labels.get("dev.switchyard.environment") == env
    )
    networks = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    ip = next(
        (
            str(n.get("IPAddress"))
            for _, n in sorted(networks.items())
            if isinstance(n, dict) and n.get("IPAddress")
        ),
        "",
    )
    compose_service = labels.get(cmd.SERVICE_LABEL, "?")
    return Container(
        id=raw["Id"],
        name=raw.get("Name", "").lstrip("/"),
        service=labels.get(cmd.ROLE_LABEL) or compose_service,
        compose_service=compose_service,
        slot=labels.get(cmd.SLOT_LABEL) or None,
        ip=ip,
        state=state.get("Status", "unknown"),
        health=health.get("Status", "none"),
        started_at=state.get("StartedAt", ""),
        release=paths.release_of(labels.get(cmd.CONFIG_FILES_LABEL, "")),
        image_id=raw.get("Image", ""),
        owned=owned,
        labels=labels,
        exit_code=int(state.get("ExitCode") or 0),
        health_log=(log[-1].get("Output", "") if log else "").strip(),
    )


def containers(host: Host, paths: Paths, project: str, env: str) -> list[Container]:
    ids = host.run(cmd.project_containers(paths.compose_project)).stdout.split()
    if not ids:
        return []
    res = host.run(cmd.inspect(ids), check=False)  # a container removed meanwhile: inspect the rest
    raw = inspect_output(res.stdout, host)
    return sorted(
        (parse_container(r, paths, project, env) for r in raw), key=lambda c: (c.service, c.name)
    )


def inspect_output(text: str, host: Host) -> list[dict[str, Any]]:
    """The documents of `docker inspect` as the host printed them; DeployError if they are not."""
    try:
        docs = json.loads(text or "[]")
    except ValueError as exc:
        raise DeployError(
            f"`docker inspect` on {host.name} printed something that is not JSON ({len(text)} "
            f"bytes, {exc}); "
            f"its start: {text[:200]!r}"
        ) from None
    if not isinstance(docs, list) or not all(
        isinstance(d, dict) and isinstance(d.get("Id"), str) for d in docs
    ):
        raise DeployError(
            f"`docker inspect` on {host.name} printed JSON that is not a list of containers: "
            f"{text[:200]!r}"
        )
    return docs


def read_files(host: Host, paths: list[str]) -> dict[str, str | None]:
    """The text of several files on the host in one round trip (None: absent)."""
    if not paths:
        return {}
    out = host.run(cmd.cat_files(paths)).stdout
    files: dict[str, str | None] = dict.fromkeys(paths)
    for chunk in out.split("\n@@sy-file ")[1:]:
        path, _, content = chunk.partition("\n")
        files[path] = None if content == "@@sy-absent\n" else content
    return files


def parse_json(text: str | None) -> dict[str, Any] | None:
    """A JSON object read from the host, or None (absent or not an object)."""
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _sections(out: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("@@sy "):
            current = sections.setdefault(line[5:].strip(), [])
        else:
            current.append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def read_state(
    host: Host,
    root: str,
    compose_project: str,
    project: str,
    env: str,
    *,
    images: tuple[str, ...] = (),
    secrets: bytes | None = None,
    claims: bool = False,
) -> HostState:
    """Everything the plan needs, in two round trips, without changing anything on the host.

    With `images`, also which of them exist; with `secrets`, whether the host's secrets
    file holds exactly those bytes (compared on the host; the bytes travel on stdin); with
    `claims`, the host's claims file.
    """
    paths = Paths(root, compose_project)
    state = HostState(paths=paths, exists=False)
    probe = cmd.probe(
        paths.env_dir, compose_project, images, secrets is not None, paths.claims if claims else ""
    )
    parts = _sections(host.run(probe, stdin=secrets).stdout)
    state.proxy_live = ProxyHeader.parse(parts.get("proxy", "").strip())
    state.compose = parts.get("compose", "").strip()
    lock_lines = parts.get("lock", "").strip().splitlines()
    if lock_lines:
        state.lock_holder = lock_lines[0]
        state.lock_free = lock_lines[-1] == "free"
    state.leftovers = [n for n in parts.get("leftovers", "").split() if n]
    state.published = parts.get("published", "")
    if claims:
        state.claims = parts.get("claims") or None
    raw = inspect_output(parts.get("containers", ""), host)
    state.containers = sorted(
        (parse_container(r, paths, project, env) for r in raw), key=lambda c: (c.service, c.name)
    )
    for line in parts.get("releases", "").splitlines():
        rid, _, status = line.partition(" ")
        if rid and not rid.startswith(".") and not rid.endswith(".tmp"):
            state.releases.append(rid)
            if status == "failed":
                state.failed.add(rid)
    state.releases.sort()
    state.exists = bool(state.releases)
    current = parts.get("current", "").strip()
    state.current = current.rsplit("/", 1)[-1] if current else None
    state.images = {
        ref: status == "present"
        for ref, _, status in (line.rpartition(" ") for line in parts.get("image", "").splitlines())
        if ref
    }
    if secrets is not None:
        state.secrets_same = parts.get("secrets", "").strip() == "same"
    wanted = sorted(
        {c.release for c in state.containers if c.release}
        | ({state.current} if state.current else set())
    )
    files = read_files(
        host, [posixpath.join(paths.release(r), "manifest.json") for r in wanted if r]
    )
    for rid in wanted:
        path = posixpath.join(paths.release(rid), "manifest.json")
        manifest = host_manifest(files.get(path), path, host)
        if manifest is not None:
            state.manifests[rid] = manifest
    return state


def host_manifest(text: str | None, path: str, host: Host) -> Manifest | None:
    """A release's manifest as read from the host: None when it has none of this Switchyard's
    layout (absent, unreadable, or an earlier layout's); DeployError naming the field when
    it is of this version but malformed, or of a newer version."""
    try:
        return release_manifest(text, f"{path} on {host.name}")
    except ManifestError as exc:
        raise DeployError(
            f"{exc}; this Switchyard cannot read that release's manifest (deploy with the "
            "Switchyard that made it, or remove that release)"
        ) from None


def readyz_instance(
    host: Host, port: int, addr: str = "127.0.0.1", timeout: float = 3.0
) -> tuple[str | None, int | None]:
    """(instance, status) of `/readyz` on `addr:port` as seen on the host: the answering
    gateway's hostname (its container's short id) and the HTTP status; (None, None) when
    nothing answers, (None, status) when the answer names no instance."""
    probe = host.http_get(port, "/readyz", timeout=timeout, addr=addr)
    if probe is None:
        return None, None
    try:
        instance = json.loads(probe[1].decode(errors="replace")).get("instance")
    except (ValueError, AttributeError):
        instance = None
    return (instance if isinstance(instance, str) and len(instance) >= 12 else None), probe[0]


def serving_gateway(
    host: Host, port: int, found: list[Container]
) -> tuple[Container | None, int | None]:
    """Which of `found` answers on the environment's port (through the proxy), and its status."""
    instance, status = readyz_instance(host, port)
    return (next((c for c in found if instance and c.id.startswith(instance)), None), status)


def image_present(host: Host, refs: list[str]) -> dict[str, bool]:
    """Which image references exist on the host."""
    present = {}
    for ref in refs:
        present[ref] = host.run(cmd.image_ids([ref]), check=False).ok
    return present


def check_ownership(state: HostState) -> None:
    """Refuse a compose project name that containers we do not own already use."""
    foreign = state.foreign()
    if foreign:
        names = ", ".join(f"{c.name} ({c.short_id})" for c in foreign[:5])
        raise DeployError(
            f"the compose project '{state.paths.compose_project}' on this host is already used by "
            "containers "
            f"that Switchyard does not own for this environment: {names}. Refusing to touch them. "
            "Pick another name (environments.<env>.compose_project) or move those containers to "
            "another project."
        )
