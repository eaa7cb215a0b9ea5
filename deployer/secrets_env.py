"""The environment's secrets file, read from the operator's sources named in gateway.yaml.

Values are read here, written to the host as a 0600 file, and never printed, logged, passed
on a command line or stored in a release. Only names and "where from" are ever shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from compiler.models import SecretSource
from deployer.bundle import Bundle, DeployError


@dataclass(frozen=True)
class SecretsFile:
    """The rendered `secrets.env` and what it holds (names only in repr)."""

    content: bytes
    names: tuple[str, ...]
    missing_optional: tuple[str, ...]
    _values: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:  # never show the content
        return f"SecretsFile(names={self.names!r}, missing_optional={self.missing_optional!r})"

    def values(self) -> tuple[str, ...]:
        """The values themselves, only so that output can redact them."""
        return self._values


def where(source: SecretSource) -> str:
    return f"${source.env}" if source.env else f"file {source.file}"


def _read(name: str, source: SecretSource, env: str) -> str | None:
    place = f"environments.{env}.secrets.{name}"
    if source.env:
        value = os.environ.get(source.env)
        if value is None or value == "":
            if source.optional:
                return None
            raise DeployError(
                f"{place}: the environment variable {source.env} is not set; export it before "
                "deploying (or mark the secret `optional: true`)"
            )
    else:
        assert source.file is not None
        path = Path(os.path.expanduser(source.file))
        try:
            value = path.read_text(encoding="utf-8").strip("\r\n")
        except FileNotFoundError:
            if source.optional:
                return None
            raise DeployError(
                f"{place}: {source.file} does not exist; create it (mode 0600) holding the value, "
                "or mark the secret `optional: true`"
            ) from None
        except OSError as exc:
            raise DeployError(f"{place}: cannot read {source.file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            # The position only: the byte itself is part of the secret.
            raise DeployError(
                f"{place}: {source.file} is not UTF-8 text (at byte {exc.start}); "
                "write the value as plain UTF-8 text, without a byte-order mark or a binary key"
            ) from None
        if value.startswith("\ufeff"):
            # Notepad's "UTF-8 with BOM": the key would start with an invisible character.
            raise DeployError(
                f"{place}: {source.file} starts with a UTF-8 byte-order mark; write the value as "
                "plain UTF-8 "
                "text, without a byte-order mark"
            )
        if value == "" and not source.optional:
            raise DeployError(f"{place}: {source.file} is empty")
        if value == "":
            return None
    if "\n" in value or "\r" in value or "'" in value or "\0" in value:
        raise DeployError(
            f"{place}: the value from {where(source)} has a line break, a quote or a NUL in it, "
            "which a compose env file cannot hold"
        )
    return value


def secrets_file(bundle: Bundle) -> SecretsFile:
    """Read every secret the environment names; raise DeployError naming the first one missing."""
    lines = ["# Written by Switchyard deploy from the operator's sources; mode 0600. Do not edit."]
    names: list[str] = []
    values: list[str] = []
    skipped: list[str] = []
    sources = bundle.environment.secrets
    for name in sorted(sources):
        value = _read(name, sources[name], bundle.env)
        if value is None:
            skipped.append(name)
            continue
        # Single quotes: compose takes the value literally (no `$` interpolation, no escapes).
        lines.append(f"{name}='{value}'")
        names.append(name)
        values.append(value)
    return SecretsFile(
        ("\n".join(lines) + "\n").encode(), tuple(names), tuple(skipped), tuple(values)
    )
