"""``registry.json``: the registry's state, read whole and replaced atomically under a lock.

Every change is ONE atomic write (temp file, fsync, ``os.replace``, fsync of the folder) under
an exclusive file lock, so a crash midway leaves the previous, complete file.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mirec.errors import RegistryError
from mirec.registry.stages import STAGES

REGISTRY_FILE = "registry.json"
LOCK_FILE = "registry.lock"
REGISTRY_FORMAT = 1


def empty_state() -> dict[str, Any]:
    """The state of a registry with nothing in it."""
    return {
        "format": REGISTRY_FORMAT,
        "versions": [],
        "stages": dict.fromkeys(STAGES),
        "previous_production": [],  # stack of earlier production versions, for rollback
        "history": [],
        "gate_decisions": [],  # every evaluation gate's outcome, pass or fail, oldest first
    }


def _canonical(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, default=str)


class StateFile:
    """The registry file in ``root``: ``read()``, and ``transaction()`` for every change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / REGISTRY_FILE

    def read(self) -> dict[str, Any]:
        """The current state (the empty state when there is no file yet)."""
        if not self.path.exists():
            return empty_state()
        try:
            state = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"registry file {self.path} is unreadable: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != REGISTRY_FORMAT:
            raise RegistryError(
                f"registry file {self.path} is not registry format {REGISTRY_FORMAT}"
            )
        return state

    def _write(self, state: dict[str, Any]) -> None:
        """Replace the file atomically: a crash leaves the old file or the new one."""
        tmp = self.root / f"{REGISTRY_FILE}.{os.getpid()}.tmp"
        try:
            with tmp.open("w") as fh:
                json.dump(state, fh, indent=2, sort_keys=True, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, read, let the caller change the state, write it back in one atomic step.

        Nothing is written when the caller raises or leaves the state unchanged.
        """
        with (self.root / LOCK_FILE).open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                before = _canonical(state)
                yield state
                if _canonical(state) != before:
                    self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
