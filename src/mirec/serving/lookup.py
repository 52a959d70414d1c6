"""User lookup: user id -> the user's item-index sequence, with a degraded mode.

``FeastHistories`` reads the online store through ``mirec.features.feast_io``.
``ResilientHistories`` wraps any source: it remembers the last sequence it saw per user (an
in-process LRU), and when the store fails it answers from that cache (or "unknown") with
``degraded=True`` instead of raising; it then leaves the store alone for
``retry_s`` seconds and tries again, so recovery is automatic when the store returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mirec.errors import FeatureLookupError
from mirec.schema import HIST_ITEM_IDS

log = logging.getLogger(__name__)


class HistorySource(Protocol):
    """Anything that returns item-index sequences for users (None = user unknown)."""

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[int] | None]:
        """Each user's sequence, oldest first; raises FeatureLookupError when it cannot."""
        ...


class FeastHistories:
    """The user-tower feature service of a Feast repository (resolved once, warmed)."""

    def __init__(self, repo: str | Path) -> None:
        from mirec.features.feast_io import OnlineFeatures, open_store

        self.repo = Path(repo)
        self.reader = OnlineFeatures(open_store(self.repo))

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[int] | None]:
        """Sequences from the online store."""
        rows = self.reader.lookup(list(user_ids))
        out: dict[str, list[int] | None] = {}
        for user, row in rows.items():
            hist = None if row is None else row.get(HIST_ITEM_IDS)
            out[user] = None if hist is None else [int(i) for i in hist]
        return out


@dataclass(frozen=True)
class Lookup:
    """A user's sequence and how it was obtained."""

    history: list[int] | None  # None: the user is unknown (or unknown while degraded)
    degraded: bool  # True when the store failed and the cache (or nothing) answered
    cached: bool  # True when the sequence came from the cache


class ResilientHistories:
    """A history source that never raises: cache and degraded flag when the store is down.

    Args:
        source: the real source (Feast).
        cache_users: users kept in the last-known-sequence cache.
        retry_s: after a failure, serve from the cache for this long before asking again.
    """

    def __init__(self, source: HistorySource, cache_users: int = 100_000, retry_s: float = 1.0):
        self.source = source
        self.cache_users = cache_users
        self.retry_s = retry_s
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.failures = 0

    @property
    def store_up(self) -> bool:
        """False while the store is considered down (between a failure and the next retry)."""
        return time.monotonic() >= self._down_until

    def lookup(self, user_ids: Sequence[str]) -> dict[str, Lookup]:
        """Sequences of ``user_ids``; from the cache, flagged degraded, when the store fails."""
        if self.store_up:
            try:
                found = self.source.histories(user_ids)
            except FeatureLookupError as exc:
                self._mark_down(exc)
            else:
                if self._down_until:
                    log.warning("online store is back after %d failed lookups", self.failures)
                    self._down_until, self.failures = 0.0, 0
                self._remember(found)
                return {u: Lookup(found.get(u), False, False) for u in user_ids}
        return {u: self._from_cache(u) for u in user_ids}

    def remember(self, user_id: str, history: list[int]) -> None:
        """Record a sequence known to be current (e.g. after a pushed click)."""
        self._remember({user_id: history})

    def cached(self, user_id: str) -> list[int] | None:
        """The last sequence seen for ``user_id``, if any."""
        with self._lock:
            hist = self._cache.get(user_id)
            return None if hist is None else list(hist)

    def _mark_down(self, exc: Exception) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + self.retry_s
        if self.failures == 1:
            log.error("online store failed, serving degraded: %s", exc)

    def _from_cache(self, user_id: str) -> Lookup:
        hist = self.cached(user_id)
        return Lookup(hist, True, hist is not None)

    def _remember(self, found: dict[str, list[int] | None]) -> None:
        with self._lock:
            for user, hist in found.items():
                if hist is None:
                    continue
                self._cache[user] = hist
                self._cache.move_to_end(user)
            while len(self._cache) > self.cache_users:
                self._cache.popitem(last=False)
