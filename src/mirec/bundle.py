"""The model bundle: the one artifact that crosses train -> index -> deploy -> serve.

A bundle is a directory::

    manifest.json    bundle_format, config, metrics, fingerprints, package versions, file checksums
    model.pt         state dict of the two towers (user tower + item tower)
    vocab.json       the append-only vocabulary the model was trained with
    item_vecs.npy    item-tower output for every item, [N+1, D] float32 (row 0 = PAD)
    item_attrs.npy   optional attribute matrix the item tower was built with, [N+1, A] int64
    index.faiss      optional faiss index over item_vecs (added by the index step)

``ModelBundle.load`` refuses a bundle of another format, with a missing file or a file whose
checksum does not match the manifest, with a ``BundleMismatchError`` that names the problem.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirec.config import TrainConfig, from_dict
from mirec.data.batches import SeqBatch, pad_left
from mirec.data.vocab import Vocabulary
from mirec.errors import BundleMismatchError, ConfigError
from mirec.manifest import (
    BUNDLE_FORMAT,
    BundleManifest,
    file_sha256,
    read_manifest,
    verify_files,
    write_manifest,
)
from mirec.manifest import MANIFEST as MANIFEST
from mirec.models import build_model, cold_start
from mirec.models.two_tower import TwoTower
from mirec.schema import PAD_ITEM_ID

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
VOCAB_FILE = "vocab.json"
ITEM_VECS_FILE = "item_vecs.npy"
ITEM_ATTRS_FILE = "item_attrs.npy"
INDEX_FILE = "index.faiss"
_PACKAGES = ("mirec", "torch", "numpy", "pandas", "faiss-cpu")


def package_versions() -> dict[str, str]:
    """Versions of the packages a bundle depends on, plus Python."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


@dataclass
class ModelBundle:
    """A trained model with everything needed to score, index and serve it."""

    model: TwoTower
    config: TrainConfig
    vocab: Vocabulary
    item_attributes: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    data_fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # lineage, index info, ...
    path: Path | None = None

    @property
    def num_items(self) -> int:
        """N, the number of real items the model knows."""
        return self.vocab.size

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """Item-tower output for every item, [N+1, D] float32 (row 0 = PAD)."""
        self.model.eval()
        return self.model.item_vectors().detach().cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def score_users(self, histories: list[np.ndarray] | list[list[int]]) -> np.ndarray:
        """Exact scores of every item for each history, float32 [B, N+1] (column 0 = PAD).

        ``histories`` hold vocabulary indices, oldest first; the last ``data.max_len`` count.
        This is how serving ranks a model that an index cannot serve (``model.index_serves``
        False: the ItemKNN floor); for the others it equals the index's max inner product.
        """
        hist = pad_left(histories, self.config.data.max_len)
        rows = torch.zeros(hist.shape[0], dtype=torch.long)
        self.model.eval()
        scores = self.model.score_all(SeqBatch(hist, (hist != PAD_ITEM_ID).sum(1), rows))
        return scores.float().cpu().numpy()

    def item_vectors_from_content(
        self, attributes: Sequence[Sequence[str]], texts: Sequence[str] | None = None
    ) -> np.ndarray:
        """New items' vectors from content alone (no id, no retraining): float32 [M, D]."""
        model, cfg = self.model, self.config.model
        return cold_start.item_vectors_from_content(model, cfg, attributes, texts)

    def user_vectors_from_profile(
        self, profile: Sequence[str], recent_items: Sequence[str] = ()
    ) -> np.ndarray:
        """A new user's interest vectors from profile tokens and recent item ids: [K, D]."""
        items = cold_start.known_items(self.vocab, recent_items)
        return cold_start.user_vectors_from_profile(self.model, self.config.model, profile, items)

    def manifest(self, checksums: dict[str, str]) -> BundleManifest:
        """The manifest written beside the files."""
        return BundleManifest(
            bundle_format=BUNDLE_FORMAT,
            created_at=datetime.now(UTC).isoformat(),
            config=self.config.model_dump(mode="json"),
            metrics=self.metrics,
            data_fingerprint=self.data_fingerprint,
            vocab_size=self.vocab.size,
            vocab_fingerprint=self.vocab.fingerprint,
            dim=self.model.dim,
            num_interests=self.config.model.interests,
            index_metric="inner_product",
            package_versions=package_versions(),
            extra=self.extra,
            files=checksums,
        )

    def save(self, directory: str | Path) -> Path:
        """Write the bundle to ``directory`` (created; existing bundle files are replaced)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out / MODEL_FILE)
        self.vocab.save(out / VOCAB_FILE)
        np.save(out / ITEM_VECS_FILE, self.item_vectors())
        names = [MODEL_FILE, VOCAB_FILE, ITEM_VECS_FILE]
        if self.item_attributes is not None:
            np.save(out / ITEM_ATTRS_FILE, self.item_attributes)
            names.append(ITEM_ATTRS_FILE)
        if (out / INDEX_FILE).exists():
            names.append(INDEX_FILE)
        write_manifest(out, self.manifest({n: file_sha256(out / n) for n in names}))
        self.path = out
        log.info("saved bundle to %s", out)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        """Load and check a bundle; raises BundleMismatchError with the reason when refused."""
        src = Path(directory)
        manifest = read_manifest(src)
        verify_files(src, manifest)
        try:
            config = from_dict(manifest.config)
        except ConfigError as exc:
            raise BundleMismatchError(f"bundle {src}: manifest config is invalid: {exc}") from exc
        vocab = Vocabulary.load(src / VOCAB_FILE)
        if vocab.fingerprint != manifest.vocab_fingerprint:
            raise BundleMismatchError(f"bundle {src}: vocabulary does not match the manifest")
        attrs = np.load(src / ITEM_ATTRS_FILE) if (src / ITEM_ATTRS_FILE).exists() else None
        model = build_model(config.model, vocab.size, _attr_tensor(attrs), config.data.max_len)
        try:
            state = torch.load(src / MODEL_FILE, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as exc:
            raise BundleMismatchError(f"bundle {src}: model weights do not load: {exc}") from exc
        model.eval()
        return cls(
            model=model,
            config=config,
            vocab=vocab,
            item_attributes=attrs,
            metrics=dict(manifest.metrics),
            data_fingerprint=manifest.data_fingerprint,
            extra=dict(manifest.extra),
            path=src,
        )


def _attr_tensor(attrs: np.ndarray | None) -> torch.Tensor | None:
    return None if attrs is None else torch.from_numpy(np.ascontiguousarray(attrs, dtype=np.int64))


def attach_file(directory: str | Path, name: str, extra: dict[str, Any] | None = None) -> None:
    """Register a file written into a bundle (e.g. the faiss index) in its manifest."""
    src = Path(directory)
    manifest = read_manifest(src)
    verify_files(src, manifest)
    files = {**manifest.files, name: file_sha256(src / name)}
    update = {"files": files, "extra": {**manifest.extra, **(extra or {})}}
    write_manifest(src, manifest.model_copy(update=update))
