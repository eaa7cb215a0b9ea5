"""Per service: unchanged, create, restart, rebuild or remove — and why.

Decided from the manifest of the release each running container was created from, compared
with the manifest being deployed (docs/artifacts.md, "Per-service input hashes"), plus what
the host shows: a missing image, a stopped or unhealthy container, changed secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from deployer.output import table
from deployer.state import Container, HostState

UNCHANGED, CREATE, RESTART, REBUILD, REMOVE = "unchanged", "create", "restart", "rebuild", "remove"


@dataclass(frozen=True)
class ServicePlan:
    service: str
    action: str
    reasons: tuple[str, ...] = ()
    running: tuple[Container, ...] = field(default=(), repr=False)

    @property
    def changes(self) -> bool:
        return self.action != UNCHANGED

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Plan:
    services: tuple[ServicePlan, ...]
    deployed_release: str | None   # the release the running containers came from (newest)
    build: bool = False            # the image has to be built (changed inputs, or not on the host)

    @property
    def changed(self) -> list[ServicePlan]:
        return [s for s in self.services if s.changes and s.action != REMOVE]

    @property
    def removed(self) -> list[ServicePlan]:
        return [s for s in self.services if s.action == REMOVE]

    @property
    def noop(self) -> bool:
        return not any(s.changes for s in self.services)

    def table(self) -> str:
        return table([("SERVICE", "ACTION", "WHY")] + [(s.service, s.action, "; ".join(s.reasons) or "-") for s in self.services])


def _short(h: Any) -> str:
    text = str(h or "none")
    return text.split(":", 1)[-1][:12]


def _image_reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = old.get("image_inputs") or {}, new.get("image_inputs") or {}
    names = {"dockerfile": "Dockerfile (base image) changed", "runtime": "runtime/ code changed", "requirements": "requirements.txt changed"}
    reasons = [text for key, text in names.items() if a.get(key) != b.get(key)]
    return reasons or ["image inputs changed"]


def _diff_keys(old: Any, new: Any, prefix: str = "", depth: int = 2) -> list[str]:
    if old == new:
        return []
    if depth == 0 or not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix or "(all)"]
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key.endswith("_hash"):
            continue
        out += _diff_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key), depth - 1)
    return out


def _listed(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass(frozen=True)
class Inputs:
    """What the plan compares: the new release's files and the deployed releases' files."""

    manifest: dict[str, Any]
    runtime: dict[str, Any]
    compose: dict[str, Any]
    old_runtime: dict[str, dict[str, Any]]   # release id -> runtime.json (when readable)
    old_compose: dict[str, dict[str, Any]]   # release id -> compose.yaml (parsed)


def parse_compose(text: str | bytes | None) -> dict[str, Any]:
    if not text:
        return {}
    doc = yaml.safe_load(text)
    return doc if isinstance(doc, dict) else {}


def make_plan(inputs: Inputs, state: HostState, *, image_present: bool, secrets_changed: bool) -> Plan:
    """Compare what is wanted with what runs, service by service."""
    new = inputs.manifest
    services: list[ServicePlan] = []
    releases = sorted({c.release for c in state.owned() if c.release})
    for name, want in new["services"].items():
        running = tuple(state.owned(name))
        reasons: list[str] = []
        action = UNCHANGED
        if not running:
            action, reasons = CREATE, ["not running yet"]
        else:
            rels = {c.release for c in running}
            rel = sorted(r for r in rels if r)[-1] if any(rels) else None
            old = state.manifests.get(rel) if rel else None
            if len(rels) > 1:
                action, reasons = RESTART, ["its containers run different releases"]
            elif old is None or name not in old.get("services", {}):
                action, reasons = RESTART, [f"running release {rel or '(unknown)'} has no manifest on the host"]
            else:
                have = old["services"][name]
                if have.get("image") != want.get("image"):
                    action, reasons = REBUILD, _image_reasons(old, new)
                else:
                    if have.get("config") != want.get("config"):
                        keys = _diff_keys(inputs.old_runtime.get(rel or "", {}), inputs.runtime) if rel in inputs.old_runtime else []
                        reasons.append(f"runtime.json changed ({_listed(keys)})" if keys else f"runtime.json changed (config {_short(have.get('config'))} -> {_short(want.get('config'))})")
                    if have.get("definition") != want.get("definition"):
                        old_block = inputs.old_compose.get(rel or "", {}).get("services", {}).get(name)
                        new_block = inputs.compose.get("services", {}).get(name)
                        keys = _diff_keys(old_block, new_block, depth=1) if old_block is not None else []
                        keys = [k for k in keys if k not in ("labels", "image")] or keys
                        reasons.append(f"compose definition changed ({_listed(keys)})" if keys else "compose definition changed")
                    if reasons:
                        action = RESTART
            bad = [c for c in running if c.state != "running" or c.health == "unhealthy"]
            if bad and action == UNCHANGED:
                action = RESTART
                reasons.append(", ".join(f"{c.name} is {c.health if c.state == 'running' else c.state}" for c in bad))
        if action in (RESTART, CREATE) and not image_present:
            action = REBUILD if action == RESTART else CREATE
            reasons.append(f"image {new['image']} is not on the host")
        if secrets_changed and want.get("config") is not None and action == UNCHANGED:
            action, reasons = RESTART, ["secrets changed"]
        elif secrets_changed and want.get("config") is not None and action != CREATE:
            reasons.append("secrets changed")
        services.append(ServicePlan(name, action, tuple(reasons), running))
    for name in sorted({c.service for c in state.owned()} - set(new["services"])):
        services.append(ServicePlan(name, REMOVE, ("no longer in the config",), tuple(state.owned(name))))
    build = any(s.action == REBUILD for s in services) or (not image_present and any(s.changes for s in services))
    return Plan(tuple(services), releases[-1] if releases else None, build)
