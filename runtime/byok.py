"""The `byok` command: set, list, delete and rotate orgs' own provider credentials.

The credentials live in the encrypted store of runtime/byok_store.py; the gateway reads them
through runtime/byok_cache.py, which imports nothing of this module.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from runtime import listings
from runtime.admin import add_env_args, fail
from runtime.byok_store import BYOK_DB, ByokError, ByokRow, ByokStore, check_names, check_secret
from runtime.config import ConfigError, OrgConfig, RuntimeConfig, load_config
from runtime.paths import data_dir

_HELP = """\
An org's own provider credentials (BYOK), encrypted at rest with a key derived from the org's
encryption secret (runtime.json `orgs.<org>.byok.encryption_key` names it; its value is read
from the environment variable of that name). Values are read from stdin and never shown.

Rotation: export the new secret under the configured name and the old one under another
variable, run `byok rotate --old-secret-env THAT_VARIABLE`, then restart the gateway with the
new secret (until then it keeps serving the values it last read).
"""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `byok` on `python -m runtime`'s subparsers."""
    byok = subparsers.add_parser(
        "byok",
        help="store, list, delete and rotate orgs' own provider credentials",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_actions(byok)


def add_actions(parser: argparse.ArgumentParser) -> None:
    """The `set`, `list`, `delete` and `rotate` actions on `parser`."""
    actions = parser.add_subparsers(dest="byok_command", required=True, metavar="ACTION")

    put = actions.add_parser(
        "set",
        help="store a credential, read from stdin (piped, or typed without echo)",
        description="Store an org's own credential for a provider. The value is read from "
        'stdin, never from the command line: `printf %%s "$KEY" | ... byok set ...`, or '
        "type it at the prompt.",
    )
    _common(put, config=True)
    put.add_argument("--org", required=True, help="the org the credential belongs to")
    put.add_argument("--provider", required=True, help="a provider in the org's byok list")
    put.add_argument("--field", default="api_key", help="the credential field (default api_key)")
    # Catches a credential typed on the command line so argparse does not echo it back.
    put.add_argument("stray", nargs="*", help=argparse.SUPPRESS)
    put.set_defaults(func=cmd_set)

    listing = actions.add_parser("list", help="list stored credentials (never their values)")
    _common(listing, config=False)
    listing.add_argument("--json", action="store_true", help="JSON for machines")
    listing.set_defaults(func=cmd_list)

    delete = actions.add_parser("delete", help="delete an org's credentials for a provider")
    _common(delete, config=False)
    delete.add_argument("--org", required=True)
    delete.add_argument("--provider", required=True)
    delete.set_defaults(func=cmd_delete)

    rotate = actions.add_parser(
        "rotate",
        help="re-encrypt an org's credentials from its old secret to the current one",
        description="Re-encrypt every credential of the org from the key of the old secret "
        "(in --old-secret-env) to the key of the current one (the variable the config names). "
        "All or nothing.",
    )
    _common(rotate, config=True)
    rotate.add_argument("--org", required=True)
    rotate.add_argument(
        "--old-secret-env", required=True, metavar="VAR", help="variable holding the old secret"
    )
    rotate.set_defaults(func=cmd_rotate)


def _common(parser: argparse.ArgumentParser, *, config: bool) -> None:
    add_env_args(parser)
    if config:
        parser.add_argument(
            "--config",
            required=True,
            metavar="PATH",
            help="the compiled runtime.json (which orgs may BYOK which providers)",
        )


def _db(args: argparse.Namespace) -> Path:
    return data_dir(args.env, explicit=args.data_dir) / BYOK_DB


def _byok_org(args: argparse.Namespace) -> tuple[RuntimeConfig, OrgConfig, str]:
    """The config, the org and its current encryption secret; ByokError when refused."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise ByokError(str(exc)) from None
    if config.environment != args.env:
        raise ByokError(
            f"{args.config} is the config of environment {config.environment!r}, not "
            f"{args.env!r}; pass build/{args.env}/runtime.json"
        )
    org = config.orgs.get(args.org)
    if org is None:
        raise ByokError(
            f"org {args.org!r} is not in {args.config} (orgs: {', '.join(sorted(config.orgs))})"
        )
    if not org.byok_providers or not org.byok_encryption_key:
        raise ByokError(
            f"org {args.org!r} has no byok in {args.config}: add `byok` to the org in "
            "gateway.yaml and rebuild"
        )
    name = org.byok_encryption_key
    secret = check_secret(
        os.environ.get(name), f"the encryption secret {name} (orgs.{org.id}.byok.encryption_key)"
    )
    return config, org, secret


def cmd_set(args: argparse.Namespace) -> int:
    """`byok set`: checks the config and the secret, then reads the value from stdin."""
    if args.stray:
        return fail(
            "unexpected argument(s), not shown: the credential is read from stdin, never from "
            "the command line (it may now be in your shell history: consider replacing it)"
        )
    try:
        config, org, secret = _byok_org(args)
        provider: str = args.provider
        if provider not in org.byok_providers:
            raise ByokError(
                f"org {org.id!r} may not bring its own {provider!r} credentials in "
                f"{args.config} (its byok providers: {', '.join(sorted(org.byok_providers))})"
            )
        fields = config.providers[provider].credentials if provider in config.providers else {}
        if fields and args.field not in fields:
            raise ByokError(
                f"provider {provider!r} takes the credential field(s) "
                f"{', '.join(sorted(fields))}, not {args.field!r}"
            )
        check_names(org.id, provider, args.field)
        value = _read_value(f"{args.field} for {org.id}/{provider} (not echoed): ")
        with ByokStore(_db(args), args.env) as store:
            key = store.set(org.id, provider, args.field, value, secret)
    except ByokError as exc:
        return fail(str(exc))
    print(f"stored {args.field} for {org.id}/{provider} (sealed with key {key.fingerprint})")
    return 0


def _read_value(prompt: str) -> str:
    value = (getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.read()).strip()
    if not value:
        raise ByokError(
            'no credential on stdin: pipe it in (printf %s "$KEY" | python -m runtime byok '
            "set ...) or type it at the prompt"
        )
    if "\n" in value or "\r" in value:
        raise ByokError("stdin holds several lines; pipe in the credential alone")
    return value


def cmd_list(args: argparse.Namespace) -> int:
    """`byok list`: org, provider, field, key fingerprint, updated; never values."""
    db = _db(args)
    rows: list[ByokRow] = []
    if db.exists():
        try:
            with ByokStore(db, args.env) as store:
                rows = store.list()
        except ByokError as exc:
            return fail(str(exc))
    if args.json:
        print(json.dumps(listings.byok_rows_json(rows), indent=2))
        return 0
    if not rows:
        print(f"no BYOK credentials in environment {args.env!r} ({db})", file=sys.stderr)
        return 0
    print(listings.format_byok_rows(rows))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """`byok delete`: every field of the org's credentials for the provider."""
    db = _db(args)
    if not db.exists():
        return fail(f"no BYOK store in {db.parent}; is --data-dir right?")
    try:
        with ByokStore(db, args.env) as store:
            count = store.delete(args.org, args.provider)
    except ByokError as exc:
        return fail(str(exc))
    if count == 0:
        return fail(
            f"nothing stored for {args.org}/{args.provider} in environment {args.env!r} "
            "(see `byok list`)"
        )
    print(f"deleted {count} credential field(s) of {args.org}/{args.provider}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    """`byok rotate`: re-seal the org's credentials with the current secret, all or nothing."""
    try:
        _, org, secret = _byok_org(args)
        var: str = args.old_secret_env
        old = os.environ.get(var)
        if not old:
            raise ByokError(f"--old-secret-env {var}: the variable {var} is not set")
        db = _db(args)
        if not db.exists():
            raise ByokError(f"no BYOK store in {db.parent}; is --data-dir right?")
        with ByokStore(db, args.env) as store:
            count = store.rotate(org.id, old, secret)
            fingerprint = store.key(secret).fingerprint
    except ByokError as exc:
        return fail(str(exc))
    print(f"re-encrypted {count} credential field(s) of org {org.id} with key {fingerprint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m runtime.byok ACTION ...`, the same as `python -m runtime byok ACTION ...`."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime byok",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_actions(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
