"""User lookup: user id -> the user's item-index sequence, with a degraded mode.

``FeastHistories`` reads the user-tower feature service's sequences from the online store.
``ResilientHistories`` wraps any source: it remembers the last sequence it saw per user (an
in-process LRU), and when the store fails it answers from that cache (or "unknown") with
``degraded=True`` instead of raising; it then leaves the store alone for
``retry_s`` seconds and lets one request try again, so recovery is automatic when the store
returns. ``FeastHistories`` opens its store with ``open_serving_store``: a Redis client that
raises within a second, instead of redis-py's default retry with backoff (8-11 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mirec.errors import FeatureLookupError
from mirec.schema import HIST_ITEM_IDS, USER_ID, USER_TOWER_FS

log = logging.getLogger(__name__)


class HistorySource(Protocol):
    """Anything that returns item-index sequences for users (None = user unknown)."""

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[int] | None]:
        """Each user's sequence, oldest first; raises FeatureLookupError when it cannot."""
        ...


class FeastHistories:
    """The sequences of the user-tower feature service, read straight from the online store.

    The feature view that holds ``hist_item_ids`` is resolved from the service once; each
    lookup is then one ``online_read`` of that one feature for the whole batch (one Redis
    round trip), without ``get_online_features``' registry checks and response assembly,
    which cost more than the read itself (docs/serving.md). The first read is done here.
    """

    def __init__(self, repo: str | Path, warm: bool = True) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        from mirec.features.feast_io import open_serving_store

        self._key, self._value = EntityKey, Value  # feast imports late (seconds)
        self.repo = Path(repo)
        self.store = open_serving_store(self.repo)
        service = self.store.get_feature_service(USER_TOWER_FS)
        views = [
            projection.name
            for projection in service.feature_view_projections
            if any(feature.name == HIST_ITEM_IDS for feature in projection.features)
        ]
        if not views:
            raise FeatureLookupError(f"feature service {USER_TOWER_FS!r} has no {HIST_ITEM_IDS}")
        self.view = self.store.get_feature_view(views[0])
        self.join_key = self.view.entity_columns[0].name if self.view.entity_columns else USER_ID
        self.provider = self.store.provider
        if warm:
            self.histories(["__mirec_warmup__"])

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[int] | None]:
        """Sequences from the online store (None for a user it does not hold)."""
        keys = [
            self._key(join_keys=[self.join_key], entity_values=[self._value(string_val=u)])
            for u in map(str, user_ids)
        ]
        try:
            rows = self.provider.online_read(
                self.store.config, self.view, keys, requested_features=[HIST_ITEM_IDS]
            )
        except Exception as exc:  # the stores raise many types; the caller gets one
            raise FeatureLookupError(
                f"online read of {len(keys)} users from {self.view.name!r} failed: {exc}"
            ) from exc
        out: dict[str, list[int] | None] = {}
        for user, (_, values) in zip(map(str, user_ids), rows, strict=True):
            value = None if values is None else values.get(HIST_ITEM_IDS)
            out[user] = None if value is None else _int_list(value)
        return out


def _int_list(value: Any) -> list[int] | None:
    """An ``Array(Int64)`` feature value as a list (None when the value is unset)."""
    kind = value.WhichOneof("val")
    if kind == "int64_list_val":
        return list(value.int64_list_val.val)
    if kind is None or kind == "null_val":
        return None
    from feast.type_map import feast_value_type_to_python_type

    found = feast_value_type_to_python_type(value)
    return None if found is None else [int(i) for i in found]


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
        self._down_until = 0.0  # 0.0: up; else when the next probe may run
        self._probe = threading.Lock()  # held by the one request probing a down store
        self.failures = 0

    @property
    def store_up(self) -> bool:
        """False while the store is considered down (between a failure and the next retry)."""
        return time.monotonic() >= self._down_until

    def lookup(self, user_ids: Sequence[str]) -> dict[str, Lookup]:
        """Sequences of ``user_ids``; from the cache, flagged degraded, when the store fails.

        While the store is down, one request at a time probes it after each ``retry_s``
        window; the others answer from the cache meanwhile instead of waiting on it too.
        """
        probe = self._probe if self._down_until else None
        if not self.store_up or (probe is not None and not probe.acquire(blocking=False)):
            return {u: self._from_cache(u) for u in user_ids}
        try:
            found = self.source.histories(user_ids)
        except FeatureLookupError as exc:
            self._mark_down(exc)
            return {u: self._from_cache(u) for u in user_ids}
        finally:
            if probe is not None:
                probe.release()
        if self._down_until:
            log.warning("online store is back after %d failed lookups", self.failures)
            self._down_until, self.failures = 0.0, 0
        self._remember(found)
        return {u: Lookup(found.get(u), False, False) for u in user_ids}

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
