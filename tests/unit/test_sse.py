"""The SSE parser: every way a stream can be cut into reads gives the same events."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sse import SSEParser

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["", "message_start", "content_block_delta", "ping"]),
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            max_size=40,
        ),
    ),
    max_size=8,
)


def _wire(events: list[tuple[str, str]], newline: str, comments: bool) -> bytes:
    out = []
    for event, data in events:
        if comments:
            out.append(f": keep-alive{newline}{newline}")
        head = f"event: {event}{newline}" if event else ""
        out.append(f"{head}data: {data}{newline}{newline}")
    return "".join(out).encode()


def _parse(wire: bytes, cuts: list[int]) -> list[tuple[str, str]]:
    parser = SSEParser()
    events: list[tuple[str, str]] = []
    last = 0
    for cut in sorted(set(c % (len(wire) + 1) for c in cuts)):
        events += parser.feed(wire[last:cut])
        last = cut
    events += parser.feed(wire[last:])
    assert not parser.pending
    return events


@settings(max_examples=300, deadline=None)
@given(
    EVENTS,
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_any_split_gives_the_same_events(
    events: list[tuple[str, str]], newline: str, comments: bool, cuts: list[int]
) -> None:
    assert _parse(_wire(events, newline, comments), cuts) == events


def test_multi_line_data_and_unknown_fields() -> None:
    parser = SSEParser()
    wire = b"id: 7\nevent: x\ndata: a\ndata: b\nretry: 10\n\ndata: c\n\n"
    assert parser.feed(wire) == [("x", "a\nb"), ("", "c")]


def test_a_stream_cut_mid_event_is_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: {"b"') == [("", '{"a": 1}')]
    assert parser.pending
    assert parser.feed(b": 2}\n\n") == [("", '{"b": 2}')]
    assert not parser.pending
