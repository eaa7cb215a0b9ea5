"""Deploy unit tests, without a Docker engine or an sshd: rollback: which release it brings back.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import pytest

from deployer.bundle import DeployError
from deployer.history import HistoryEntry
from deployer.rollback import live_sequence, rollback_target
from deployer.state import (
    HostState,
    Paths,
)
from tests import deploy_units_support as support

# pytest finds fixtures among a module's names: the shared ones this file uses.
no_secret_sources = support.no_secret_sources


def deploy_entry(release: str, result: str = "ok", previous: str | None = None) -> HistoryEntry:
    doc = {"action": "deploy", "release": release, "previous": previous, "result": result}
    return HistoryEntry.from_json(doc)


def rollback_entry(to: str, live: str, result: str = "ok") -> HistoryEntry:
    doc = {"action": "rollback", "release": to, "previous": live, "result": result}
    return HistoryEntry.from_json(doc)


R1, R2, R3, R4 = (f"2026010{i}T000000Z-0000000{i}" for i in range(1, 5))


def on_host(*releases: str, failed: tuple[str, ...] = ()) -> HostState:
    return HostState(
        Paths("/srv/switchyard", "p-staging"),
        exists=True,
        releases=sorted(releases),
        failed=set(failed),
    )


def test_rollback_goes_to_the_release_live_before_the_live_one() -> None:
    history = [deploy_entry(R1), deploy_entry(R2, previous=R1), deploy_entry(R3, previous=R2)]
    assert live_sequence(history) == ([R1, R2, R3], set())
    assert rollback_target(history, on_host(R1, R2, R3), R3) == R2


def test_rollback_again_goes_further_back_never_to_the_release_rolled_back_from() -> None:
    """Deploy 1, 2, 3; roll back: 2; roll back again: 1, not 3."""
    host = on_host(R1, R2, R3)
    history = [deploy_entry(R1), deploy_entry(R2), deploy_entry(R3), rollback_entry(R2, R3)]
    assert live_sequence(history) == ([R1, R2], {R3})
    assert rollback_target(history, host, R2) == R1
    history.append(rollback_entry(R1, R2))
    assert live_sequence(history) == ([R1], {R2, R3})
    with pytest.raises(DeployError) as err:
        rollback_target(history, host, R1)
    assert str(err.value) == f"no release was live before {R1}; there is nothing to roll back to"


def test_a_deploy_after_a_rollback_rolls_back_past_the_rolled_back_release() -> None:
    history = [
        deploy_entry(R1),
        deploy_entry(R2),
        deploy_entry(R3),
        rollback_entry(R2, R3),
        deploy_entry(R4),
    ]
    assert live_sequence(history)[0] == [R1, R2, R4]
    assert rollback_target(history, on_host(R1, R2, R3, R4), R4) == R2


def test_releases_that_never_went_live_are_skipped() -> None:
    history = [
        deploy_entry(R1),
        deploy_entry(R2, "rolled-back"),
        deploy_entry(R3, "failed"),
        deploy_entry(R1, "unchanged"),
        HistoryEntry.from_json({"action": "deploy", "release": None, "result": "interrupted"}),
        deploy_entry(R4),
        rollback_entry(R3, R4, "failed"),
    ]  # a rollback that failed changed nothing
    assert live_sequence(history) == ([R1, R4], set())
    assert rollback_target(history, on_host(R1, R2, R3, R4), R4) == R1


def test_without_the_live_release_in_the_history_rollback_goes_by_the_release_names() -> None:
    """A history from before this Switchyard, or lost."""
    assert rollback_target([], on_host(R1, R2, R3, R4, failed=(R3,)), R4) == R2
    history = [
        deploy_entry(R1),
        deploy_entry(R2),
        rollback_entry(R1, R2),
    ]  # R2 was rolled back; R4 is not in the history
    assert rollback_target(history, on_host(R1, R2, R3, R4), R4) == R3
    assert rollback_target(history, on_host(R1, R2, R4), R4) == R1


def test_rollback_refuses_what_it_cannot_bring_back() -> None:
    history = [deploy_entry(R1), deploy_entry(R2), deploy_entry(R3)]
    with pytest.raises(DeployError) as err:
        rollback_target(history, on_host(R1, R3), R3)
    assert str(err.value) == (
        f"release {R2}, live before {R3}, is no longer on the host (pruned: keep_releases); "
        "deploy the config you want instead"
    )
    with pytest.raises(DeployError) as err:
        rollback_target(history, on_host(R1, R2, R3, failed=(R2,)), R3)
    assert (
        str(err.value)
        == f"release {R2}, live before {R3}, is marked FAILED on the host; deploy the config you "
        "want instead"
    )
    with pytest.raises(
        DeployError,
        match=r"^nothing serves here, so there is nothing to roll back from; deploy instead$",
    ):
        rollback_target(history, on_host(R1, R2, R3), None)
    with pytest.raises(DeployError, match=f"^no release was live before {R1}"):
        rollback_target([], on_host(R1), R1)
