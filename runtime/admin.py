"""The operator's CLI: `keys create|list|revoke` and `requests` (the request log).

`add_commands(subparsers)` registers both on `python -m runtime`'s parser; every command's
`func(args)` returns the exit code: 0 ok, 1 refused or invalid input, 2 usage (argparse).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sqlite3
import sys
import time
from pathlib import Path

from runtime import listings, request_report
from runtime.keys import ENV_RE, KeyInfo, KeyStore, KeyStoreError
from runtime.paths import KEYS_DB, REQUESTS_DB, data_dir
from runtime.records import read_records

ORG_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_KEYS_HELP = """\
Gateway keys of one environment. A key is shown once, at creation, and stored only as a hash;
its public key id names it in `keys list`, request records and logs.

Rotation: create a second key for the same org and name, move clients to it (both keys are
active meanwhile), then revoke the old one with `keys revoke --env ENV OLD_KEY_ID`.
"""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `keys` and `requests` on `python -m runtime`'s subparsers."""
    keys = subparsers.add_parser(
        "keys",
        help="create, list and revoke gateway keys",
        description=_KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="issue a key (printed once)",
        description="Issue a key for an org; the key is printed once on stdout. For rotation, "
        "create a second key with the same org and name, then revoke the old one.",
    )
    add_env_args(create)
    create.add_argument("--org", required=True, type=_org, help="the org the key belongs to")
    create.add_argument("--name", required=True, type=_name, help="what the key is for (e.g. ci)")
    create.add_argument(
        "--expires", metavar="WHEN", help="30d, 12h, or a UTC date 2027-01-31 (default: never)"
    )
    create.set_defaults(func=cmd_keys_create)

    listing = actions.add_parser("list", help="list keys and their status")
    add_env_args(listing)
    listing.add_argument("--json", action="store_true", help="JSON for machines")
    listing.set_defaults(func=cmd_keys_list)

    revoke = actions.add_parser(
        "revoke", help="revoke a key by its key id (takes effect within about a second)"
    )
    add_env_args(revoke)
    revoke.add_argument("key_id", metavar="KEYID", help="the key id shown by `keys list`")
    revoke.set_defaults(func=cmd_keys_revoke)

    requests = subparsers.add_parser(
        "requests",
        help="show the request log",
        description="The last request records, or (--by) records grouped with error rate, "
        "latency and time-to-first-byte percentiles, tokens and cost.",
    )
    add_env_args(requests)
    requests.add_argument(
        "--last", type=_positive, metavar="N", help="the last N records (default 20)"
    )
    requests.add_argument(
        "--since", type=_duration, metavar="AGE", help="records of the last 1h, 30m, 2d..."
    )
    requests.add_argument(
        "--by", choices=sorted(request_report.GROUP_BY), help="group and summarize"
    )
    requests.add_argument("--json", action="store_true", help="JSON for machines")
    requests.set_defaults(func=cmd_requests)


def add_env_args(parser: argparse.ArgumentParser) -> None:
    """`--env` and `--data-dir`, as every state-reading subcommand takes them."""
    parser.add_argument("--env", required=True, type=_env, help="the environment")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the environment's data directory (default: $SWITCHYARD_DATA_DIR or ./.switchyard/ENV)",
    )


def _env(text: str) -> str:
    if not ENV_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an environment name ([a-z][a-z0-9-]*)")
    return text


def _org(text: str) -> str:
    if not ORG_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an org id ([a-z][a-z0-9_-]*)")
    return text


def _name(text: str) -> str:
    if not text.strip() or len(text) > 100 or not text.isprintable():
        raise argparse.ArgumentTypeError("a key name is 1 to 100 printable characters")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `30m`, `1h`, `2d` or `1w`; ValueError otherwise."""
    match = _DURATION_RE.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h, 2d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_expiry(text: str, now: float) -> float:
    """Expiry time of `--expires`: a duration from `now` (30d) or a UTC date/time (2027-01-31,
    meaning its first second); ValueError when unreadable or not in the future."""
    try:
        expires = now + parse_duration(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"--expires {text!r}: expected a duration (30d, 12h) or a date (2027-01-31)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        expires = when.timestamp()
    if expires <= now:
        raise ValueError(f"--expires {text!r} is not in the future")
    return expires


def _dir(args: argparse.Namespace) -> Path:
    return data_dir(args.env, explicit=args.data_dir)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _store(args: argparse.Namespace) -> KeyStore:
    return KeyStore(_dir(args) / KEYS_DB, args.env)


def cmd_keys_create(args: argparse.Namespace) -> int:
    """`keys create`: the key alone on stdout, the details on stderr."""
    now = time.time()
    try:
        expires = parse_expiry(args.expires, now) if args.expires else None
        with _store(args) as store:
            info, plaintext = store.create(args.org, args.name, expires)
    except (ValueError, KeyStoreError) as exc:
        return fail(str(exc))
    print(plaintext, flush=True)
    print(
        f"created key {info.id} for org {info.org!r} (name {info.name!r}) in environment "
        f"{info.environment!r}, "
        f"expires {listings.format_time(expires) if expires else 'never'}.\n"
        "This is the only time the key is shown: store it now.",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """`keys list`: id, org, name, created, expires, status."""
    keys_db = _dir(args) / KEYS_DB
    infos: list[KeyInfo] = []
    if keys_db.exists():
        try:
            with KeyStore(keys_db, args.env) as store:
                infos = store.list()
        except KeyStoreError as exc:
            return fail(str(exc))
    now = time.time()
    if args.json:
        print(json.dumps(listings.keys_json(infos, now), indent=2))
        return 0
    if not infos:
        print(f"no keys in environment {args.env!r} ({keys_db})", file=sys.stderr)
        return 0
    print(listings.format_keys(infos, now))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """`keys revoke KEYID`; revoking a revoked key says so and succeeds."""
    key_id: str = args.key_id
    if key_id.startswith("sy_"):  # never echo what may be a full key
        return fail("pass the key id (see `keys list`), not the key itself")
    keys_db = _dir(args) / KEYS_DB
    if not keys_db.exists():
        return fail(f"no key store in {keys_db.parent}; is --data-dir right?")
    try:
        with KeyStore(keys_db, args.env) as store:
            before = store.get(key_id)
            info = store.revoke(key_id)
    except KeyStoreError as exc:
        return fail(str(exc))
    if before is not None and before.revoked_at is not None:
        print(f"key {key_id} was already revoked at {listings.format_time(info.revoked_at)}")
    else:
        print(f"revoked key {key_id} (org {info.org!r}, name {info.name!r})")
    return 0


def cmd_requests(args: argparse.Namespace) -> int:
    """`requests`: the last records, or a grouped summary with --by."""
    directory = _dir(args)
    db = directory / REQUESTS_DB
    if not db.exists():
        return fail(f"no requests recorded yet in {directory}; is --data-dir right?")
    since = time.time() - args.since if args.since else None
    last = args.last if args.last or args.by else 20
    try:
        records = read_records(db, since=since, last=last)
    except sqlite3.Error as exc:
        return fail(f"cannot read the request log {db}: {exc}")
    if args.by:
        groups = request_report.summarize(records, args.by)
        if args.json:
            print(json.dumps(listings.groups_json(groups, args.by), indent=2))
        else:
            print(listings.format_groups(groups, args.by))
    elif args.json:
        print(json.dumps(listings.records_json(records), indent=2))
    else:
        print(listings.format_records(records))
    if not records and not args.json:
        print("no matching requests", file=sys.stderr)
    return 0
