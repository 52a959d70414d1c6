"""The served model: a registered bundle with its faiss index, vocabulary and towers.

``load_stage`` reads the registry's stage (``production`` by default) and loads that version's
bundle from BentoML's model store. ``ServingModel`` turns item-index sequences into K interest
vectors and embeds new items; it holds no feature store and no web framework.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import torch

from mirec.bundle import INDEX_FILE, ModelBundle
from mirec.data.batches import SeqBatch, pad_left
from mirec.errors import BundleMismatchError, RegistryError
from mirec.index import add_items, load_index
from mirec.registry import PRODUCTION, ModelVersion, Registry
from mirec.schema import PAD_ITEM_ID

log = logging.getLogger(__name__)


@dataclass
class ServingModel:
    """A bundle ready to serve.

    Attributes:
        bundle: the loaded bundle (towers, vocabulary, config).
        index: its faiss index; ids are vocabulary indices 1..N, plus items added later.
        version: the label every response carries (``v<registry version>`` or the bundle path).
        tag: the BentoML model tag, when loaded from the registry.
        feature_repo: the Feast repository the model's features were built into (lineage).
        extra_ids: external ids of items added after training, by index (N+1, N+2, ...).
    """

    bundle: ModelBundle
    index: faiss.Index
    version: str
    tag: str = ""
    feature_repo: str = ""
    extra_ids: dict[int, str] = field(default_factory=dict)
    _known: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _table: np.ndarray | None = field(default=None, repr=False)

    @property
    def max_len(self) -> int:
        """The longest history the user tower reads."""
        return self.bundle.config.data.max_len

    @property
    def vocab_size(self) -> int:
        """N, the items the towers were trained on."""
        return self.bundle.vocab.size

    @property
    def num_items(self) -> int:
        """Items in the index (trained ones plus added ones)."""
        return int(self.index.ntotal)

    def encode(self, item_ids: Sequence[str]) -> np.ndarray:
        """External ids -> indices (trained or added items); -1 for unknown ids."""
        idx = self.bundle.vocab.encode(list(item_ids))
        if self._known:
            for row, item in enumerate(item_ids):
                if idx[row] < 0:
                    idx[row] = self._known.get(str(item), -1)
        return idx

    def decode(self, idx: np.ndarray) -> list[str | None]:
        """Indices -> external ids (None for PAD / -1)."""
        if self._table is None:  # built once: Vocabulary.decode builds it on every call
            self._table = np.array([None, *self.bundle.vocab.ids], dtype=object)
        values = np.asarray(idx, dtype=np.int64)
        ok = (values > 0) & (values < len(self._table))
        out: list[str | None] = [None] * len(values)
        for hit in np.flatnonzero(ok).tolist():
            out[hit] = self._table[values[hit]]
        if self.extra_ids:
            for row, value in enumerate(values.tolist()):
                if out[row] is None:
                    out[row] = self.extra_ids.get(value)
        return out

    def known_history(self, hist: Sequence[int]) -> list[int]:
        """A feature-store history restricted to the items the towers know (1..N).

        The vocabulary is append-only: indices above this model's N are items it never saw.
        """
        return [int(i) for i in hist if PAD_ITEM_ID < int(i) <= self.vocab_size]

    @torch.inference_mode()
    def user_vectors(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """K interest vectors per history: float32 [B, K, D] (histories are item indices)."""
        seqs = [np.asarray(h[-self.max_len :], dtype=np.int64) for h in histories]
        ids = pad_left(seqs, self.max_len)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        batch = SeqBatch(ids, lengths, torch.zeros(len(seqs), dtype=torch.long))
        vecs = self.bundle.model.user_vectors(batch)
        return np.ascontiguousarray(vecs.float().numpy(), dtype=np.float32)

    @property
    def index_serves(self) -> bool:
        """False for a model whose scores are not an inner product (ItemKNN): rank it exactly."""
        return bool(getattr(self.bundle.model, "index_serves", True))

    def exact_top(
        self, histories: Sequence[Sequence[int]], k: int, exclude: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k trained items by the model's exact scores (``ModelBundle.score_users``).

        Returns:
            ids [B, k] int64 and scores [B, k] float32, best first; PAD, ``exclude`` and items
            beyond the vocabulary never appear (-1 / -inf pad when fewer are left).
        """
        scores = self.bundle.score_users([list(h[-self.max_len :]) for h in histories])
        return top_k_excluding(scores, k, exclude)

    @torch.inference_mode()
    def item_vectors(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Item-tower output of trained items: float32 [M, D]."""
        ids = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        vecs = self.bundle.model.item_tower(ids)
        return np.ascontiguousarray(vecs.float().numpy(), dtype=np.float32)

    def add_item(self, item_id: str, vector: np.ndarray) -> int:
        """Put a new item into the index under the next free index; returns that index."""
        with self._lock:
            new_idx = self.vocab_size + len(self.extra_ids) + 1
            add_items(self.index, vector.reshape(1, -1), np.array([new_idx], dtype=np.int64))
            self.name_item(item_id, new_idx)
        log.info("added item %s to the index as %d (%d items)", item_id, new_idx, self.num_items)
        return new_idx

    def name_item(self, item_id: str, idx: int) -> None:
        """Know ``item_id`` as index ``idx`` (an item another process added to its index)."""
        self.extra_ids[idx] = item_id
        self._known[item_id] = idx


def top_k_excluding(
    scores: np.ndarray, k: int, exclude: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores`` [B, N+1] (column 0 = PAD), ``exclude`` removed.

    Returns:
        ids [B, k] int64 and scores [B, k] float32, best first; -1 / -inf pad.
    """
    masked = np.array(scores, dtype=np.float32, copy=True)
    masked[:, 0] = -np.inf
    for row, seen in enumerate(exclude):
        if len(seen):
            masked[row, np.asarray(seen, dtype=np.int64)] = -np.inf
    width = min(k, masked.shape[1] - 1)
    top = np.argpartition(-masked, width - 1, axis=1)[:, :width]
    order = np.argsort(-np.take_along_axis(masked, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    values = np.take_along_axis(masked, top, axis=1)
    ids = np.where(np.isfinite(values), top, -1).astype(np.int64)
    pad = k - width
    if pad > 0:
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)
    return ids, values


def load_bundle(
    bundle_dir: str | Path, version: str, tag: str = "", feature_repo: str = ""
) -> ServingModel:
    """Load a bundle directory that holds ``index.faiss``.

    Raises:
        BundleMismatchError: the bundle is refused, or it has no index.
    """
    path = Path(bundle_dir)
    bundle = ModelBundle.load(path)
    if not (path / INDEX_FILE).is_file():
        raise BundleMismatchError(f"bundle {path} has no {INDEX_FILE}: run the index step first")
    index = load_index(path / INDEX_FILE)
    width = int(bundle.item_vectors().shape[1])  # the floors' vectors are not model.dim wide
    if index.d != width:
        raise BundleMismatchError(
            f"bundle {path}: index dimension {index.d} != the model's item vectors' {width}"
        )
    log.info("loaded model %s from %s (%d items, %s)", version, path, index.ntotal, type(index))
    return ServingModel(
        bundle=bundle, index=index, version=version, tag=tag, feature_repo=feature_repo
    )


def version_label(entry: ModelVersion) -> str:
    """The ``model_version`` of responses: ``v<registry version>``."""
    return f"v{entry.version}"


def load_stage(registry: Registry, stage: str = PRODUCTION) -> ServingModel:
    """Load the version in ``stage`` from the registry.

    Raises:
        RegistryError: nothing is in that stage.
    """
    entry = registry.stage(stage)
    if entry is None:
        raise RegistryError(f"no {stage} model in {registry.path}: deploy one first")
    return load_bundle(
        registry.bundle_path(entry.version),
        version_label(entry),
        tag=entry.tag,
        feature_repo=str(entry.lineage.get("feature_repo", "")),
    )
