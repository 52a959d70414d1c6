"""``Registry``: numbered versions and stages over BentoML's model store, one transaction each."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirec.errors import RegistryError
from mirec.manifest import read_manifest
from mirec.registry import stages
from mirec.registry.gate_log import GateRecord, GateReport
from mirec.registry.state import StateFile
from mirec.registry.store import BundleStore
from mirec.registry.versions import (
    ModelVersion,
    add_version,
    config_hash,
    find,
    next_version,
    now,
    same_inputs,
)

if TYPE_CHECKING:
    from bentoml._internal.models import ModelStore

log = logging.getLogger("mirec.registry")

DEFAULT_ROOT = Path(".mirec") / "registry"
ROOT_ENV = "MIREC_REGISTRY"  # registry root when none is given


class Registry:
    """Numbered model versions and stages, persisted in ``<root>/registry.json``.

    Args:
        root: folder of ``registry.json``; default ``$MIREC_REGISTRY`` or ``.mirec/registry``.
            ``BENTOML_HOME`` is set to ``<root>/bentoml`` unless it is already set.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(ROOT_ENV, DEFAULT_ROOT))
        self.root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("BENTOML_HOME", str((self.root / "bentoml").resolve()))
        self.bentoml_home = Path(os.environ["BENTOML_HOME"])
        self._state = StateFile(self.root)
        self._bundles = BundleStore(self.bentoml_home)

    @property
    def path(self) -> Path:
        """The registry file."""
        return self._state.path

    @property
    def store(self) -> ModelStore:
        """BentoML's model store under ``BENTOML_HOME``."""
        return self._bundles.store

    # --- versions ---------------------------------------------------------------------------

    def register(
        self,
        bundle_dir: str | Path,
        *,
        metrics: dict[str, Any],
        data_fingerprint: str,
        config: dict[str, Any],
        code_version: str,
        lineage: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Import a bundle directory into BentoML's store and record it as a new version.

        A bundle with the same data fingerprint, resolved config and code version as a
        registered one returns that version (idempotent reruns).

        Args:
            bundle_dir: the bundle directory (must hold manifest.json with bundle_format).
            metrics: evaluation metrics to record.
            data_fingerprint: fingerprint of the training data.
            config: the resolved config (hashed for idempotency, kept in the lineage).
            code_version: package version or git sha.
            lineage: e.g. ``{"pipeline_run_id": ...}``; config and code version are added.

        Raises:
            BundleMismatchError: the directory is not a bundle.
        """
        bundle = Path(bundle_dir)
        read_manifest(bundle)
        entry = ModelVersion(
            version=0,
            tag="",
            metrics=dict(metrics),
            data_fingerprint=data_fingerprint,
            config_hash=config_hash(config),
            code_version=code_version,
            lineage={**(lineage or {}), "config": config, "code_version": code_version},
        )
        saved: list[str] = []
        try:
            with self._state.transaction() as state:
                known = same_inputs(state, entry.inputs)
                if known is not None:
                    log.info("bundle already registered as version %d (%s)", *_label(known))
                    return known
                entry = replace(entry, version=next_version(state), created_at=now())
                saved.append(self._bundles.save(bundle, entry))
                entry = add_version(state, replace(entry, tag=saved[0]))
        except BaseException:
            for tag in saved:  # the registry did not take it: do not leave it in the store
                self._bundles.delete(tag)
            raise
        log.info("registered bundle %s as version %d (%s)", bundle, *_label(entry))
        return entry

    def versions(self) -> list[ModelVersion]:
        """All registered versions, oldest first."""
        raws = sorted(self._state.read()["versions"], key=lambda raw: raw["version"])
        return [ModelVersion.from_dict(raw) for raw in raws]

    def get(self, version: int) -> ModelVersion:
        """One version; RegistryError naming it when unknown."""
        return find(self._state.read(), version, self.path)

    def bundle_path(self, version: int) -> Path:
        """The bundle directory of ``version`` inside the BentoML store."""
        return self._bundles.bundle_path(self.get(version))

    # --- stages -----------------------------------------------------------------------------

    def stage(self, name: str) -> ModelVersion | None:
        """The version in stage ``name`` ("production" | "canary"), or None."""
        state = self._state.read()
        version = state["stages"][stages.check_stage(name)]
        return None if version is None else find(state, version, self.path)

    def set_stage(self, name: str, version: int) -> None:
        """Put ``version`` in stage ``name``; a replaced production is kept for rollback."""
        stages.check_stage(name)
        with self._state.transaction() as state:
            stages.set_stage(state, name, version, self.path)
        log.info("stage %s -> version %d", name, version)

    def promote_canary(self) -> ModelVersion:
        """Make the canary the production version (the old one is kept for rollback)."""
        with self._state.transaction() as state:
            promoted = stages.promote_canary(state, self.path)
        log.info("promoted canary version %d to production", promoted.version)
        return promoted

    def rollback(self) -> ModelVersion:
        """Restore the previous production version."""
        with self._state.transaction() as state:
            return stages.rollback(state, self.path)

    def clear_canary(self) -> None:
        """Remove the canary (production is untouched)."""
        with self._state.transaction() as state:
            stages.clear_canary(state)

    def history(self) -> list[dict[str, Any]]:
        """Registrations and stage changes, oldest first, each with its UTC time ``at``."""
        return list(self._state.read()["history"])

    # --- gate decisions ---------------------------------------------------------------------

    def record_gate(self, report: GateReport) -> GateRecord:
        """Append one evaluation gate's outcome (pass or fail) to the registry; return it."""
        record = GateRecord(at=now(), **report.model_dump())
        with self._state.transaction() as state:
            state["gate_decisions"].append(record.dump())
        log.info("gate %s recorded in %s", report.decision, self.path)
        return record

    def gate_decisions(self) -> list[GateRecord]:
        """Every recorded gate outcome, oldest first."""
        raws = self._state.read()["gate_decisions"]
        where = f"{self.path} gate_decisions"
        return [GateRecord.parse(raw, f"{where}[{i}]", RegistryError) for i, raw in enumerate(raws)]

    # --- export / import --------------------------------------------------------------------

    def export(self, version: int, path: str | Path) -> Path:
        """Export a version with ``bentoml.models.export_model`` (a ``.bentomodel`` file).

        Args:
            version: the version to export.
            path: a file name, or an existing folder (BentoML names the file).

        Returns:
            The written file.
        """
        return self._bundles.export(self.get(version), Path(path))

    def import_(self, path: str | Path) -> ModelVersion:
        """Import an exported version into this store and registry.

        A model whose tag (or data fingerprint, config hash and code version) is already
        registered returns that version; otherwise it becomes a new version number.
        """
        model, source = self._bundles.import_model(Path(path))
        with self._state.transaction() as state:
            known = same_inputs(state, source.inputs, tag=str(model.tag))
            if known is not None:
                return known
            lineage = {
                **source.lineage,
                "imported_from": str(path),
                "source_version": source.version,
            }
            entry = replace(
                source, version=next_version(state), tag=str(model.tag), lineage=lineage
            )
            add_version(state, entry, action="import")
        log.info("imported %s as version %d", path, entry.version)
        return entry


def _label(entry: ModelVersion) -> tuple[int, str]:
    return entry.version, entry.tag
