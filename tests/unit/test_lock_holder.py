"""The deploy lock's holder file (`lock.json`), read and written through `LockHolder`."""

from __future__ import annotations

import json

import pytest

from deployer.lock_holder import LockHolder, describe_holder

HOLDER = LockHolder(
    who="ana@laptop",
    action="rollback",
    since="2026-12-07T10:00:00Z",
    pid=4242,
    release="20261207-100000-abc1234",
    git_commit="abc1234",
    config_hash="sha256:00",
)


def test_written_and_read_back_unchanged() -> None:
    text = HOLDER.to_json()
    assert list(json.loads(text)) == [
        "who",
        "action",
        "since",
        "pid",
        "release",
        "git_commit",
        "config_hash",
    ]
    assert LockHolder.parse(text) == HOLDER
    assert LockHolder.parse(text.encode()) == HOLDER


def test_described_for_messages() -> None:
    assert describe_holder(HOLDER.to_json()) == (
        "ana@laptop (rollback since 2026-12-07T10:00:00Z, pid 4242)"
    )


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "{",
        "[]",
        "{}",
        '{"who": "ana", "since": "t"}',
        '{"who": 1, "since": "t", "pid": 2}',
    ],
)
def test_a_holder_that_does_not_say_who_is_another_deploy(raw: str | None) -> None:
    assert describe_holder(raw) == "another deploy"


def test_an_older_or_odd_file_reads_field_by_field() -> None:
    # An older Switchyard wrote no release/git_commit/config_hash; a wrong type reads as absent.
    holder = LockHolder.parse('{"who": "bo", "since": "t", "pid": true, "extra": 1}')
    assert holder == LockHolder(who="bo", action="deploy", since="t", pid=None)


def test_a_file_cut_short_is_still_a_deploy_to_record() -> None:
    # The next deploy records it in the history as interrupted, by an unknown operator.
    assert LockHolder.parse('{"who": "ana", "act') == LockHolder(
        who="unknown", action="deploy", since="?", pid=None
    )
    assert LockHolder.parse("[1, 2]") is None
