"""The deploy manifest (`manifest.json`): what one compiled environment is, as typed data.

The compiler owns it: `compiler.render` builds a `Manifest` and writes `Manifest.text()`;
the deployer reads a release's manifest only through `Manifest.from_json` (or `parse`),
never by string key. The JSON form is exact: `Manifest.from_json(doc).to_json() == doc`
for every manifest the compiler writes, so the golden files do not move.

`schema_version` is checked on reading. A manifest of another version, or one whose fields
are missing or of the wrong type, is a `ManifestError` whose message names the field
(`manifest.json: services.gateway.slots.a: should be a list of strings`).
Version 1 was the layout before the proxy (one gateway service, no slots); the deployer
treats such a release as one with no manifest it can compare with (`release_manifest`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from compiler.canonical import canonical_json

MANIFEST_SCHEMA_VERSION = 2
GENERATOR = "switchyard"
Target = Literal["local", "ssh"]


class ManifestError(ValueError):
    """A manifest that this Switchyard cannot read; the message names the field."""


class _Reader:
    """Typed reads of one JSON object, each failure naming the dotted field."""

    def __init__(self, doc: object, where: str, source: str) -> None:
        self.source = source
        self.where = where
        if not isinstance(doc, dict):
            raise self.error("", "should be an object")
        self.doc: dict[str, Any] = doc

    def error(self, key: str, problem: str) -> ManifestError:
        place = ".".join(p for p in (self.where, key) if p) or "(top level)"
        return ManifestError(f"{self.source}: {place}: {problem}")

    def raw(self, key: str) -> object:
        if key not in self.doc:
            raise self.error(key, "is missing")
        return self.doc[key]

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(key, f"should be a string, not {value!r}")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.raw(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"should be a string or null, not {value!r}")
        return value

    def integer(self, key: str) -> int:
        value = self.raw(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"should be an integer, not {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self.raw(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(key, f"should be a number, not {value!r}")
        return float(value)

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "should be a list of strings")
        return tuple(value)

    def text_map(self, key: str) -> dict[str, str]:
        value = self.raw(key)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.error(key, "should be an object of strings")
        return dict(value)

    def obj(self, key: str) -> _Reader:
        return _Reader(self.raw(key), ".".join(p for p in (self.where, key) if p), self.source)


@dataclass(frozen=True)
class ImageDigests:
    """What the gateway image's hash is made of, so deploy can say which one changed."""

    dockerfile: str
    runtime: str
    requirements: str

    def to_json(self) -> dict[str, str]:
        """The `image_inputs` object of manifest.json."""
        return {
            "dockerfile": self.dockerfile,
            "runtime": self.runtime,
            "requirements": self.requirements,
        }

    @classmethod
    def read(cls, r: _Reader) -> ImageDigests:
        """From the `image_inputs` object."""
        return cls(r.text("dockerfile"), r.text("runtime"), r.text("requirements"))


@dataclass(frozen=True)
class Source:
    """The gateway.yaml a release was compiled from: its file name and sha256."""

    name: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        """The `source` object of manifest.json."""
        return {"name": self.name, "sha256": self.sha256}


@dataclass(frozen=True)
class GatewayInputs:
    """The gateway service's inputs: what makes its containers differ from another release's."""

    image: str  # sha256 of the image inputs
    config: str  # runtime.json's config hash
    replicas: int
    definition: str  # hash of its compose block (compiler.render.service_definition_hash)
    inputs_hash: str
    slots: Mapping[str, tuple[str, ...]]  # slot -> the compose services of that slot

    def to_json(self) -> dict[str, Any]:
        """The `services.gateway` object of manifest.json."""
        return {
            "image": self.image,
            "config": self.config,
            "replicas": self.replicas,
            "definition": self.definition,
            "inputs_hash": self.inputs_hash,
            "slots": {slot: list(names) for slot, names in self.slots.items()},
        }

    @classmethod
    def read(cls, r: _Reader) -> GatewayInputs:
        """From the `services.gateway` object."""
        slots = r.obj("slots")
        return cls(
            image=r.text("image"),
            config=r.text("config"),
            replicas=r.integer("replicas"),
            definition=r.text("definition"),
            inputs_hash=r.text("inputs_hash"),
            slots={slot: slots.texts(slot) for slot in slots.doc},
        )


@dataclass(frozen=True)
class ProxyInputs:
    """The proxy service's inputs; `config` is the sha256 of each slot's haproxy.cfg."""

    image: str
    config: Mapping[str, str]  # slot -> "sha256:..." of proxy/haproxy-<slot>.cfg
    definition: str
    inputs_hash: str

    def to_json(self) -> dict[str, Any]:
        """The `services.proxy` object of manifest.json."""
        return {
            "image": self.image,
            "config": dict(self.config),
            "definition": self.definition,
            "inputs_hash": self.inputs_hash,
        }

    @classmethod
    def read(cls, r: _Reader) -> ProxyInputs:
        """From the `services.proxy` object."""
        return cls(
            image=r.text("image"),
            config=r.text_map("config"),
            definition=r.text("definition"),
            inputs_hash=r.text("inputs_hash"),
        )


@dataclass(frozen=True)
class Services:
    """The two services of a release, each with the inputs the deploy plan compares."""

    gateway: GatewayInputs
    proxy: ProxyInputs

    def to_json(self) -> dict[str, Any]:
        """The `services` object of manifest.json."""
        return {"gateway": self.gateway.to_json(), "proxy": self.proxy.to_json()}


@dataclass(frozen=True)
class Manifest:
    """One compiled environment: where it deploys, its images and its services' inputs."""

    project: str
    environment: str
    compose_project: str
    target: Target
    host: str | None
    ssh_user: str | None
    ssh_port: int
    port: int
    replicas: int
    health_timeout_s: float
    drain_timeout_s: float
    keep_releases: int
    deploy_dir: str
    image: str  # the gateway image reference (<compose project>/gateway:<hash>)
    proxy_image: str
    image_inputs: ImageDigests
    config_hash: str
    source: Source
    secrets: tuple[str, ...]  # the secret names the release needs (never values)
    files: Mapping[str, str]  # file name -> "sha256:..." of every other file of the release
    services: Services
    schema_version: int = MANIFEST_SCHEMA_VERSION
    generator: str = GENERATOR

    @property
    def images(self) -> tuple[str, str]:
        """The gateway and proxy image references."""
        return self.image, self.proxy_image

    def to_json(self) -> dict[str, Any]:
        """The manifest.json document (a plain JSON object)."""
        return {
            "schema_version": self.schema_version,
            "generator": self.generator,
            "project": self.project,
            "environment": self.environment,
            "compose_project": self.compose_project,
            "target": self.target,
            "host": self.host,
            "ssh_user": self.ssh_user,
            "ssh_port": self.ssh_port,
            "port": self.port,
            "replicas": self.replicas,
            "health_timeout_s": self.health_timeout_s,
            "drain_timeout_s": self.drain_timeout_s,
            "keep_releases": self.keep_releases,
            "deploy_dir": self.deploy_dir,
            "image": self.image,
            "proxy_image": self.proxy_image,
            "image_inputs": self.image_inputs.to_json(),
            "config_hash": self.config_hash,
            "source": self.source.to_json(),
            "secrets": list(self.secrets),
            "files": dict(self.files),
            "services": self.services.to_json(),
        }

    def text(self) -> str:
        """manifest.json as written: canonical JSON (sorted keys, two-space indent)."""
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, doc: object, source: str = "manifest.json") -> Manifest:
        """The manifest a JSON document holds; ManifestError naming the field otherwise."""
        r = _Reader(doc, "", source)
        version = r.raw("schema_version")
        if version != MANIFEST_SCHEMA_VERSION:
            raise r.error(
                "schema_version",
                f"{version!r} is not supported by this Switchyard (it reads "
                f"{MANIFEST_SCHEMA_VERSION})",
            )
        target = r.text("target")
        if target not in ("local", "ssh"):
            raise r.error("target", f"should be 'local' or 'ssh', not {target!r}")
        services = r.obj("services")
        source_doc = r.obj("source")
        return cls(
            schema_version=MANIFEST_SCHEMA_VERSION,
            generator=r.text("generator"),
            project=r.text("project"),
            environment=r.text("environment"),
            compose_project=r.text("compose_project"),
            target="local" if target == "local" else "ssh",
            host=r.opt_text("host"),
            ssh_user=r.opt_text("ssh_user"),
            ssh_port=r.integer("ssh_port"),
            port=r.integer("port"),
            replicas=r.integer("replicas"),
            health_timeout_s=r.number("health_timeout_s"),
            drain_timeout_s=r.number("drain_timeout_s"),
            keep_releases=r.integer("keep_releases"),
            deploy_dir=r.text("deploy_dir"),
            image=r.text("image"),
            proxy_image=r.text("proxy_image"),
            image_inputs=ImageDigests.read(r.obj("image_inputs")),
            config_hash=r.text("config_hash"),
            source=Source(source_doc.text("name"), source_doc.text("sha256")),
            secrets=r.texts("secrets"),
            files=r.text_map("files"),
            services=Services(
                GatewayInputs.read(services.obj("gateway")),
                ProxyInputs.read(services.obj("proxy")),
            ),
        )

    @classmethod
    def parse(cls, text: str | bytes, source: str = "manifest.json") -> Manifest:
        """`from_json` of manifest.json's text; ManifestError if it is not JSON."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{source}: is not JSON ({exc})") from None
        return cls.from_json(doc, source)


def release_manifest(text: str | bytes | None, source: str = "manifest.json") -> Manifest | None:
    """The manifest of a release found on a host, for comparing with: None when there is none
    this Switchyard can compare with (absent, not a JSON object, or an earlier layout: version
    1 or no version, written before the proxy); ManifestError naming the field when it is
    this version but malformed, or of a newer version (a newer Switchyard made it)."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    if version < MANIFEST_SCHEMA_VERSION:
        return None
    return Manifest.from_json(doc, source)


def image_references(text: str | None) -> set[str]:
    """The image references a release's manifest.json names, of any schema version (an earlier
    layout's too): what pruning that release may remove. Empty when unreadable."""
    try:
        doc = json.loads(text or "{}")
    except ValueError:
        return set()
    if not isinstance(doc, dict):
        return set()
    return {str(doc[k]) for k in ("image", "proxy_image") if isinstance(doc.get(k), str)}
