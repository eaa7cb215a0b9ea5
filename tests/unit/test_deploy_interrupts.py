"""Ctrl-C and SIGTERM during a deploy land only at safe points (deployer/interrupts.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from deployer import interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_deferred_waits_for_the_next_check(sig: int) -> None:
    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # the handler has run: nothing was raised here
        reached.append("after the signal")
        interrupts.check()
        reached.append("after check")  # never
    assert reached == ["after the signal"]
    # The handlers the caller had are back.
    assert (
        signal.getsignal(signal.SIGINT) is before_int
        and signal.getsignal(signal.SIGTERM) is before_term
    )


def test_check_is_a_no_op_without_a_signal() -> None:
    with interrupts.deferred():
        interrupts.check()
        interrupts.check()


def test_a_signal_after_the_last_check_is_not_lost() -> None:
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    # and it was consumed: the next block starts clean.
    with interrupts.deferred():
        interrupts.check()
