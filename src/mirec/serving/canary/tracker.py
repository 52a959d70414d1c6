"""Impressions and clicks per arm over time, read incrementally from the durable event store.

``CtrTracker.refresh`` reads the events stored since its last read (``EventStore.read_events``
after the last insertion number) and adds them to per-arm, per-time-bucket counts. An arm is a
``(variant, model_version)`` pair; a click counts for the arm of its request's impressions
(joined by ``request_id``), so a user moved between arms never mixes them, and a click whose
impression is not stored is counted as unmatched (never dropped). Everything is rebuilt from
the store after a restart: the counts the policy decides on are the stored ones.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from mirec.schema import (
    EVENT_CLICK,
    EVENT_IMPRESSION,
    EVENT_TS,
    EVENT_TYPE,
    MODEL_VERSION,
    REQUEST_ID,
    SEQ_POS,
    VARIANT,
)

log = logging.getLogger(__name__)
Arm = tuple[str, str]  # (variant, model_version)


class EventReader(Protocol):
    """What the tracker needs of ``mirec.serving.events.EventStore``."""

    def read_events(self, after_seq: int = 0) -> pd.DataFrame:
        """Stored events after insertion number ``after_seq``."""
        ...


@dataclass(frozen=True, slots=True)
class Counts:
    """Impressions and clicks of one arm (over some time range)."""

    impressions: int = 0
    clicks: int = 0

    @property
    def ctr(self) -> float:
        """Clicks per impression (0 without impressions)."""
        return self.clicks / self.impressions if self.impressions else 0.0


class CtrTracker:
    """Per-arm counts in time buckets of ``bucket_s`` seconds.

    Args:
        store: the event store to read.
        bucket_s: width of a time bucket of the series.
    """

    def __init__(self, store: EventReader, bucket_s: float = 5.0) -> None:
        self.store = store
        self.bucket_s = bucket_s
        self.last_seq = 0
        self.unmatched_clicks = 0
        self._arm_of: dict[str, Arm] = {}  # request id -> arm of its impressions
        self._series: dict[Arm, dict[int, list[int]]] = defaultdict(dict)
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read the events stored since the last call; returns how many were read."""
        frame = self.store.read_events(self.last_seq)
        if frame.empty:
            return 0
        with self._lock:
            self._add(frame)
            self.last_seq = int(frame[SEQ_POS].max())
        return len(frame)

    def _add(self, frame: pd.DataFrame) -> None:
        buckets = (frame[EVENT_TS].astype("int64") // int(self.bucket_s * 1e9)).to_numpy()
        kinds = frame[EVENT_TYPE].to_numpy()
        requests = frame[REQUEST_ID].to_numpy()
        variants, versions = frame[VARIANT].to_numpy(), frame[MODEL_VERSION].to_numpy()
        for when, kind, request, variant, version in zip(
            buckets, kinds, requests, variants, versions, strict=True
        ):
            if kind == EVENT_IMPRESSION:
                arm = (str(variant), str(version))
                self._arm_of[str(request)] = arm
                self._bump(arm, int(when), 0)
            elif kind == EVENT_CLICK:
                clicked = self._arm_of.get(str(request))
                if clicked is None:
                    self.unmatched_clicks += 1
                else:
                    self._bump(clicked, int(when), 1)

    def _bump(self, arm: Arm, when: int, column: int) -> None:
        cell = self._series[arm].setdefault(when, [0, 0])
        cell[column] += 1

    def counts(self, arm: Arm, since_s: float | None = None) -> Counts:
        """The arm's counts, optionally only from the bucket holding ``since_s`` (unix s) on."""
        first = None if since_s is None else int(since_s // self.bucket_s)
        with self._lock:
            cells = [c for b, c in self._series.get(arm, {}).items() if first is None or b >= first]
        return Counts(sum(c[0] for c in cells), sum(c[1] for c in cells))

    def first_seen(self, arm: Arm) -> float | None:
        """Start (unix s) of the arm's first bucket with an impression, or None."""
        with self._lock:
            seen = [b for b, c in self._series.get(arm, {}).items() if c[0]]
        return min(seen) * self.bucket_s if seen else None

    def arms(self) -> list[Arm]:
        """Every arm seen so far."""
        with self._lock:
            return sorted(self._series)

    def series(self, arm: Arm, since_s: float | None = None) -> list[tuple[float, int, int]]:
        """Cumulative ``(bucket start unix s, impressions, clicks)`` of the arm, oldest first."""
        first = None if since_s is None else int(since_s // self.bucket_s)
        with self._lock:
            cells = sorted(
                (b, c) for b, c in self._series.get(arm, {}).items() if first is None or b >= first
            )
        out, imps, clicks = [], 0, 0
        for when, (i, c) in cells:
            imps, clicks = imps + i, clicks + c
            out.append((when * self.bucket_s, imps, clicks))
        return out
