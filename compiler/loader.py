"""Load gateway.yaml into plain data plus an index of where every key and value sits.

We build the tree from libyaml's event stream instead of using a YAML loader, because a
loader throws away exactly what we must report on: duplicate keys (PyYAML keeps the last
one silently), explicit tags, anchors and aliases. Scalars are resolved with the YAML 1.2
core schema, so `on:`, `no` and `yes` stay strings (the YAML 1.1 "Norway problem").

Limits keep hostile input cheap: a size cap, a nesting cap and a node cap. Aliases are
never expanded, so a "billion laughs" document costs as much as its text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from compiler.diagnostics import Diagnostic, Path, Severity, error
from compiler.yaml_errors import reader_error, syntax_error

MAX_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 1_000_000

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INT = re.compile(r"[-+]?[0-9]+\Z")
_OCT = re.compile(r"0o[0-7]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)\Z")
_NAN = re.compile(r"\.(nan|NaN|NAN)\Z")


@dataclass
class Loaded:
    """The document as plain Python data, with positions for every path."""

    data: Any = None
    # path -> (line, column), both 1-based; `values` marks the value node, `keys` the key.
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Paths whose value could not be taken as written (an alias, a tagged node): the loader
    # already reported them, so shape errors at exactly these paths would only repeat it.
    opaque: set[Path] = field(default_factory=set)
    # The decoded text (None when it could not be decoded): comments are only in here.
    text: str | None = None

    def position(self, path: Path, *, at_key: bool = False) -> tuple[int, int]:
        """The closest known position of `path` (walking up to a parent when needed)."""
        p = path
        while True:
            if at_key and p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if not p:
                return (1, 1)
            p = p[:-1]
            at_key = False


def resolve_scalar(value: str) -> Any:
    """Resolve a plain scalar with the YAML 1.2 core schema."""
    if value in _NULL:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    first = value[0]
    if first.isdigit() or first in "-+.":
        if _INT.match(value):
            return int(value)
        if _OCT.match(value):
            return int(value[2:], 8)
        if _HEX.match(value):
            return int(value[2:], 16)
        if _FLOAT.match(value):
            return float(value)
        if _INF.match(value):
            return float("-inf") if first == "-" else float("inf")
        if _NAN.match(value):
            return float("nan")
    return value


class _TooBig(Exception):
    pass


class _Builder:
    def __init__(self, events: Iterator[Any], out: Loaded) -> None:
        self.events = events
        self.out = out
        self.nodes = 0

    def _pos(self, event: Any) -> tuple[int, int]:
        mark = event.start_mark
        return (mark.line + 1, mark.column + 1)

    def node(self, event: Any, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"the document has more than {MAX_NODES:,} nodes")
        if depth > MAX_DEPTH:
            raise _TooBig(f"the document nests deeper than {MAX_DEPTH} levels")
        pos = self._pos(event)
        self.out.values[path] = pos
        diags = self.out.diagnostics
        if isinstance(event, yaml.AliasEvent):
            self.out.opaque.add(path)
            if path and path[-1] == "<<":
                diags.append(
                    error(
                        "E003",
                        path,
                        f"YAML merge '<<: *{event.anchor}' is not allowed",
                        "write the keys out in full; a merge hides from a reviewer what the "
                        "section holds",
                    )
                )
                return None
            diags.append(
                error(
                    "E003",
                    path,
                    f"YAML alias '*{event.anchor}' is not allowed",
                    "write the value out in full; anchors and aliases hide what a reviewer sees "
                    "and can expand without bound",
                )
            )
            return None
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            diags.append(
                error(
                    "E003",
                    path,
                    f"YAML anchor '&{anchor}' is not allowed",
                    "remove the anchor and write each value out in full",
                )
            )
        tag = getattr(event, "tag", None)
        explicit_tag = tag is not None and tag != "!"
        if explicit_tag:
            self.out.opaque.add(path)
        if isinstance(event, yaml.ScalarEvent):
            if explicit_tag:
                diags.append(
                    error(
                        "E004",
                        path,
                        f"YAML tag '{_short_tag(tag)}' is not allowed",
                        "remove the tag; quote the value if it must be a string",
                    )
                )
                return event.value
            if event.style:  # quoted or block scalar: always a string
                return event.value
            return resolve_scalar(event.value)
        if explicit_tag:
            diags.append(
                error(
                    "E004",
                    path,
                    f"YAML tag '{_short_tag(tag)}' is not allowed",
                    "remove the tag and write a plain value; tags can make YAML loaders build "
                    "objects or run code",
                )
            )
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Any] = []
            for ev in self.events:
                if isinstance(ev, yaml.SequenceEndEvent):
                    return items
                items.append(self.node(ev, (*path, len(items)), depth + 1))
            raise _TooBig("the document ended inside a list")  # pragma: no cover - parser guards it
        if isinstance(event, yaml.MappingStartEvent):
            mapping: dict[str, Any] = {}
            for ev in self.events:
                if isinstance(ev, yaml.MappingEndEvent):
                    return mapping
                key_pos = self._pos(ev)
                key = self.key(ev, path, depth)
                value_event = next(self.events)
                if key is None:
                    self.node(value_event, (*path, "<invalid key>"), depth + 1)
                    continue
                child = (*path, key)
                if key in mapping:
                    first_line = self.out.keys[child][0]
                    diags.append(
                        Diagnostic(
                            "E002",
                            Severity.ERROR,
                            child,
                            f"duplicate key '{key}' (first defined on line {first_line})",
                            "remove or rename one of them; most YAML tools silently keep only the "
                            "last",
                            line=key_pos[0],
                            column=key_pos[1],
                        )
                    )
                    self.node(value_event, (*path, f"{key} (duplicate)"), depth + 1)
                    continue
                self.out.keys[child] = key_pos
                mapping[key] = self.node(value_event, child, depth + 1)
            raise _TooBig("the document ended inside a mapping")  # pragma: no cover
        raise _TooBig(f"unexpected YAML event {type(event).__name__}")  # pragma: no cover

    def key(self, event: Any, path: Path, depth: int) -> str | None:
        if isinstance(event, yaml.ScalarEvent):
            pos = self._pos(event)
            if event.anchor is not None:
                self.out.diagnostics.append(
                    error(
                        "E003",
                        path,
                        f"YAML anchor '&{event.anchor}' is not allowed on a key",
                        "remove the anchor",
                    ).located(*pos)
                )
            if event.tag not in (None, "!"):
                self.out.diagnostics.append(
                    error(
                        "E004",
                        path,
                        f"YAML tag '{_short_tag(event.tag)}' is not allowed on a key",
                        "remove the tag",
                    ).located(*pos)
                )
            return str(event.value)
        # A mapping or list used as a key, or an alias/anchor on a key.
        self.node(event, (*path, "<invalid key>"), depth + 1)
        self.out.diagnostics.append(
            error(
                "E011",
                path,
                "a key must be a plain name, not a list, mapping or alias",
                "use a plain string as the key",
            ).located(*self._pos(event))
        )
        return None


def _line_of(event: Any) -> int:
    mark = event.start_mark
    return int(mark.line) + 1 if mark is not None else 1


_CORE_TAG_PREFIX = "tag:yaml.org,2002:"


def _short_tag(tag: str | None) -> str:
    """`tag:yaml.org,2002:python/object/apply:os.system` -> `!!python/object/apply:os.system`."""
    tag = tag or "!"
    return "!!" + tag[len(_CORE_TAG_PREFIX) :] if tag.startswith(_CORE_TAG_PREFIX) else tag


def _decode(raw: bytes | str, out: Loaded) -> str | None:
    """The text of the file, or None with a diagnostic when it is too big or not UTF-8 text."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        out.diagnostics.append(
            error(
                "E005",
                (),
                f"the file is {size / 1048576:.1f} MiB; the limit is {MAX_BYTES // 1048576} MiB",
                "a gateway config this large is almost certainly generated by mistake",
            ).located(1, 1)
        )
        return None
    if isinstance(raw, str):
        return raw
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        out.diagnostics.append(
            error(
                "E007",
                (),
                "the file is UTF-16 text, not UTF-8",
                "save the file as UTF-8",
            ).located(1, 1)
        )
        return None
    if b"\x00" in raw[:8192]:
        out.diagnostics.append(
            error(
                "E007",
                (),
                "the file is binary, not YAML text",
                "point the command at gateway.yaml",
            ).located(1, 1)
        )
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        out.diagnostics.append(
            error(
                "E007",
                (),
                f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                "save the file as UTF-8",
            ).located(line, col)
        )
        return None


def load(raw: bytes | str) -> Loaded:
    """Parse one YAML document. Never raises for bad input: problems become diagnostics."""
    out = Loaded()
    text = _decode(raw, out)
    if text is None:
        return out
    out.text = text
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        out.diagnostics.append(
            error(
                "E006",
                (),
                "the file is empty",
                "start from the example gateway.yaml in the Switchyard repository",
            ).located(1, 1)
        )
        return out

    events = iter(yaml.parse(text, Loader=_LOADER))
    builder = _Builder(events, out)
    try:
        documents = 0
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    out.diagnostics.append(
                        error(
                            "E001",
                            (),
                            "the file holds more than one YAML document",
                            "remove the '---' separator and keep one document",
                        ).located(_line_of(event), 1)
                    )
                    break
                first = next(events)
                out.data = builder.node(first, (), 0)
    except yaml.MarkedYAMLError as exc:
        out.diagnostics.append(syntax_error(exc, text))
        out.data = None
    except yaml.reader.ReaderError as exc:  # control characters and the like
        out.diagnostics.append(reader_error(exc, text))
        out.data = None
    except yaml.YAMLError as exc:  # pragma: no cover - every libyaml error is one of the above
        out.diagnostics.append(error("E001", (), f"YAML error: {exc}").located(1, 1))
        out.data = None
    except _TooBig as exc:
        out.diagnostics.append(
            error("E005", (), f"refused: {exc}", "simplify the document").located(1, 1)
        )
        out.data = None
    except RecursionError:
        out.diagnostics.append(
            error(
                "E005", (), "refused: the document nests too deeply", "simplify the document"
            ).located(1, 1)
        )
        out.data = None
    # Anchor/alias/tag diagnostics found while building are positioned by path.
    out.diagnostics = [d if d.line else d.located(*out.position(d.path)) for d in out.diagnostics]
    if not isinstance(out.data, dict) and not any(
        d.code in ("E001", "E005") for d in out.diagnostics
    ):
        out.diagnostics.append(
            error(
                "E006",
                (),
                f"the top level must be a mapping of sections, not {_kind_of(out.data)}",
                "start with `version: 1` and `project: <name>`",
            ).located(*out.values.get((), (1, 1)))
        )
        out.data = None
    return out


_COMMENT = re.compile(r"#[^\r\n]*")
# Past a syntax error the scanner stops: there a `#` at a line's start or after a blank is
# taken for a comment, as YAML would.
_LOOSE_COMMENT = re.compile(r"(?:^|(?<=[ \t]))#[^\r\n]*", re.M)


def comments(text: str) -> Iterator[tuple[int, int, str]]:
    """Every comment of `text` as (line, column, text from the `#`), both 1-based.

    The comments are what lies between the scanner's tokens, so a `#` inside a quoted or
    block scalar, or one that is part of a plain value (`a#b`), is not taken for one.
    """
    starts = [0]
    starts += [m.end() for m in re.finditer(r"\r\n|\n|\r", text)]

    def where(index: int) -> tuple[int, int]:
        line = bisect.bisect_right(starts, index)
        return line, index - starts[line - 1] + 1

    end = 0
    try:
        for token in yaml.scan(text, Loader=_LOADER):
            for m in _COMMENT.finditer(text, end, token.start_mark.index):
                yield (*where(m.start()), m.group())
            end = max(end, token.end_mark.index)
    except yaml.YAMLError:
        for m in _LOOSE_COMMENT.finditer(text, end):
            yield (*where(m.start()), m.group())


def _kind_of(value: Any) -> str:
    if value is None:
        return "an empty document"
    if isinstance(value, list):
        return "a list"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"a single value ('{shown}')"
