"""Model registry: numbered versions and the production / canary stages over BentoML's store.

Every registered bundle directory is imported whole into BentoML's model store as ONE model
named ``mirec_bundle`` (BentoML makes the tag, keeps the files, lists, exports and imports);
the bundle sits in the model's ``bundle/`` folder, and the model's labels and metadata carry
the registry version, data fingerprint, config hash, code version, metrics and lineage.

On top of the store, ``<root>/registry.json`` records the numbered versions and the stages.
Every change is ONE atomic write (temp file, fsync, ``os.replace``) under a file lock, so a
crash midway leaves the previous, complete file: the production model is never lost.

Hand-over to serving: ``Registry(root).stage("production")`` (and ``"canary"``) give the
versions to serve; ``Registry(root).bundle_path(version)`` is the bundle directory inside the
store, and ``ModelVersion.tag`` is the BentoML tag (``bentoml.models.BentoModel(tag)``).
``BENTOML_HOME`` picks the store (``<root>/bentoml`` unless already set).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirec.errors import RegistryError
from mirec.manifest import read_manifest

if TYPE_CHECKING:
    from bentoml._internal.models import Model, ModelStore

log = logging.getLogger(__name__)

MODEL_NAME = "mirec_bundle"  # the BentoML model name of every bundle
BUNDLE_DIR = "bundle"  # the bundle's folder inside the BentoML model
REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = 1
PRODUCTION, CANARY = "production", "canary"
STAGES = (PRODUCTION, CANARY)
DEFAULT_ROOT = Path(".mirec") / "registry"
ROOT_ENV = "MIREC_REGISTRY"  # registry root when none is given
METADATA_KEY = "mirec_version_record"  # BentoML metadata key holding the ModelVersion as JSON


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
        """Rebuild from ``asdict`` output (registry.json)."""
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of a config's canonical JSON (sorted keys), the same for equal configs."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _empty_state() -> dict[str, Any]:
    return {
        "format": REGISTRY_FORMAT,
        "versions": [],
        "stages": {PRODUCTION: None, CANARY: None},
        "previous_production": [],  # stack of earlier production versions, for rollback
        "history": [],
        "gate_decisions": [],  # every evaluation gate's outcome, pass or fail, oldest first
    }


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
        self._store: ModelStore | None = None

    # --- persistence ------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The registry file."""
        return self.root / REGISTRY_FILE

    @property
    def store(self) -> ModelStore:
        """BentoML's model store under ``BENTOML_HOME`` (passed explicitly to every call)."""
        if self._store is None:
            from bentoml._internal.models import ModelStore

            (self.bentoml_home / "models").mkdir(parents=True, exist_ok=True)
            self._store = ModelStore(self.bentoml_home / "models")
        return self._store

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return _empty_state()
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
        """Replace registry.json atomically: a crash leaves the old file or the new one."""
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
    def _transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, read, let the caller change the state, write it back in one atomic step."""
        with (self.root / "registry.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                before = json.dumps(state, sort_keys=True, default=str)
                yield state
                if json.dumps(state, sort_keys=True, default=str) != before:
                    self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
        key = (data_fingerprint, config_hash(config), code_version)
        saved: list[str] = []
        try:
            with self._transaction() as state:
                known = _same_inputs(state, key)
                if known is not None:
                    log.info(
                        "bundle already registered as version %d (%s)", known.version, known.tag
                    )
                    return known
                entry = ModelVersion(
                    version=_next_version(state),
                    tag="",
                    metrics=dict(metrics),
                    data_fingerprint=data_fingerprint,
                    config_hash=key[1],
                    code_version=code_version,
                    lineage={**(lineage or {}), "config": config, "code_version": code_version},
                    created_at=_now(),
                )
                saved.append(self._save_model(bundle, entry))
                entry = _add_version(state, replace(entry, tag=saved[0]))
        except BaseException:
            for tag in saved:  # the registry did not take it: do not leave it in the store
                self.store.delete(tag)
            raise
        log.info("registered bundle %s as version %d (%s)", bundle, entry.version, entry.tag)
        return entry

    def _save_model(self, bundle: Path, entry: ModelVersion) -> str:
        """Copy the bundle into a new BentoML model; returns its tag."""
        import bentoml

        labels = {
            "mirec_version": str(entry.version),
            "data_fingerprint": entry.data_fingerprint,
            "config_hash": entry.config_hash,
            "code_version": entry.code_version,
        }
        # BentoML metadata refuses None values: the record travels as one JSON string
        metadata = {METADATA_KEY: json.dumps(asdict(entry), sort_keys=True, default=str)}
        with bentoml.models.create(
            MODEL_NAME, labels=labels, metadata=metadata, _model_store=self.store
        ) as model:
            shutil.copytree(bundle, model.path_of(BUNDLE_DIR))
        return str(model.tag)

    def versions(self) -> list[ModelVersion]:
        """All registered versions, oldest first."""
        raws = sorted(self._read()["versions"], key=lambda raw: raw["version"])
        return [ModelVersion.from_dict(raw) for raw in raws]

    def get(self, version: int) -> ModelVersion:
        """One version; RegistryError naming it when unknown."""
        return _find(self._read(), version, self.path)

    def bundle_path(self, version: int) -> Path:
        """The bundle directory of ``version`` inside the BentoML store."""
        entry = self.get(version)
        model = self._model(entry)
        return Path(model.path) / BUNDLE_DIR

    def _model(self, entry: ModelVersion) -> Model:
        from bentoml.exceptions import NotFound

        try:
            return self.store.get(entry.tag)
        except NotFound as exc:
            raise RegistryError(
                f"version {entry.version} ({entry.tag}) is not in the BentoML store "
                f"{self.bentoml_home}: {exc}"
            ) from exc

    # --- stages -----------------------------------------------------------------------------

    def stage(self, name: str) -> ModelVersion | None:
        """The version in stage ``name`` ("production" | "canary"), or None."""
        state = self._read()
        version = state["stages"][_check_stage(name)]
        return None if version is None else _find(state, version, self.path)

    def set_stage(self, name: str, version: int) -> None:
        """Put ``version`` in stage ``name``; a replaced production is kept for rollback."""
        _check_stage(name)
        with self._transaction() as state:
            _find(state, version, self.path)
            stages = state["stages"]
            if name == CANARY and stages[PRODUCTION] == version:
                raise RegistryError(f"version {version} is production; it cannot be the canary")
            if name == PRODUCTION:
                _replace_production(state, version, "set_stage")
                if stages[CANARY] == version:
                    stages[CANARY] = None
            elif stages[CANARY] != version:
                _log_change(state, "set_stage", CANARY, version, stages[CANARY])
                stages[CANARY] = version
        log.info("stage %s -> version %d", name, version)

    def promote_canary(self) -> ModelVersion:
        """Make the canary the production version (the old one is kept for rollback)."""
        with self._transaction() as state:
            canary = state["stages"][CANARY]
            if canary is None:
                raise RegistryError(f"no canary to promote in {self.path}")
            _replace_production(state, canary, "promote")
            state["stages"][CANARY] = None
            promoted = _find(state, canary, self.path)
        log.info("promoted canary version %d to production", canary)
        return promoted

    def rollback(self) -> ModelVersion:
        """Restore the previous production version."""
        with self._transaction() as state:
            if not state["previous_production"]:
                raise RegistryError(
                    f"no previous production version to roll back to in {self.path}"
                )
            restored = state["previous_production"].pop()
            current = state["stages"][PRODUCTION]
            state["stages"][PRODUCTION] = restored
            _log_change(state, "rollback", PRODUCTION, restored, current)
            entry = _find(state, restored, self.path)
        log.warning("rolled production back from version %s to %d", current, restored)
        return entry

    def clear_canary(self) -> None:
        """Remove the canary (production is untouched)."""
        with self._transaction() as state:
            previous = state["stages"][CANARY]
            state["stages"][CANARY] = None
            _log_change(state, "clear_canary", CANARY, None, previous)

    def history(self) -> list[dict[str, Any]]:
        """Registrations and stage changes, oldest first, each with its UTC time ``at``."""
        return list(self._read()["history"])

    def record_gate(self, report: dict[str, Any]) -> dict[str, Any]:
        """Append one evaluation gate's outcome (pass or fail) to the registry; return it.

        Args:
            report: the gate's decision, metric, values, reasons, both metric sets and the
                challenger's lineage (pipeline run id, data fingerprint); JSON-serialisable.
        """
        entry = {"at": _now(), **report}
        with self._transaction() as state:
            state.setdefault("gate_decisions", []).append(entry)
        log.info("gate %s recorded in %s", report.get("decision"), self.path)
        return entry

    def gate_decisions(self) -> list[dict[str, Any]]:
        """Every recorded gate outcome, oldest first."""
        return list(self._read().get("gate_decisions", []))

    # --- export / import --------------------------------------------------------------------

    def export(self, version: int, path: str | Path) -> Path:
        """Export a version with ``bentoml.models.export_model`` (a ``.bentomodel`` file).

        Args:
            version: the version to export.
            path: a file name, or an existing folder (BentoML names the file).

        Returns:
            The written file.
        """
        import bentoml

        entry = self.get(version)
        self._model(entry)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        out = bentoml.models.export_model(entry.tag, str(path), _model_store=self.store)
        return Path(out)

    def import_(self, path: str | Path) -> ModelVersion:
        """Import an exported version into this store and registry.

        A model whose tag (or data fingerprint, config hash and code version) is already
        registered returns that version; otherwise it becomes a new version number.
        """
        model = self._import_model(Path(path))
        try:
            source = ModelVersion.from_dict(json.loads(str(model.info.metadata[METADATA_KEY])))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"model file {path} ({model.tag}) is not a mirec bundle") from exc
        key = (source.data_fingerprint, source.config_hash, source.code_version)
        with self._transaction() as state:
            known = _same_inputs(state, key, tag=str(model.tag))
            if known is not None:
                return known
            lineage = {
                **source.lineage,
                "imported_from": str(path),
                "source_version": source.version,
            }
            entry = replace(
                source, version=_next_version(state), tag=str(model.tag), lineage=lineage
            )
            _add_version(state, entry, action="import")
        log.info("imported %s as version %d", path, entry.version)
        return entry

    def _import_model(self, path: Path) -> Model:
        """``bentoml.models.import_model``, reusing the stored model when the tag exists."""
        from bentoml.exceptions import BentoMLException
        from bentoml.models import Model

        try:
            imported = Model.import_from(str(path))
            existing = self.store.list(imported.tag)
            return existing[0] if existing else imported.save(self.store)
        except (BentoMLException, OSError, ValueError) as exc:
            raise RegistryError(f"cannot import model file {path}: {exc}") from exc


def _same_inputs(
    state: dict[str, Any], key: tuple[str, str, str], tag: str | None = None
) -> ModelVersion | None:
    """The registered version with the same (data fingerprint, config hash, code version)."""
    for raw in state["versions"]:
        if (
            raw["tag"] == tag
            or (raw["data_fingerprint"], raw["config_hash"], raw["code_version"]) == key
        ):
            return ModelVersion.from_dict(raw)
    return None


def _next_version(state: dict[str, Any]) -> int:
    return 1 + max((raw["version"] for raw in state["versions"]), default=0)


def _add_version(
    state: dict[str, Any], entry: ModelVersion, action: str = "register"
) -> ModelVersion:
    state["versions"].append(asdict(entry))
    state["history"].append({"at": _now(), "action": action, "version": entry.version})
    return entry


def _check_stage(name: str) -> str:
    if name not in STAGES:
        raise RegistryError(f"unknown stage {name!r}; stages are {list(STAGES)}")
    return name


def _find(state: dict[str, Any], version: int, where: Path) -> ModelVersion:
    for raw in state["versions"]:
        if raw["version"] == version:
            return ModelVersion.from_dict(raw)
    known = sorted(raw["version"] for raw in state["versions"])
    raise RegistryError(f"unknown model version {version!r} in {where}; known versions: {known}")


def _log_change(
    state: dict[str, Any], action: str, stage: str, version: int | None, previous: int | None
) -> None:
    state["history"].append(
        {"at": _now(), "action": action, "stage": stage, "version": version, "previous": previous}
    )


def _replace_production(state: dict[str, Any], version: int, action: str) -> None:
    current = state["stages"][PRODUCTION]
    if current == version:
        return
    if current is not None:
        state["previous_production"].append(current)
    state["stages"][PRODUCTION] = version
    _log_change(state, action, PRODUCTION, version, current)


def deploy_version(registry: Registry, version: int) -> str:
    """Deploy a version that passed the gate; returns the stage it went to.

    The first model goes straight to production (nothing to compare it against); later
    ones become the canary. Deploying the current production or canary again is a no-op.
    """
    production = registry.stage(PRODUCTION)
    if production is None:
        log.info("version %d goes straight to production: no production model to compare", version)
        registry.set_stage(PRODUCTION, version)
        return PRODUCTION
    if production.version == version:
        log.info("version %d is already production", version)
        return PRODUCTION
    registry.set_stage(CANARY, version)
    return CANARY
