"""The host-wide claims file: which compose project belongs to whom, which port to which project.

Checked (and updated, under its own lock) before anything restarts, so two projects or two
environments on one host cannot take the same port or compose project name. Ports that
running containers of other projects publish count as taken too, claimed or not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from deployer import commands as cmd
from deployer.bundle import Bundle, DeployError
from deployer.hosts import Host
from deployer.state import Paths

_PUBLISHED = re.compile(r"(?:^|[\s,])(?:[\d.]+|\[?[0-9a-f:]*\]?):(\d+)(?:-(\d+))?->")


@dataclass(frozen=True)
class Claim:
    project: str
    environment: str
    port: int


def parse(data: str | bytes | None, where: str = "claims.json") -> dict[str, Claim]:
    if not data:
        return {}
    try:
        doc = json.loads(data)
        return {
            name: Claim(c["project"], c["environment"], int(c["port"]))
            for name, c in doc.get("projects", {}).items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeployError(
            f"{where} on the host is not a valid claims file ({exc}); fix it by hand, or remove it "
            "and deploy every environment on this host again"
        ) from exc


def render(claims: dict[str, Claim], by: str, when: str) -> bytes:
    doc: dict[str, Any] = {
        "version": 1,
        "note": "Switchyard: which compose project and which loopback port belong to whom on this "
        "host.",
        "updated": when,
        "updated_by": by,
        "projects": {
            name: {"project": c.project, "environment": c.environment, "port": c.port}
            for name, c in sorted(claims.items())
        },
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def published_ports(host: Host) -> dict[int, str]:
    """Host ports published by running containers -> their compose project (or container id)."""
    return parse_published(host.run(cmd.published_containers()).stdout)


def parse_published(out: str) -> dict[int, str]:
    """`docker ps --format '{{.ID}}<TAB>{{project label}}<TAB>{{.Ports}}'` ->
    {host port: project}."""
    ports: dict[int, str] = {}
    for line in out.splitlines():
        cid, project, published = ([*line.split("\t"), "", ""])[:3]
        for m in _PUBLISHED.finditer(published):
            first = int(m.group(1))
            last = int(m.group(2) or first)
            for port in range(first, min(last, first + 65535) + 1):  # `a-b->` is a published range
                ports[port] = project or f"container {cid}"
    return ports


def conflicts(bundle: Bundle, claims: dict[str, Claim], published: dict[int, str]) -> list[str]:
    """Why this environment may not take its project name or port on this host (empty: it may)."""
    me, port = bundle.compose_project, bundle.port
    problems = []
    mine = claims.get(me)
    if mine and (mine.project, mine.environment) != (bundle.config.project, bundle.env):
        problems.append(
            f"the compose project '{me}' is claimed on this host by project '{mine.project}' "
            "environment "
            f"'{mine.environment}'; set environments.{bundle.env}.compose_project to another name"
        )
    for name, claim in sorted(claims.items()):
        if name != me and claim.port == port:
            problems.append(
                f"port {port} is claimed on this host by '{name}' (project '{claim.project}', "
                "environment "
                f"'{claim.environment}'); pick another environments.{bundle.env}.port"
            )
    user = published.get(port)
    if user is not None and user != me:
        problems.append(
            f"port {port} is already published on this host by '{user}'; pick another "
            f"environments.{bundle.env}.port"
        )
    return problems


def check(host: Host, paths: Paths, bundle: Bundle) -> list[str]:
    """Read-only check (for --plan)."""
    return conflicts(bundle, parse(host.read(paths.claims), paths.claims), published_ports(host))


def settled(bundle: Bundle, claims: dict[str, Claim], published: dict[int, str]) -> bool:
    """Our claim is on record exactly and nothing conflicts: nothing to write, no lock needed.

    (Anyone else who wants our port or name checks under the lock and sees our claim.)"""
    if conflicts(bundle, claims, published):
        raise DeployError("refusing to deploy: " + "; ".join(conflicts(bundle, claims, published)))
    return claims.get(bundle.compose_project) == Claim(
        bundle.config.project, bundle.env, bundle.port
    )


def claim(host: Host, paths: Paths, bundle: Bundle, who: str, when: str) -> None:
    """Check and record our claim under the host-wide claims lock; raise DeployError on a
    conflict."""
    held, output = host.hold(cmd.lock(paths.claims_lock, 30), "locked", timeout=40)
    if held is None:
        raise DeployError(
            f"could not take the host's claims lock ({paths.claims_lock}): "
            f"{output.strip() or 'timed out'}"
        )
    try:
        claims = parse(host.read(paths.claims), paths.claims)
        problems = conflicts(bundle, claims, published_ports(host))
        if problems:
            raise DeployError("refusing to deploy: " + "; ".join(problems))
        wanted = Claim(bundle.config.project, bundle.env, bundle.port)
        if claims.get(bundle.compose_project) != wanted:
            claims[bundle.compose_project] = wanted
            host.write(paths.claims, render(claims, who, when), 0o644)
    finally:
        held.release()
