"""`python -m runtime`: the runtime's whole command line.

Every parser, command function and print of `serve`, `keys create|list|revoke`, `requests`
and `byok set|list|delete|rotate` lives here. What the commands need beside arguments and
output lives in modules that return data: the key and BYOK stores, SQLite or PostgreSQL as the
config says (runtime/stores.py opens them), the request log (runtime/records.py,
runtime/request_report.py), and the text and JSON forms of what is listed
(runtime/listings.py). Nothing on the request path
imports this module (tests/unit/test_request_path_imports.py).

Every command's `func(args)` returns the exit code: 0 ok, 1 refused (bad config, invalid
input; for `serve` also a port in use or a data directory it cannot write), 2 usage error
(argparse). `serve` ends with uvicorn's 3 only if the port is taken between its check and
uvicorn's bind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import importlib.util
import json
import logging
import math
import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from runtime import listings, paths, request_report
from runtime.byok_store import BYOK_DB, ByokError, ByokRow, check_names, check_secret
from runtime.config import (
    SHUTDOWN_FLUSH_MARGIN_S,
    ConfigError,
    OrgConfig,
    RuntimeConfig,
    ShutdownTimeline,
    load_config,
)
from runtime.keys import ENV_RE, KeyInfo, KeyStoreError
from runtime.paths import KEYS_DB, REQUESTS_DB, data_dir
from runtime.records import read_records
from runtime.stores import describe_store, open_byok_store, open_key_store, uses_postgres

if TYPE_CHECKING:
    from runtime.byok_pg import PgByokStore
    from runtime.byok_store import ByokStore
    from runtime.keys import KeyStore
    from runtime.keys_pg import PgKeyStore

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

ORG_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def main(argv: list[str] | None = None) -> int:
    """Run `python -m runtime` with `argv` (default: sys.argv[1:]); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if "env" in vars(args):
        try:
            resolve_env_args(args)
        except ConfigError as exc:
            return fail(str(exc))
        except ValueError as exc:
            parser.error(str(exc))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The `python -m runtime` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime", description="Switchyard gateway runtime."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_serve(sub)
    _add_keys(sub)
    _add_requests(sub)
    _add_byok(sub)
    return parser


def fail(message: str) -> int:
    """Print `error: message` on stderr; exit code 1."""
    print(f"error: {message}", file=sys.stderr)
    return 1


# --- serve ---------------------------------------------------------------------------------


def _add_serve(sub: Subparsers) -> None:
    serve = sub.add_parser(
        "serve", help="serve the OpenAI-compatible gateway from a compiled runtime.json"
    )
    serve.add_argument(
        "--config", required=True, help="compiled runtime config, e.g. build/dev/runtime.json"
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; the container uses 0.0.0.0)",
    )
    serve.add_argument(
        "--port", type=int, default=None, help="port (default: server.port of the config)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: server.workers of the config)",
    )
    serve.add_argument(
        "--data-dir",
        default=None,
        help="key store and request log directory "
        "(default: $SWITCHYARD_DATA_DIR, else server.data_dir)",
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=_nonnegative,
        default=None,
        metavar="SECONDS",
        help="after SIGTERM, how long requests in flight may still run before they are ended "
        "(default: the config's request_timeout_s + 2, so none is cut)",
    )
    serve.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """`serve`: check the config and the data directory, then run uvicorn until stopped."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc))
    port = args.port if args.port is not None else config.port
    problem = port_problem(args.host, port)
    if problem is not None:
        return fail(problem)
    if config.logging.sink == "postgres":
        problem = _records_url_problem(config)
        if problem is not None:
            return fail(f"{args.config}: {problem}")
        problem = _check_records_database(os.environ[config.logging.url_secret or ""])
        if problem is not None:
            return fail(problem)
    data_dir = paths.data_dir(config.environment, args.data_dir, config.data_dir).resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = data_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return fail(
            f"data directory {data_dir} is not writable ({exc.strerror}); pass --data-dir or "
            "set SWITCHYARD_DATA_DIR"
        )
    from runtime.app import unsendable_credentials

    unsendable = unsendable_credentials(config, os.environ)
    if unsendable:
        return fail("\n".join(unsendable))
    from runtime.stores import check_stores

    store_problem = check_stores(config, os.environ)
    if store_problem:
        return fail(store_problem)
    workers = args.workers if args.workers is not None else config.workers
    if workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _banner(config, args.host, port, workers, data_dir)

    import uvicorn

    from runtime.app import SHUTDOWN_TIMEOUT_ENV

    timeline = ShutdownTimeline.of(config.request_timeout_s, args.shutdown_timeout)
    options = uvicorn_options(args.host, port, args.log_level, timeline)
    # uvicorn re-raises the signal that stopped it after its graceful shutdown; SIGTERM's
    # default action would then end a clean stop with status -15 instead of 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if workers == 1:
        from runtime.app import create_app

        app = create_app(
            config, data_dir, shutdown_timeout_s=args.shutdown_timeout, hook_signals=True
        )
        uvicorn.run(app, **options)
    else:
        os.environ["SWITCHYARD_CONFIG"] = str(Path(args.config).resolve())
        os.environ["SWITCHYARD_DATA_DIR"] = str(data_dir)
        os.environ[_SUPERVISOR_ENV] = str(os.getpid())
        if args.shutdown_timeout is not None:
            os.environ[SHUTDOWN_TIMEOUT_ENV] = repr(args.shutdown_timeout)
        try:
            uvicorn.run("runtime.cli:worker_app", factory=True, workers=workers, **options)
        finally:
            _stop_workers(timeline.server_s + SHUTDOWN_FLUSH_MARGIN_S)
    return 0


def port_problem(host: str, port: int) -> str | None:
    """Why `serve` cannot listen on host:port (in use, not permitted), or None.

    A trial bind with SO_REUSEADDR, as uvicorn binds, so a port left in TIME_WAIT by the
    last run is free here as it is there; the socket is closed before uvicorn binds."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return f"cannot listen on {host}: {getattr(exc, 'strerror', None) or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use: {reason}; pick another with --port"
            return f"cannot listen on port {port} on {host}: {reason}"
    return None


def uvicorn_options(
    host: str, port: int, log_level: str, timeline: ShutdownTimeline
) -> dict[str, Any]:
    """uvicorn's settings for `serve`. Its graceful timeout comes from the shutdown timeline
    (docs/runtime.md "Shutdown"): the app ends the requests still in flight at `drain_s`, and
    uvicorn's own timeout is only a backstop after it — both before compose's SIGKILL."""
    return {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": math.ceil(timeline.server_s),
        "timeout_keep_alive": 75,
        "backlog": 2048,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "server_header": False,
        "proxy_headers": False,  # the gateway never uses forwarded client addresses
    }


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


_SUPERVISOR_ENV = "SWITCHYARD_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_app() -> object:
    """uvicorn's factory in each `--workers N` worker: the gateway app, in a process that is
    sent SIGTERM when its supervisor (the `serve` process) dies, however it died — a worker
    never outlives it, listening on the port."""
    _die_with_supervisor()
    from runtime.app import app_from_env

    return app_from_env(hook_signals=True)


def _die_with_supervisor() -> None:
    """Ask Linux for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); if it died
    already (the worker was re-parented before asking), stop now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    supervisor = os.environ.get(_SUPERVISOR_ENV)
    if supervisor and str(os.getppid()) != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def _stop_workers(grace: float) -> None:
    """After uvicorn's supervisor returned (or raised): no worker may be left running.
    SIGTERM each one still alive, wait up to `grace` seconds (a worker's whole graceful
    shutdown: its uvicorn timeout plus writing its last records), then SIGKILL."""
    import multiprocessing

    workers = multiprocessing.active_children()
    for w in workers:
        w.terminate()
    deadline = time.monotonic() + grace
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
        if w.is_alive():
            w.kill()
            w.join(5)


def _banner(config: RuntimeConfig, host: str, port: int, workers: int, data_dir: Path) -> None:
    from runtime.app import _credentials

    creds, problems = _credentials(config, os.environ)
    shown = ", ".join(
        f"{pid}" + ("" if creds[pid] is not None else " (no credentials: skipped)")
        for pid in config.providers
    )
    print(
        f"switchyard gateway: environment {config.environment}, config {config.config_hash[:19]}",
        file=sys.stderr,
    )
    print(
        f"  listening on http://{host}:{port} with {workers} worker(s); data in {data_dir}",
        file=sys.stderr,
    )
    print(f"  providers: {shown or '(none)'}", file=sys.stderr)
    for p in problems:
        print(f"  not ready: {p}", file=sys.stderr)


# --- arguments shared by the state-reading commands ----------------------------------------


def add_env_args(parser: argparse.ArgumentParser) -> None:
    """`--env`, `--data-dir` and `--config`, as every state-reading subcommand takes them.

    `--config` (default $SWITCHYARD_CONFIG) is the environment's compiled runtime.json: the
    command then uses the stores it names (PostgreSQL when `state.keys.store` says so) and
    `--env` may be left out. Without it, the SQLite files of the data dir, as always.
    `main` resolves both into `args.env` and `args.runtime_config` (resolve_env_args)."""
    parser.add_argument("--env", type=_env, help="the environment (default: the one of --config)")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the environment's data directory "
        "(default: $SWITCHYARD_DATA_DIR, else server.data_dir of --config, else "
        "./.switchyard/ENV)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("SWITCHYARD_CONFIG") or None,
        help="the environment's compiled runtime.json, e.g. build/prod/runtime.json, whose "
        "stores the command uses (default: $SWITCHYARD_CONFIG; without it, the SQLite files "
        "of the data dir)",
    )


def resolve_env_args(args: argparse.Namespace) -> None:
    """Set `args.runtime_config` (the loaded --config, or None) and `args.env` (--env, else
    the config's environment). ConfigError when the config does not load or is another
    environment's; ValueError (a usage error) when neither --env nor --config is given."""
    config = load_config(args.config) if args.config else None
    args.runtime_config = config
    if config is None:
        if args.env is None:
            raise ValueError(
                "the following arguments are required: --env (or --config runtime.json, or "
                "$SWITCHYARD_CONFIG)"
            )
        return
    if args.env is None:
        args.env = config.environment
    elif args.env != config.environment:
        raise ConfigError(
            f"{args.config} is the config of environment {config.environment!r}, not "
            f"{args.env!r}; pass build/{args.env}/runtime.json"
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


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a number of seconds, not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"should be 0 or more seconds, not {text!r}")
    return value


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
    config: RuntimeConfig | None = getattr(args, "runtime_config", None)
    return data_dir(
        args.env, explicit=args.data_dir, configured=config.data_dir if config else None
    )


# --- keys ----------------------------------------------------------------------------------

_KEYS_HELP = """\
Gateway keys of one environment. A key is shown once, at creation, and stored only as a hash;
its public key id names it in `keys list`, request records and logs.

Rotation: create a second key for the same org and name, move clients to it (both keys are
active meanwhile), then revoke the old one with `keys revoke --env ENV OLD_KEY_ID`.
"""


def _add_keys(sub: Subparsers) -> None:
    keys = sub.add_parser(
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


def _key_store(args: argparse.Namespace) -> KeyStore | PgKeyStore:
    """The configured key store (KeyStoreError when it cannot be opened)."""
    return open_key_store(args.runtime_config, args.env, _dir(args), os.environ)


def _sqlite_missing(args: argparse.Namespace, db: str) -> Path | None:
    """The SQLite file of `db` when it is the store and does not exist yet, else None."""
    path = _dir(args) / db
    return None if uses_postgres(args.runtime_config) or path.exists() else path


def cmd_keys_create(args: argparse.Namespace) -> int:
    """`keys create`: the key alone on stdout, the details on stderr."""
    now = time.time()
    try:
        expires = parse_expiry(args.expires, now) if args.expires else None
        with _key_store(args) as store:
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
    infos: list[KeyInfo] = []
    if _sqlite_missing(args, KEYS_DB) is None:
        try:
            with _key_store(args) as store:
                infos = store.list()
        except KeyStoreError as exc:
            return fail(str(exc))
    now = time.time()
    if args.json:
        print(json.dumps(listings.keys_json(infos, now), indent=2))
        return 0
    if not infos:
        where = describe_store(args.runtime_config, _dir(args), KEYS_DB)
        print(f"no keys in environment {args.env!r} ({where})", file=sys.stderr)
        return 0
    print(listings.format_keys(infos, now))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """`keys revoke KEYID`; revoking a revoked key says so and succeeds."""
    key_id: str = args.key_id
    if key_id.startswith("sy_"):  # never echo what may be a full key
        return fail("pass the key id (see `keys list`), not the key itself")
    missing = _sqlite_missing(args, KEYS_DB)
    if missing is not None:
        return fail(f"no key store in {missing.parent}; is --data-dir (or --config) right?")
    try:
        with _key_store(args) as store:
            before = store.get(key_id)
            info = store.revoke(key_id)
    except KeyStoreError as exc:
        return fail(str(exc))
    if before is not None and before.revoked_at is not None:
        print(f"key {key_id} was already revoked at {listings.format_time(info.revoked_at)}")
    else:
        print(f"revoked key {key_id} (org {info.org!r}, name {info.name!r})")
    return 0


# --- requests ------------------------------------------------------------------------------


def _add_requests(sub: Subparsers) -> None:
    requests = sub.add_parser(
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


def _records_url_problem(config: RuntimeConfig) -> str | None:
    """Why the postgres records sink's URL cannot be read from the environment, or None."""
    name = config.logging.url_secret
    if not name:
        return "logging.sink is postgres but logging.url_secret names no secret"
    if not os.environ.get(name):
        return (
            f"logging.sink is postgres: set the environment variable {name} to the "
            "PostgreSQL URL of the request records (logging.url_secret names it)"
        )
    return None


def _check_records_database(url: str) -> str | None:
    """Migrate the records schema before serving; why it cannot be used, or None. An
    unreachable database is only a warning: records must not stop serving (they wait in
    memory until it is reachable)."""
    from runtime.postgres import PostgresError, connect
    from runtime.records_pg import ensure_schema

    try:
        conn = connect(url, timeout_s=3.0)
    except PostgresError as exc:
        print(
            f"warning: request records: {exc}; serving anyway, records are held in memory "
            "(logging.buffer_max_records) until it is reachable",
            file=sys.stderr,
        )
        return None
    try:
        ensure_schema(conn)
    except PostgresError as exc:
        return f"request records: {exc}"
    finally:
        conn.close()
    return None


def cmd_requests(args: argparse.Namespace) -> int:
    """`requests`: the last records, or a grouped summary with --by (from the SQLite log in
    the data dir, or from PostgreSQL when `--config` says `logging.sink: postgres`)."""
    since = time.time() - args.since if args.since else None
    last = args.last if args.last or args.by else 20
    config_path = getattr(args, "config", None)
    config = None
    if config_path:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            return fail(str(exc))
    if config is not None and config.logging.sink == "postgres":
        if config.environment != args.env:
            return fail(
                f"{config_path} is the config of environment {config.environment!r}, "
                f"not {args.env!r}; pass that environment's runtime.json"
            )
        problem = _records_url_problem(config)
        if problem is not None:
            return fail(f"{config_path}: {problem}")
        from runtime.postgres import PostgresError
        from runtime.records_pg import read_records as read_records_pg

        try:
            records = read_records_pg(
                os.environ[config.logging.url_secret or ""], args.env, since=since, last=last
            )
        except PostgresError as exc:
            return fail(f"cannot read the request records in PostgreSQL: {exc}")
    else:
        directory = _dir(args)
        db = directory / REQUESTS_DB
        if not db.exists():
            return fail(f"no requests recorded yet in {directory}; is --data-dir right?")
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


# --- byok ----------------------------------------------------------------------------------

_BYOK_HELP = """\
An org's own provider credentials (BYOK), encrypted at rest with a key derived from the org's
encryption secret (runtime.json `orgs.<org>.byok.encryption_key` names it; its value is read
from the environment variable of that name). Values are read from stdin and never shown. They
are kept where --config's `state.keys` says: the data dir's byok.db, or PostgreSQL shared by
every host.

Rotation: export the new secret under the configured name and the old one under another
variable, run `byok rotate --old-secret-env THAT_VARIABLE`, then restart the gateway with the
new secret (until then it keeps serving the values it last read).
"""


def _add_byok(sub: Subparsers) -> None:
    byok = sub.add_parser(
        "byok",
        help="store, list, delete and rotate orgs' own provider credentials",
        description=_BYOK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = byok.add_subparsers(dest="byok_command", required=True, metavar="ACTION")

    put = actions.add_parser(
        "set",
        help="store a credential, read from stdin (piped, or typed without echo)",
        description="Store an org's own credential for a provider. The value is read from "
        'stdin, never from the command line: `printf %%s "$KEY" | ... byok set ...`, or '
        "type it at the prompt.",
    )
    _byok_common(put)
    put.add_argument("--org", required=True, help="the org the credential belongs to")
    put.add_argument("--provider", required=True, help="a provider in the org's byok list")
    put.add_argument("--field", default="api_key", help="the credential field (default api_key)")
    # Catches a credential typed on the command line so argparse does not echo it back.
    put.add_argument("stray", nargs="*", help=argparse.SUPPRESS)
    put.set_defaults(func=cmd_byok_set)

    listing = actions.add_parser("list", help="list stored credentials (never their values)")
    _byok_common(listing)
    listing.add_argument("--json", action="store_true", help="JSON for machines")
    listing.set_defaults(func=cmd_byok_list)

    delete = actions.add_parser("delete", help="delete an org's credentials for a provider")
    _byok_common(delete)
    delete.add_argument("--org", required=True)
    delete.add_argument("--provider", required=True)
    delete.set_defaults(func=cmd_byok_delete)

    rotate = actions.add_parser(
        "rotate",
        help="re-encrypt an org's credentials from its old secret to the current one",
        description="Re-encrypt every credential of the org from the key of the old secret "
        "(in --old-secret-env) to the key of the current one (the variable the config names). "
        "All or nothing.",
    )
    _byok_common(rotate)
    rotate.add_argument("--org", required=True)
    rotate.add_argument(
        "--old-secret-env", required=True, metavar="VAR", help="variable holding the old secret"
    )
    rotate.set_defaults(func=cmd_byok_rotate)


def _byok_common(parser: argparse.ArgumentParser) -> None:
    # add_env_args offers --config to every command; set and rotate require it (which orgs
    # may BYOK which providers, the secrets' names), see _byok_org.
    add_env_args(parser)


def _byok_store(args: argparse.Namespace) -> ByokStore | PgByokStore:
    """The configured BYOK store (ByokError when it cannot be opened)."""
    return open_byok_store(args.runtime_config, args.env, _dir(args), os.environ)


def _byok_org(args: argparse.Namespace) -> tuple[RuntimeConfig, OrgConfig, str]:
    """The config, the org and its current encryption secret; ByokError when refused."""
    config: RuntimeConfig | None = args.runtime_config
    if config is None:
        raise ByokError(
            "--config is required: the compiled runtime.json says which orgs may bring which "
            f"providers' credentials (e.g. --config build/{args.env}/runtime.json, or set "
            "$SWITCHYARD_CONFIG)"
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


def cmd_byok_set(args: argparse.Namespace) -> int:
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
        with _byok_store(args) as store:
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


def cmd_byok_list(args: argparse.Namespace) -> int:
    """`byok list`: org, provider, field, key fingerprint, updated; never values."""
    rows: list[ByokRow] = []
    if _sqlite_missing(args, BYOK_DB) is None:
        try:
            with _byok_store(args) as store:
                rows = store.list()
        except ByokError as exc:
            return fail(str(exc))
    if args.json:
        print(json.dumps(listings.byok_rows_json(rows), indent=2))
        return 0
    if not rows:
        where = describe_store(args.runtime_config, _dir(args), BYOK_DB)
        print(f"no BYOK credentials in environment {args.env!r} ({where})", file=sys.stderr)
        return 0
    print(listings.format_byok_rows(rows))
    return 0


def cmd_byok_delete(args: argparse.Namespace) -> int:
    """`byok delete`: every field of the org's credentials for the provider."""
    missing = _sqlite_missing(args, BYOK_DB)
    if missing is not None:
        return fail(f"no BYOK store in {missing.parent}; is --data-dir (or --config) right?")
    try:
        with _byok_store(args) as store:
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


def cmd_byok_rotate(args: argparse.Namespace) -> int:
    """`byok rotate`: re-seal the org's credentials with the current secret, all or nothing."""
    try:
        _, org, secret = _byok_org(args)
        var: str = args.old_secret_env
        old = os.environ.get(var)
        if not old:
            raise ByokError(f"--old-secret-env {var}: the variable {var} is not set")
        missing = _sqlite_missing(args, BYOK_DB)
        if missing is not None:
            raise ByokError(f"no BYOK store in {missing.parent}; is --data-dir right?")
        with _byok_store(args) as store:
            count = store.rotate(org.id, old, secret)
            fingerprint = store.key(secret).fingerprint
    except ByokError as exc:
        return fail(str(exc))
    print(f"re-encrypted {count} credential field(s) of org {org.id} with key {fingerprint}")
    return 0
