"""Per-stage wall time of one batch of requests (where each millisecond goes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("validate", "lookup", "tower", "faiss", "respond")


@dataclass
class StageTimes:
    """Seconds spent per stage on one batch of ``size`` requests."""

    size: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        """Seconds across all stages."""
        return sum(self.seconds.values())
