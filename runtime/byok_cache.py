"""The gateway's BYOK cache: each BYOK org's own credentials, decrypted, in memory.

The request path (runtime/router.py) reads `ByokCache.credentials`, which does no I/O; a
background thread reloads the snapshot from the store (runtime/byok_store.py in SQLite,
runtime/byok_pg.py in PostgreSQL: anything with `ByokSource`'s methods) when another process
(the `byok` commands, on any host) changes it. Values are never logged or put into a problem
text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from runtime.byok_store import ByokError, ByokRow, ByokStore, DataKey, check_secret
from runtime.config import OrgConfig

_log = logging.getLogger("switchyard.byok")


class ByokSource(Protocol):
    """What the cache reads: `ByokStore` (SQLite) or byok_pg.`PgByokStore`."""

    def key(self, secret: str) -> DataKey:
        """The data key `secret` derives in this store."""
        ...

    def decrypt_with(
        self, keys: Mapping[str, DataKey], problems: list[str] | None = None
    ) -> dict[tuple[str, str], dict[str, str]]:
        """The credentials that open with `keys`, by (org, provider), then field."""
        ...

    def list(self) -> list[ByokRow]:
        """Every stored credential, without values."""
        ...

    def data_version(self) -> int:
        """A number that changes whenever the credentials change."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class ByokCache:
    """The gateway's view: each BYOK org's own credentials, decrypted, in memory.

    `credentials` does no I/O. Only providers listed in the org's `byok` are served; an org
    whose encryption secret is absent from the environment gets none, and `problems()` says
    so by the secret's NAME. After a rotation a gateway still holding the old secret keeps the
    values it last read (rotation does not change them) and reports the mismatch. When the
    store cannot be read, the last snapshot keeps serving and `problems()` says so.
    """

    def __init__(
        self,
        store: ByokSource | Path,
        environment: str,
        orgs: Mapping[str, OrgConfig],
        environ: Mapping[str, str],
    ) -> None:
        self._allowed = {oid: o.byok_providers for oid, o in orgs.items() if o.byok_providers}
        self._static_problems: list[str] = []
        secrets_by_org: dict[str, str] = {}
        for oid in sorted(self._allowed):
            name = orgs[oid].byok_encryption_key
            try:
                secrets_by_org[oid] = check_secret(
                    environ.get(name) if name else None,
                    f"org {oid}: BYOK encryption secret {name or '(unnamed)'}",
                )
            except ByokError as exc:
                self._static_problems.append(f"{exc}; the org's own credentials are not used")
        self._store: ByokSource | None = None
        if not secrets_by_org:
            if not isinstance(store, Path):
                store.close()
        else:
            self._store = ByokStore(store, environment) if isinstance(store, Path) else store
        self._keys = (
            {oid: self._store.key(s) for oid, s in secrets_by_org.items()} if self._store else {}
        )
        self._lock = threading.Lock()
        self._snapshot: dict[tuple[str, str], dict[str, str]] = {}
        self._problems: list[str] = []
        self._version: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: str | None = None
        self.refresh()

    def credentials(self, org: str, provider: str) -> dict[str, str] | None:
        """The org's own credential fields for `provider` (e.g. {"api_key": ...}), or None."""
        found = self._snapshot.get((org, provider))
        return None if found is None else dict(found)

    def problems(self) -> list[str]:
        """What keeps BYOK credentials from being used, by org and secret NAME (no values)."""
        failing = self._failing
        unreachable = (
            [f"BYOK store unreachable ({failing}); serving the credentials read before"]
            if failing is not None
            else []
        )
        return [*self._static_problems, *self._problems, *unreachable]

    def refresh(self) -> bool:
        """Reload the snapshot if the store changed; True when it was reloaded."""
        if self._store is None:
            return False
        with self._lock:
            version = self._store.data_version()
            if version == self._version:
                return False
            problems: list[str] = []
            loaded = self._store.decrypt_with(self._keys, problems)
            snapshot: dict[tuple[str, str], dict[str, str]] = {}
            for (org, provider), fields in loaded.items():
                if provider in self._allowed.get(org, ()):
                    snapshot[(org, provider)] = fields
            self._keep_rotated(snapshot)
            for p in problems:
                if p not in self._problems:
                    _log.warning("%s", p)
            self._snapshot = snapshot  # one reference swap: readers see old or new, never half
            self._problems = problems
            self._version = version
            return True

    def _keep_rotated(self, snapshot: dict[tuple[str, str], dict[str, str]]) -> None:
        # A row re-sealed under another key (a rotation this gateway has no secret for yet)
        # still holds the same value: keep serving what was last read rather than nothing.
        assert self._store is not None
        for row in self._store.list():
            where = (row.org, row.provider)
            key = self._keys.get(row.org)
            if key is None or row.fingerprint == key.fingerprint:
                continue
            old = self._snapshot.get(where, {}).get(row.field)
            if old is not None and row.provider in self._allowed.get(row.org, ()):
                snapshot.setdefault(where, {}).setdefault(row.field, old)

    def start_background_refresh(self, interval: float = 1.0) -> None:
        """Refresh the snapshot every `interval` seconds from a daemon thread."""
        if self._thread is not None or self._store is None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._refresh_loop, args=(interval,), name="switchyard-byok", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            self._poll()

    def _poll(self) -> None:
        """One background refresh: keep the last snapshot on failure, log the change once."""
        try:
            self.refresh()
        except Exception as exc:  # keep the last good snapshot
            reason = str(exc) or type(exc).__name__
            if self._failing is None:
                _log.warning("cannot refresh BYOK credentials, serving the last ones: %s", reason)
            self._failing = reason
            return
        if self._failing is not None:
            _log.warning("the BYOK store is readable again; credentials refreshed")
            self._failing = None

    def stop(self) -> None:
        """Stop the background refresh and close the store."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        # A refresh stuck on an unresponsive store must not hold the shutdown: its daemon
        # thread ends with the process.
        if self._lock.acquire(timeout=1.0):
            try:
                if self._store is not None:
                    self._store.close()
                    self._store = None
            finally:
                self._lock.release()
