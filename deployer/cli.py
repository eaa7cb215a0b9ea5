"""`python deploy.py ENV`: argument parsing only; the work is in `deployer.flow`.

Exit codes: 0 ok, 1 the deploy failed or was refused (the message says why), 2 usage.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from deployer.bundle import UsageError
from deployer.flow import DEFAULT_LOCK_WAIT_S, Options, deploy, history, rollback, status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python deploy.py",
        description="Validate, compile and ship one environment of gateway.yaml to its host; "
        "restart only what changed, health-gated, with rollback.",
    )
    p.add_argument(
        "env", help="the environment to deploy (a key of `environments` in gateway.yaml)"
    )
    p.add_argument(
        "--config", default="gateway.yaml", help="path of gateway.yaml (default: ./gateway.yaml)"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--plan",
        action="store_true",
        help="show what would run and which services would change; change nothing",
    )
    what.add_argument(
        "--status", action="store_true", help="what runs on the host, which release, health"
    )
    what.add_argument(
        "--rollback", action="store_true", help="bring back the release before the live one"
    )
    what.add_argument("--history", action="store_true", help="the environment's deploy history")
    p.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation on a terminal"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON document on stdout (progress stays on stderr)"
    )
    p.add_argument(
        "--identity",
        "-i",
        metavar="FILE",
        help="SSH private key (default: $SWITCHYARD_SSH_IDENTITY, ~/.ssh/config, the agent)",
    )
    p.add_argument(
        "--known-hosts",
        metavar="FILE",
        help="SSH known hosts file (default: $SWITCHYARD_SSH_KNOWN_HOSTS, else ~/.ssh/known_hosts)",
    )
    p.add_argument(
        "--strict-host-keys",
        action="store_true",
        help="refuse a host whose key is not in the known hosts file yet (default: trust it on "
        "first use "
        "and remember it; a CHANGED key is always refused); also "
        "$SWITCHYARD_SSH_STRICT_HOST_KEYS=1",
    )
    lock = p.add_mutually_exclusive_group()
    lock.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once when another deploy of this environment holds the lock",
    )
    lock.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_LOCK_WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for another deploy's lock (default {DEFAULT_LOCK_WAIT_S:.0f})",
    )
    p.add_argument(
        "--last",
        type=int,
        default=20,
        metavar="N",
        help="with --history: how many entries (default 20)",
    )
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = Options(
        env=args.env,
        config=args.config,
        plan=args.plan,
        yes=args.yes,
        json=args.json,
        identity=args.identity,
        known_hosts=args.known_hosts,
        strict_host_keys=args.strict_host_keys,
        lock_wait_s=0.0 if args.no_wait else max(0.0, args.lock_timeout),
        last=max(1, args.last),
    )
    action = (
        status
        if args.status
        else rollback
        if args.rollback
        else history
        if args.history
        else deploy
    )
    # SIGTERM (a CI job cancelled, a terminal closed) is handled like Ctrl-C: the deploy puts
    # the host back in order and records itself as interrupted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return action(opts)
    except UsageError as exc:
        print(f"python deploy.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\n{args.env}: interrupted; the lock was released. Run the deploy again to converge.",
            file=sys.stderr,
        )
        return 130
