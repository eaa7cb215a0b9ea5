"""What a deploy (or rollback) changes, service by service, and why.

Decided from what actually runs — the gateways the proxy serves, the release each container
was created from and that release's manifest — compared with the manifest being deployed
(docs/artifacts.md, "Per-service input hashes"), plus what the host shows: a missing image, a
stopped or unhealthy container, changed secrets, containers an interrupted deploy left.

The gateways never restart in place: a change starts the new release's gateways in the slot
that is not live, and the proxy is pointed at them once they are ready (docs/deploy.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from compiler.manifest import ImageDigests, Manifest
from deployer.output import table
from deployer.state import Container, HostState

UNCHANGED, CREATE, REPLACE, REBUILD, RELOAD, RECREATE, REMOVE = (
    "unchanged",
    "create",
    "replace",
    "rebuild",
    "reload",
    "recreate",
    "remove",
)
SLOTS = ("a", "b")


def other_slot(slot: str | None) -> str:
    return "b" if slot == "a" else "a"


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
class DeployPlan:
    services: tuple[ServicePlan, ...]
    live_release: str | None  # the release whose gateways serve now
    live_slot: str | None  # and their slot
    target_slot: str  # where this release's gateways run (new ones, if they change)
    build: tuple[str, ...] = ()  # compose services whose image must be built (one per image)
    stale: tuple[Container, ...] = field(default=(), repr=False)  # our gateways that do not serve
    legacy: tuple[Container, ...] = field(
        default=(), repr=False
    )  # ours, of services this release lacks

    def service(self, name: str) -> ServicePlan:
        return next(s for s in self.services if s.service == name)

    @property
    def gateways_change(self) -> bool:
        return self.service("gateway").action in (CREATE, REPLACE, REBUILD)

    @property
    def proxy_action(self) -> str:
        return self.service("proxy").action

    @property
    def changed(self) -> list[ServicePlan]:
        return [s for s in self.services if s.changes and s.action != REMOVE]

    @property
    def removed(self) -> list[ServicePlan]:
        return [s for s in self.services if s.action == REMOVE]

    @property
    def noop(self) -> bool:
        return not any(s.changes for s in self.services)

    @property
    def deployed_release(self) -> str | None:
        return self.live_release

    def table(self) -> str:
        rows = [("SERVICE", "ACTION", "WHY")] + [
            (s.service, s.action, "; ".join(s.reasons) or "-") for s in self.services
        ]
        return table(rows)


def _short(h: Any) -> str:
    text = str(h or "none")
    return text.split(":", 1)[-1][:12]


def _image_reasons(a: ImageDigests, b: ImageDigests) -> list[str]:
    changed = [
        (a.dockerfile != b.dockerfile, "Dockerfile (base image) changed"),
        (a.runtime != b.runtime, "runtime/ code changed"),
        (a.requirements != b.requirements, "requirements.txt changed"),
    ]
    reasons = [text for differs, text in changed if differs]
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
        out += _diff_keys(
            old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key), depth - 1
        )
    return out


def _listed(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass(frozen=True)
class Inputs:
    """What the plan compares: the wanted release's files and the running releases' files."""

    manifest: Manifest
    runtime: dict[str, Any]
    compose: dict[str, Any]
    old_runtime: dict[str, dict[str, Any]]  # release id -> runtime.json (when readable)
    old_compose: dict[str, dict[str, Any]]  # release id -> compose.yaml (parsed)


def parse_compose(text: str | bytes | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _newest(releases: set[str | None]) -> str | None:
    known = sorted(r for r in releases if r)
    return known[-1] if known else None


def live_slot(state: HostState, serving: Container | None) -> str | None:
    """The slot whose gateways serve: the one that answered through the proxy, else the one
    the proxy's live config names (if its gateways run), else the only one that runs."""
    if serving is not None and serving.slot in SLOTS:
        return serving.slot
    header = state.proxy_live
    if header is not None and any(c.running for c in state.gateways(header.slot)):
        return header.slot
    running = {c.slot for c in state.gateways() if c.running}
    return running.pop() if len(running) == 1 else None


def live_release_of(state: HostState, slot: str | None) -> str | None:
    """The release that serves: the newest of the live slot's gateways' releases and of the
    release that made the proxy's live config for that slot (a deploy that changed only the
    proxy leaves the gateways of the release before it)."""
    if slot is None:
        return None
    releases: set[str | None] = {c.release for c in state.gateways(slot)}
    header = state.proxy_live
    if header is not None and header.slot == slot:
        releases.add(header.release)
    return _newest(releases)


def _gateway(
    inputs: Inputs, state: HostState, live: list[Container], secrets_changed: bool
) -> tuple[str, list[str]]:
    new = inputs.manifest
    want = new.services.gateway
    if not live:
        legacy = [c for c in state.owned("gateway") if c.slot is None]
        return CREATE, [
            "replaces the gateway of an earlier Switchyard (one short interruption: the proxy "
            "takes over its port)"
            if legacy
            else "not running yet"
        ]
    rels = {c.release for c in live}
    rel = _newest(rels)
    old = state.manifests.get(rel) if rel else None
    if len(rels) > 1:
        return REPLACE, ["its containers run different releases"]
    if old is None:
        return REPLACE, [f"running release {rel or '(unknown)'} has no manifest on the host"]
    have = old.services.gateway
    reasons: list[str] = []
    action = REPLACE
    if have.image != want.image:
        action, reasons = REBUILD, _image_reasons(old.image_inputs, new.image_inputs)
    if have.config != want.config:
        keys = (
            _diff_keys(inputs.old_runtime.get(rel or "", {}), inputs.runtime)
            if rel in inputs.old_runtime
            else []
        )
        reasons.append(
            f"runtime.json changed ({_listed(keys)})"
            if keys
            else f"runtime.json changed (config {_short(have.config)} -> {_short(want.config)})"
        )
    if have.definition != want.definition:
        old_services = inputs.old_compose.get(rel or "", {}).get("services", {})
        old_names = have.slots.get("a")
        old_block = old_services.get(old_names[0]) if old_names else None
        new_block = inputs.compose.get("services", {}).get(want.slots["a"][0])
        keys = (
            [k for k in _diff_keys(old_block, new_block, depth=1) if k not in ("labels", "image")]
            if old_block is not None
            else []
        )
        reasons.append(
            f"compose definition changed ({_listed(keys)})"
            if keys
            else "compose definition changed"
        )
    if have.replicas != want.replicas:
        reasons.append(f"replicas {have.replicas} -> {want.replicas}")
    if secrets_changed:
        reasons.append("secrets changed")
    bad = [c for c in live if not c.running or c.health == "unhealthy"]
    if bad:
        reasons.append(", ".join(f"{c.name} is {c.health if c.running else c.state}" for c in bad))
    elif len(live) < (have.replicas or 1):
        reasons.append(f"{len(live)} of {have.replicas} gateways run")
    return (action, reasons) if reasons else (UNCHANGED, [])


def _proxy(
    inputs: Inputs, state: HostState, proxy: Container | None, gateways_change: bool, target: str
) -> tuple[str, list[str]]:
    want = inputs.manifest.services.proxy
    if proxy is None:
        return CREATE, ["not running yet"]
    old = state.manifests.get(proxy.release or "")
    if not proxy.running:
        return RECREATE, [f"{proxy.name} is {proxy.state} (a short interruption)"]
    if old is None:
        return RECREATE, [
            f"running release {proxy.release or '(unknown)'} has no manifest on the host (a short "
            "interruption)"
        ]
    have = old.services.proxy
    reasons = []
    if have.image != want.image:
        reasons.append(
            "its image changed (runtime.proxy.base_image or Switchyard's proxy Dockerfile)"
        )
    if have.definition != want.definition:
        old_block = inputs.old_compose.get(proxy.release or "", {}).get("services", {}).get("proxy")
        keys = (
            [
                k
                for k in _diff_keys(
                    old_block, inputs.compose.get("services", {}).get("proxy"), depth=1
                )
                if k not in ("labels", "image")
            ]
            if old_block is not None
            else []
        )
        reasons.append(
            f"compose definition changed ({_listed(keys)})"
            if keys
            else "compose definition changed"
        )
    if reasons:
        return RECREATE, [*reasons, "a short interruption: the port is closed while it restarts"]
    if gateways_change:
        return RELOAD, [f"the gateways move to slot {target}"]
    header = state.proxy_live
    if header is None or header.config != want.config[target]:
        return RELOAD, [
            "haproxy.cfg changed (runtime.proxy)"
            if header
            else "its live config is not Switchyard's"
        ]
    return UNCHANGED, []


def make_plan(
    inputs: Inputs,
    state: HostState,
    *,
    images: dict[str, bool],
    secrets_changed: bool,
    serving: Container | None = None,
) -> DeployPlan:
    """Compare what is wanted with what runs. `images`: which image references exist on the
    host; `serving`: the gateway that answered through the proxy (None: none did)."""
    new = inputs.manifest
    slot = live_slot(state, serving)
    live = state.gateways(slot) if slot else []
    live_release = live_release_of(state, slot)
    g_action, g_reasons = _gateway(inputs, state, live, secrets_changed)
    gateways_change = g_action != UNCHANGED
    target = other_slot(slot) if gateways_change else (slot or "a")
    proxy = state.proxy()
    p_action, p_reasons = _proxy(inputs, state, proxy, gateways_change, target)

    build: list[str] = []
    image, proxy_image = new.images
    # An image is named by the hash of its inputs: one already on the host (an earlier
    # release's, say the one a rollback brings back) is that image, and is not built again.
    if gateways_change and not images.get(image, False):
        if g_action == REPLACE:
            g_action = REBUILD
        g_reasons.append(f"image {image} is not on the host")
        build.append(new.services.gateway.slots[target][0])
    elif g_action == REBUILD:
        # New image inputs, but that image is here: the gateways are replaced, nothing is built.
        g_action = REPLACE
        g_reasons.append(f"image {image} is already on the host (not built again)")
    if not images.get(proxy_image, False):
        build.append("proxy")  # (re)created from it, or at least it checks the new config
        if p_action in (CREATE, RECREATE):
            p_reasons.append(f"image {proxy_image} is not on the host")

    services = [
        ServicePlan("gateway", g_action, tuple(g_reasons), tuple(live)),
        ServicePlan("proxy", p_action, tuple(p_reasons), (proxy,) if proxy else ()),
    ]
    stale = tuple(c for c in state.gateways() if c.slot != slot)
    if stale:
        services.append(
            ServicePlan(
                f"gateway (slot {'/'.join(sorted({str(c.slot) for c in stale}))})",
                REMOVE,
                ("not served by the proxy (left by an interrupted deploy)",),
                stale,
            )
        )
    known = {"gateway", "proxy"}
    legacy = tuple(
        c
        for c in state.owned()
        if c.service not in known or (c.service == "gateway" and c.slot is None)
    )
    for name in sorted({c.compose_service for c in legacy}):
        # Named apart from this release's services: the JSON output and history key them by name.
        services.append(
            ServicePlan(
                f"{name} (earlier layout)" if name in known else name,
                REMOVE,
                ("not part of this release (an earlier Switchyard's layout)",),
                tuple(c for c in legacy if c.compose_service == name),
            )
        )
    return DeployPlan(tuple(services), live_release, slot, target, tuple(build), stale, legacy)
