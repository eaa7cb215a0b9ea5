"""`python -m runtime`: serve the gateway, manage keys, read the request log.

Exit codes: 0 ok, 1 refused (bad config, invalid input), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path

from runtime import paths
from runtime.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime", description="Switchyard gateway runtime."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
        help="key store and request log directory (default: $SWITCHYARD_DATA_DIR, else server.data_dir)",
    )
    serve.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(func=_serve)

    from runtime import admin, byok

    admin.add_commands(sub)
    byok.add_commands(sub)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if config.logging.sink != "sqlite":
        print(
            f"error: {args.config}: logging.sink {config.logging.sink!r} is not supported by this gateway yet; use the embedded 'sqlite' sink",
            file=sys.stderr,
        )
        return 1
    data_dir = paths.data_dir(config.environment, args.data_dir, config.data_dir).resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = data_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        print(
            f"error: data directory {data_dir} is not writable ({exc.strerror}); pass --data-dir or set SWITCHYARD_DATA_DIR",
            file=sys.stderr,
        )
        return 1
    port = args.port if args.port is not None else config.port
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

    options = {
        "host": args.host,
        "port": port,
        "log_level": args.log_level,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 30,
        "timeout_keep_alive": 75,
        "backlog": 2048,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "server_header": False,
        "proxy_headers": False,  # the gateway never uses forwarded client addresses
    }
    # uvicorn re-raises the signal that stopped it after its graceful shutdown; SIGTERM's
    # default action would then end a clean stop with status -15 instead of 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if workers == 1:
        from runtime.app import create_app

        uvicorn.run(create_app(config, data_dir), **options)
    else:
        os.environ["SWITCHYARD_CONFIG"] = str(Path(args.config).resolve())
        os.environ["SWITCHYARD_DATA_DIR"] = str(data_dir)
        uvicorn.run("runtime.app:app_from_env", factory=True, workers=workers, **options)
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _banner(config: object, host: str, port: int, workers: int, data_dir: Path) -> None:
    from runtime.app import _credentials
    from runtime.config import RuntimeConfig

    assert isinstance(config, RuntimeConfig)
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
