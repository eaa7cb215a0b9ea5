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
    def claims(self) -> str:
        return posixpath.join(self.root, "claims.json")

    @property
    def claims_lock(self) -> str:
        return posixpath.join(self.root, "claims.lock")

    def release_of(self, compose_file: str) -> str | None:
        """The release id a container was created from, by the compose file path compose recorded."""
        prefix = self.releases + "/"
        for path in compose_file.split(","):
            if path.startswith(prefix):
                return path[len(prefix):].split("/", 1)[0]
        return None


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str
    state: str            # running, exited, restarting, created, ...
    health: str           # healthy, unhealthy, starting, none
    started_at: str
    release: str | None
    image_id: str
    owned: bool           # carries our ownership labels for this project and environment
    exit_code: int = 0
    labels: dict[str, str] = field(default_factory=dict, repr=False)
    health_log: str = field(default="", repr=False)

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass
class HostState:
    paths: Paths
    exists: bool
    current: str | None = None
    releases: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    containers: list[Container] = field(default_factory=list)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_present: bool | None = None      # of the image asked about (None: not asked)
    claims: str | None = None              # the host's claims file as read (with `claims_file`)
    published: str = ""                    # `docker ps` ports of every running container
    secrets_same: bool | None = None       # the secrets given equal the host's file (None: not asked)

    def owned(self, service: str | None = None) -> list[Container]:
        return [c for c in self.containers if c.owned and (service is None or c.service == service)]

    def foreign(self) -> list[Container]:
        return [c for c in self.containers if not c.owned]

    def previous(self) -> str | None:
        """The release before `current` that is still on the host (for --rollback)."""
        if self.current is None:
            return None
        older = [r for r in self.releases if r < self.current and r not in self.failed]
        return older[-1] if older else None


def resolve_root(host: Host, root: str, *, create: bool) -> str | None:
    """The deploy directory as an absolute path on the host (None when absent and not created)."""
    out = host.run(cmd.resolve_root(root, create)).stdout.strip()
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
    return Container(
        id=raw["Id"], name=raw.get("Name", "").lstrip("/"), service=labels.get(cmd.SERVICE_LABEL, "?"),
        state=state.get("Status", "unknown"), health=health.get("Status", "none"),
        started_at=state.get("StartedAt", ""), release=paths.release_of(labels.get(cmd.CONFIG_FILES_LABEL, "")),
        image_id=raw.get("Image", ""), owned=owned, labels=labels, exit_code=int(state.get("ExitCode") or 0),
        health_log=(log[-1].get("Output", "") if log else "").strip(),
    )


def containers(host: Host, paths: Paths, project: str, env: str) -> list[Container]:
    ids = host.run(cmd.project_containers(paths.compose_project)).stdout.split()
    if not ids:
        return []
    res = host.run(cmd.inspect(ids), check=False)  # a container removed meanwhile: inspect the rest
    raw = inspect_output(res.stdout, host)
    return sorted((parse_container(r, paths, project, env) for r in raw), key=lambda c: (c.service, c.name))


def inspect_output(text: str, host: Host) -> list[dict[str, Any]]:
    """The documents of `docker inspect` as the host printed them; DeployError if they are not."""
    try:
        docs = json.loads(text or "[]")
    except ValueError as exc:
        raise DeployError(f"`docker inspect` on {host.name} printed something that is not JSON ({len(text)} bytes, {exc}); "
                          f"its start: {text[:200]!r}") from None
    if not isinstance(docs, list) or not all(isinstance(d, dict) and isinstance(d.get("Id"), str) for d in docs):
        raise DeployError(f"`docker inspect` on {host.name} printed JSON that is not a list of containers: {text[:200]!r}")
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


def read_state(host: Host, root: str, compose_project: str, project: str, env: str, *,
               image: str = "", secrets: bytes | None = None, claims: bool = False) -> HostState:
    """Everything the plan needs, in two round trips, without changing anything on the host.

    With `image`, also whether that image exists; with `secrets`, whether the host's secrets
    file holds exactly those bytes (compared on the host; the bytes travel on stdin); with
    `claims`, the host's claims file.
    """
    paths = Paths(root, compose_project)
    state = HostState(paths=paths, exists=False)
    probe = cmd.probe(paths.env_dir, compose_project, image, secrets is not None, paths.claims if claims else "")
    parts = _sections(host.run(probe, stdin=secrets).stdout)
    state.published = parts.get("published", "")
    if claims:
        state.claims = parts.get("claims") or None
    raw = inspect_output(parts.get("containers", ""), host)
    state.containers = sorted((parse_container(r, paths, project, env) for r in raw), key=lambda c: (c.service, c.name))
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
    if image:
        state.image_present = parts.get("image", "").strip() == "present"
    if secrets is not None:
        state.secrets_same = parts.get("secrets", "").strip() == "same"
    wanted = sorted({c.release for c in state.containers if c.release} | ({state.current} if state.current else set()))
    files = read_files(host, [posixpath.join(paths.release(r), "manifest.json") for r in wanted if r])
    for rid in wanted:
        manifest = parse_json(files.get(posixpath.join(paths.release(rid), "manifest.json")) if rid else None)
        if rid and manifest is not None:
            state.manifests[rid] = manifest
    return state


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
            f"the compose project '{state.paths.compose_project}' on this host is already used by containers "
            f"that Switchyard does not own for this environment: {names}. Refusing to touch them. "
            f"Pick another name (environments.<env>.compose_project) or move those containers to another project."
        )
