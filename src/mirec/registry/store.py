"""The BentoML side: each registered bundle is ONE model named ``mirec_bundle`` in the store.

BentoML makes the tag, keeps the files, lists, exports and imports; the bundle sits in the
model's ``bundle/`` folder, and the model's labels and metadata carry the registry record.
``BENTOML_HOME`` picks the store; it is passed explicitly to every call.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mirec.errors import RegistryError
from mirec.registry.versions import ModelVersion

if TYPE_CHECKING:
    from bentoml._internal.models import Model, ModelStore

MODEL_NAME = "mirec_bundle"  # the BentoML model name of every bundle
BUNDLE_DIR = "bundle"  # the bundle's folder inside the BentoML model
METADATA_KEY = "mirec_version_record"  # BentoML metadata key holding the ModelVersion as JSON


class BundleStore:
    """BentoML's model store under ``bentoml_home``, opened on first use."""

    def __init__(self, bentoml_home: Path) -> None:
        self.bentoml_home = bentoml_home
        self._store: ModelStore | None = None

    @property
    def store(self) -> ModelStore:
        """The ``ModelStore`` in ``<bentoml_home>/models``."""
        if self._store is None:
            from bentoml._internal.models import ModelStore

            (self.bentoml_home / "models").mkdir(parents=True, exist_ok=True)
            self._store = ModelStore(self.bentoml_home / "models")
        return self._store

    def save(self, bundle: Path, entry: ModelVersion) -> str:
        """Copy the bundle into a new BentoML model carrying ``entry``; returns its tag."""
        import bentoml

        labels = {
            "mirec_version": str(entry.version),
            "data_fingerprint": entry.data_fingerprint,
            "config_hash": entry.config_hash,
            "code_version": entry.code_version,
        }
        # BentoML metadata refuses None values: the record travels as one JSON string
        metadata = {METADATA_KEY: json.dumps(entry.to_dict(), sort_keys=True, default=str)}
        with bentoml.models.create(
            MODEL_NAME, labels=labels, metadata=metadata, _model_store=self.store
        ) as model:
            shutil.copytree(bundle, model.path_of(BUNDLE_DIR))
        return str(model.tag)

    def delete(self, tag: str) -> None:
        """Remove a model the registry did not take."""
        self.store.delete(tag)

    def get(self, entry: ModelVersion) -> Model:
        """The stored model of ``entry``; RegistryError when the store lacks it."""
        from bentoml.exceptions import NotFound

        try:
            return self.store.get(entry.tag)
        except NotFound as exc:
            raise RegistryError(
                f"version {entry.version} ({entry.tag}) is not in the BentoML store "
                f"{self.bentoml_home}: {exc}"
            ) from exc

    def bundle_path(self, entry: ModelVersion) -> Path:
        """The bundle directory of ``entry`` inside the store."""
        return Path(self.get(entry).path) / BUNDLE_DIR

    def export(self, entry: ModelVersion, path: Path) -> Path:
        """``bentoml.models.export_model``: a ``.bentomodel`` file (or one in a folder)."""
        import bentoml

        self.get(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(bentoml.models.export_model(entry.tag, str(path), _model_store=self.store))

    def import_model(self, path: Path) -> tuple[Model, ModelVersion]:
        """Import an exported model (reusing a stored one of the same tag) and its record."""
        model = self._import(path)
        try:
            record = json.loads(str(model.info.metadata[METADATA_KEY]))
            return model, ModelVersion.from_dict(record)
        except (KeyError, TypeError, json.JSONDecodeError, RegistryError) as exc:
            raise RegistryError(f"model file {path} ({model.tag}) is not a mirec bundle") from exc

    def _import(self, path: Path) -> Model:
        from bentoml.exceptions import BentoMLException
        from bentoml.models import Model

        try:
            imported = Model.import_from(str(path))
            existing = self.store.list(imported.tag)
            return existing[0] if existing else imported.save(self.store)
        except (BentoMLException, OSError, ValueError) as exc:
            raise RegistryError(f"cannot import model file {path}: {exc}") from exc
