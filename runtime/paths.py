"""Where an environment's state lives: the key store and the request log."""

from __future__ import annotations

import os
from pathlib import Path

KEYS_DB = "keys.db"
REQUESTS_DB = "requests.db"


def data_dir(environment: str, explicit: str | None = None, configured: str | None = None) -> Path:
    """The data directory, first found of: `--data-dir`, `$SWITCHYARD_DATA_DIR`, the runtime
    config's `server.data_dir` (given as `configured`, used by `serve`), `./.switchyard/<env>`.

    In a container compose sets SWITCHYARD_DATA_DIR to the `data` volume, so the gateway and
    `docker compose exec gateway python -m runtime keys ...` agree without flags.
    """
    if explicit:
        return Path(explicit)
    env = os.environ.get("SWITCHYARD_DATA_DIR")
    if env:
        return Path(env)
    if configured:
        return Path(configured)
    return Path(".switchyard") / environment
