"""TrainResult: what a training run produced, and its JSON round trip."""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    bundle_dir: Path
    metrics: dict[str, float]  # "valid/<m>" at the best epoch, "test/<m>", "test_ref/<m>"
    history: list[dict[str, float]]
    best_epoch: int
    train_seconds: float
    examples_per_second: float
    peak_rss_mb: float
    zero_shot: dict[str, Any] | None = None  # the refit and blend chosen (mirec.training.zero_shot)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(result: TrainResult, path: Path) -> None:
    """Persist a TrainResult as JSON (read back by the DDP launcher and the CLI)."""
    payload: dict[str, Any] = {**result.__dict__, "bundle_dir": str(result.bundle_dir)}
    path.write_text(json.dumps(payload, indent=2))


def read_result(path: Path) -> TrainResult:
    """Load a TrainResult written by ``write_result``."""
    payload = json.loads(path.read_text())
    payload["bundle_dir"] = Path(payload["bundle_dir"])
    return TrainResult(**payload)
