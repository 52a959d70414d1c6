"""Registered versions: the ``ModelVersion`` record and the rules for numbering them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mirec.errors import RegistryError

InputsKey = tuple[str, str, str]  # (data fingerprint, config hash, code version)


@dataclass(frozen=True)
class ModelVersion:
    """One registered bundle.

    Attributes:
        version: registry version number (1, 2, ...).
        tag: the BentoML model tag, ``mirec_bundle:<bentoml version>``.
        metrics: evaluation metrics, e.g. ``{"recall@20": 0.31}``.
        data_fingerprint: fingerprint of the training data.
        config_hash: sha256 of the resolved config (canonical JSON).
        code_version: the code the model was trained with (package version or git sha).
        lineage: pipeline run id, resolved config, code version and anything else recorded.
        created_at: ISO-8601 UTC time of registration.
    """

    version: int
    tag: str
    metrics: dict[str, Any]
    data_fingerprint: str
    config_hash: str
    code_version: str
    lineage: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelVersion:
        """Rebuild from ``to_dict`` output (registry.json, the BentoML model's metadata)."""
        missing = [name for name in cls.__dataclass_fields__ if name not in raw]
        if missing:
            raise RegistryError(f"model version record lacks {missing}: {sorted(raw)}")
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record ``from_dict`` reads back."""
        return asdict(self)

    @property
    def inputs(self) -> InputsKey:
        """What makes two trainings the same: data, resolved config, code."""
        return (self.data_fingerprint, self.config_hash, self.code_version)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of a config's canonical JSON (sorted keys), the same for equal configs."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def now() -> str:
    """The current UTC time, ISO-8601 with microseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def same_inputs(
    state: dict[str, Any], key: InputsKey, tag: str | None = None
) -> ModelVersion | None:
    """The registered version with the same inputs (or the same BentoML tag), if any."""
    for raw in state["versions"]:
        entry = ModelVersion.from_dict(raw)
        if entry.tag == tag or entry.inputs == key:
            return entry
    return None


def next_version(state: dict[str, Any]) -> int:
    """The number the next registered version gets."""
    return 1 + max((raw["version"] for raw in state["versions"]), default=0)


def add_version(
    state: dict[str, Any], entry: ModelVersion, action: str = "register"
) -> ModelVersion:
    """Append ``entry`` to the versions and the history."""
    state["versions"].append(entry.to_dict())
    state["history"].append({"at": now(), "action": action, "version": entry.version})
    return entry


def find(state: dict[str, Any], version: int, where: Path) -> ModelVersion:
    """Version ``version``; RegistryError naming it and the known ones when absent."""
    for raw in state["versions"]:
        if raw["version"] == version:
            return ModelVersion.from_dict(raw)
    known = sorted(raw["version"] for raw in state["versions"])
    raise RegistryError(f"unknown model version {version!r} in {where}; known versions: {known}")
