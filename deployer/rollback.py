"""Which release a rollback brings back: the one that was live before the live one.

Read from the history, not from the release directories' names: a rollback goes back along
the releases that actually went live, and never to one that was itself rolled back (deploy
A, B, C; roll back: B; roll back again: A, not C).
"""

from __future__ import annotations

from deployer.bundle import DeployError
from deployer.history import HistoryEntry
from deployer.state import HostState


def live_sequence(history: list[HistoryEntry]) -> tuple[list[str], set[str]]:
    """(the releases that went live, oldest first, minus the rolled-back ones; those rolled
    back)."""
    stack: list[str] = []
    rolled_back: set[str] = set()
    for entry in history:
        release = entry.release
        if release is None or entry.result != "ok":
            continue
        if entry.action == "rollback":
            gone = entry.previous
            if gone is not None and gone != release:
                rolled_back.add(gone)
                stack = [r for r in stack if r != gone]
        stack = [r for r in stack if r != release] + [release]
    return stack, rolled_back


def rollback_target(history: list[HistoryEntry], state: HostState, live: str | None) -> str:
    """The release to roll back to; DeployError saying why there is none."""
    if live is None:
        raise DeployError(
            "nothing serves here, so there is nothing to roll back from; deploy instead"
        )
    stack, rolled_back = live_sequence(history)
    if live in stack:
        before = stack[: stack.index(live)]
    else:  # a history from before this Switchyard, or lost: go by the release names
        before = [
            r for r in state.releases if r < live and r not in state.failed and r not in rolled_back
        ]
    if not before:
        raise DeployError(f"no release was live before {live}; there is nothing to roll back to")
    target = before[-1]
    if target not in state.releases:
        raise DeployError(
            f"release {target}, live before {live}, is no longer on the host (pruned: "
            "keep_releases); "
            "deploy the config you want instead"
        )
    if target in state.failed:
        raise DeployError(
            f"release {target}, live before {live}, is marked FAILED on the host; deploy the "
            "config you want instead"
        )
    return target
