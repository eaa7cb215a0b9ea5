"""The deploy manifest type (compiler/manifest.py): exact JSON both ways, and a clear error
naming the field for a manifest of another version or a malformed one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compiler.manifest import (
    MANIFEST_SCHEMA_VERSION,
    Manifest,
    ManifestError,
    image_references,
    release_manifest,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
GOLDEN_MANIFESTS = sorted(GOLDEN.glob("*/manifest.json"))


def golden_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(GOLDEN_MANIFESTS[0].read_text())
    return doc


def test_there_are_golden_manifests() -> None:
    assert len(GOLDEN_MANIFESTS) >= 3


@pytest.mark.parametrize("path", GOLDEN_MANIFESTS, ids=lambda p: p.parent.name)
def test_a_golden_manifest_reads_and_writes_back_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    manifest = Manifest.parse(text)
    assert manifest.text() == text
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_the_fields_are_typed_values() -> None:
    m = Manifest.from_json(golden_doc())
    assert m.schema_version == MANIFEST_SCHEMA_VERSION
    assert m.images == (m.image, m.proxy_image)
    assert m.services.gateway.slots["a"] == ("gateway-a1",)
    assert isinstance(m.drain_timeout_s, float) and isinstance(m.port, int)
    with pytest.raises(AttributeError):
        m.port = 1  # type: ignore[misc]


def broken(path: tuple[str, ...], value: object) -> dict[str, Any]:
    doc = golden_doc()
    place = doc
    for key in path[:-1]:
        place = place[key]
    if value is KeyError:
        del place[path[-1]]
    else:
        place[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema_version",), 3, "m.json: schema_version: 3 is not supported"),
        (("schema_version",), KeyError, "m.json: schema_version: is missing"),
        (("port",), "8080", "m.json: port: should be an integer, not '8080'"),
        (("port",), True, "m.json: port: should be an integer, not True"),
        (("image",), KeyError, "m.json: image: is missing"),
        (("target",), "k8s", "m.json: target: should be 'local' or 'ssh', not 'k8s'"),
        (("host",), 5, "m.json: host: should be a string or null, not 5"),
        (("drain_timeout_s",), "long", "m.json: drain_timeout_s: should be a number"),
        (("source", "sha256"), None, "m.json: source.sha256: should be a string, not None"),
        (
            ("services", "gateway", "slots", "a"),
            "gateway-a1",
            "m.json: services.gateway.slots.a: should be a list of strings",
        ),
        (("services", "proxy"), [], "m.json: services.proxy: should be an object"),
        (("services", "proxy", "config"), {"a": 1}, "m.json: services.proxy.config: should be"),
    ],
)
def test_a_malformed_manifest_is_an_error_naming_the_field(
    path: tuple[str, ...], value: object, message: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(broken(path, value), "m.json")
    assert str(caught.value).startswith(message)


def test_text_that_is_not_json_or_not_an_object_is_an_error() -> None:
    with pytest.raises(ManifestError, match=r"m\.json: is not JSON"):
        Manifest.parse("{", "m.json")
    with pytest.raises(ManifestError, match=r"m\.json: \(top level\): should be an object"):
        Manifest.parse("[]", "m.json")


def test_a_release_manifest_of_an_earlier_layout_is_none_and_a_newer_one_an_error() -> None:
    assert release_manifest(None) is None
    assert release_manifest("not json") is None
    assert release_manifest(json.dumps({"services": {"gateway": {}}})) is None
    assert release_manifest(json.dumps(broken(("schema_version",), 1))) is None
    assert release_manifest(json.dumps(golden_doc())) == Manifest.from_json(golden_doc())
    with pytest.raises(ManifestError, match="schema_version: 3 is not supported"):
        release_manifest(json.dumps(broken(("schema_version",), 3)))
    with pytest.raises(ManifestError, match=r"services\.gateway\.replicas: is missing"):
        release_manifest(json.dumps(broken(("services", "gateway", "replicas"), KeyError)))


def test_image_references_read_any_layout() -> None:
    doc = golden_doc()
    assert image_references(json.dumps(doc)) == {doc["image"], doc["proxy_image"]}
    assert image_references(json.dumps({"image": "old/gateway:1"})) == {"old/gateway:1"}
    assert image_references("{") == set() and image_references(None) == set()
