"""The model bundle: the one artifact that crosses train -> index -> deploy -> serve.

A bundle is a directory::

    manifest.json    bundle_format, config, metrics, fingerprints, package versions, file checksums
    item_tower.pt    state dict of the item tower alone (the item embedding, attribute or content
                     tables, the content tower's id flags)
    user_tower.pt    state dict of the user side: the user tower without the shared item tower,
                     with ELCRec's intent centres and the zero-shot MAIL tower when configured
    vocab.json       the append-only vocabulary the model was trained with
    item_vecs.npy    item-tower output for every item, [N+1, D] float32 (row 0 = PAD)
    item_attrs.npy   optional attribute matrix the item tower was built with, [N+1, A] int64
    index.faiss      optional faiss index over item_vecs (added by the index step)

Bundles written before the towers were split hold one ``model.pt`` (the state dict of the whole
TwoTower) in place of the two tower files; every loader still reads them.

Three loaders: ``ModelBundle.load`` (the whole model), ``ModelBundle.load_item_tower`` (the
item side: vocabulary, ``item_tower.pt``, ``item_attrs.npy``; embeds the catalogue and new
items from content) and ``ModelBundle.load_user_tower`` (the user side: vocabulary,
``user_tower.pt``, ``item_vecs.npy``; embeds histories and new users' profiles). The user towers
read a history through the item tower, and in eval mode the item tower's output for item i is
row i of ``item_vecs.npy``; so the user side embeds history items by looking them up in that
table and never loads the item tower. Each side checks only the files it reads.

Every loader refuses a bundle of another format, with a missing file or a file whose checksum
does not match the manifest, with a ``BundleMismatchError`` that names the problem.
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
from mirec.models.item_tower import ItemTower
from mirec.models.tower_state import StateDict, join_state, split_state
from mirec.models.two_tower import TwoTower
from mirec.schema import PAD_ITEM_ID

log = logging.getLogger(__name__)

ITEM_TOWER_FILE = "item_tower.pt"
USER_TOWER_FILE = "user_tower.pt"
MODEL_FILE = "model.pt"  # the whole TwoTower's state dict, in bundles written before the split
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

    def user_vectors(self, histories: list[np.ndarray] | list[list[int]]) -> np.ndarray:
        """Interest vectors of each history, float32 [B, K, D] (see ``UserSide.user_vectors``)."""
        return _user_vectors(self.model, self.config, histories)

    def score_users(self, histories: list[np.ndarray] | list[list[int]]) -> np.ndarray:
        """Exact scores of every item for each history, float32 [B, N+1] (column 0 = PAD).

        ``histories`` hold vocabulary indices, oldest first; the last ``data.max_len`` count.
        This is how serving ranks a model that an index cannot serve (``model.index_serves``
        False: the ItemKNN floor); for the others it equals the index's max inner product.
        """
        return _score_users(self.model, self.config, histories)

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
        """Write the bundle to ``directory`` (created; existing bundle files are replaced).

        Args:
            directory: the bundle directory.

        Returns:
            The directory written.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        item_state, user_state = split_state(self.model)
        torch.save(item_state, out / ITEM_TOWER_FILE)
        torch.save(user_state, out / USER_TOWER_FILE)
        (out / MODEL_FILE).unlink(missing_ok=True)  # an older bundle's, no longer listed
        self.vocab.save(out / VOCAB_FILE)
        np.save(out / ITEM_VECS_FILE, self.item_vectors())
        names = [ITEM_TOWER_FILE, USER_TOWER_FILE, VOCAB_FILE, ITEM_VECS_FILE]
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
        """Load and check a whole bundle (both towers, either layout).

        Args:
            directory: the bundle directory.

        Returns:
            The bundle, its model in eval mode.

        Raises:
            BundleMismatchError: the bundle is refused; the message gives the reason.
        """
        src = Path(directory)
        manifest = read_manifest(src)
        weights = [ITEM_TOWER_FILE, USER_TOWER_FILE] if _is_split(manifest) else [MODEL_FILE]
        config, vocab = _open(src, manifest, sorted({*manifest.files, *weights}))
        attrs = _attributes(src, manifest)
        model = build_model(config.model, vocab.size, _attr_tensor(attrs), config.data.max_len)
        if _is_split(manifest):
            state = join_state(model, _read_state(src, ITEM_TOWER_FILE), _user_state(src, model))
        else:
            state = _read_state(src, MODEL_FILE)
        _load_state(src, model, state)
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

    @staticmethod
    def load_item_tower(directory: str | Path) -> ItemSide:
        """Load the item side alone: what embeds the catalogue and new items.

        Reads and checks the manifest, ``vocab.json``, ``item_tower.pt`` (``model.pt`` in an
        older bundle) and ``item_attrs.npy`` when the bundle has it; never ``user_tower.pt``.

        Args:
            directory: the bundle directory.

        Returns:
            The item side, its tower in eval mode.

        Raises:
            BundleMismatchError: the bundle is refused; the message gives the reason.
        """
        src = Path(directory)
        manifest = read_manifest(src)
        weights = _side_file(manifest, ITEM_TOWER_FILE)
        listed_attrs = [ITEM_ATTRS_FILE] if ITEM_ATTRS_FILE in manifest.files else []
        config, vocab = _open(src, manifest, [VOCAB_FILE, weights, *listed_attrs])
        attrs = _attributes(src, manifest)
        model = build_model(config.model, vocab.size, _attr_tensor(attrs), config.data.max_len)
        tower = model.item_tower
        _load_state(src, tower, _side_state(src, manifest, model, ITEM_TOWER_FILE))
        return ItemSide(tower=tower, config=config, vocab=vocab, path=src)

    @staticmethod
    def load_user_tower(directory: str | Path) -> UserSide:
        """Load the user side alone: what embeds histories and new users' profiles.

        Reads and checks the manifest, ``vocab.json``, ``user_tower.pt`` (``model.pt`` in an
        older bundle) and ``item_vecs.npy``; never ``item_tower.pt``. The history items are
        embedded by row lookup in the bundle's item vectors (the item tower's eval-mode output),
        so the user vectors equal the whole model's up to float rounding.

        Args:
            directory: the bundle directory.

        Returns:
            The user side, its model in eval mode.

        Raises:
            BundleMismatchError: the bundle is refused; the message gives the reason.
        """
        src = Path(directory)
        manifest = read_manifest(src)
        weights = _side_file(manifest, USER_TOWER_FILE)
        config, vocab = _open(src, manifest, [VOCAB_FILE, weights, ITEM_VECS_FILE])
        model = _table_model(config, vocab.size)
        user_state = _side_state(src, manifest, model, USER_TOWER_FILE)
        table = {"embedding.weight": torch.from_numpy(np.load(src / ITEM_VECS_FILE))}
        _load_state(src, model, join_state(model, table, user_state))
        return UserSide(model=model, config=config, vocab=vocab, path=src)


@dataclass
class ItemSide:
    """A bundle's item tower without its user tower (``ModelBundle.load_item_tower``).

    Attributes:
        tower: the trained item tower (id, id + attributes, content, or a floor's column).
        config: the training config.
        vocab: the vocabulary; item index i is ``vocab.ids[i - 1]``.
        path: the bundle directory.
    """

    tower: ItemTower
    config: TrainConfig
    vocab: Vocabulary
    path: Path | None = None

    @torch.no_grad()
    def item_vectors(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Item-tower output, float32 [N+1, D] for every item (row 0 = PAD) or [M, D].

        Args:
            indices: item indices in 0..N, or None for every item.

        Returns:
            The vectors, equal to ``item_vecs.npy`` (rows ``indices``).
        """
        self.tower.eval()
        if indices is None:
            vecs = self.tower.all_items()
        else:
            vecs = self.tower(torch.as_tensor(np.asarray(indices, dtype=np.int64)))
        return vecs.detach().cpu().numpy().astype(np.float32)

    def item_vectors_from_content(
        self, attributes: Sequence[Sequence[str]], texts: Sequence[str] | None = None
    ) -> np.ndarray:
        """New items' vectors from content alone: float32 [M, D] (a content item tower only).

        Args:
            attributes: M lists of attribute tokens.
            texts: M item texts, or None for none.

        Returns:
            The vectors, as ``ModelBundle.item_vectors_from_content`` gives them.
        """
        cfg = self.config.model
        return cold_start.item_vectors_from_content(self.tower, cfg, attributes, texts)


@dataclass
class UserSide:
    """A bundle's user tower without its item tower (``ModelBundle.load_user_tower``).

    Attributes:
        model: a TwoTower whose user tower (with its intent centres, its zero-shot tower) holds
            the trained weights and whose item tower is a fixed table of the bundle's item
            vectors; so ``model.item_vectors()`` and ``model.score_all`` work too.
        config: the training config.
        vocab: the vocabulary the histories are encoded with.
        path: the bundle directory.
    """

    model: TwoTower
    config: TrainConfig
    vocab: Vocabulary
    path: Path | None = None

    @property
    def index_serves(self) -> bool:
        """False for a model whose scores are not an inner product (ItemKNN)."""
        return bool(getattr(self.model, "index_serves", True))

    def user_vectors(self, histories: list[np.ndarray] | list[list[int]]) -> np.ndarray:
        """Interest vectors of each history, float32 [B, K, D].

        Args:
            histories: vocabulary indices, oldest first; the last ``data.max_len`` count.

        Returns:
            The vectors ``ModelBundle.user_vectors`` gives, up to float rounding.
        """
        return _user_vectors(self.model, self.config, histories)

    def score_users(self, histories: list[np.ndarray] | list[list[int]]) -> np.ndarray:
        """Exact scores of every item for each history, float32 [B, N+1] (column 0 = PAD).

        Args:
            histories: vocabulary indices, oldest first.

        Returns:
            The scores ``ModelBundle.score_users`` gives, up to float rounding.
        """
        return _score_users(self.model, self.config, histories)

    def user_vectors_from_profile(
        self, profile: Sequence[str], recent_items: Sequence[str] = ()
    ) -> np.ndarray:
        """A new user's interest vectors from profile tokens and recent item ids: [K, D].

        Args:
            profile: profile tokens (``"gender=F"``, ...); needs ``model.zero_shot.enabled``.
            recent_items: external ids of the user's events, oldest first.

        Returns:
            The vectors ``ModelBundle.user_vectors_from_profile`` gives.
        """
        items = cold_start.known_items(self.vocab, recent_items)
        return cold_start.user_vectors_from_profile(self.model, self.config.model, profile, items)


def _is_split(manifest: BundleManifest) -> bool:
    """True for the layout with one file per tower; False for an older ``model.pt`` bundle."""
    return ITEM_TOWER_FILE in manifest.files or USER_TOWER_FILE in manifest.files


def _open(
    src: Path, manifest: BundleManifest, names: Sequence[str]
) -> tuple[TrainConfig, Vocabulary]:
    """Check the files ``names``, then read the config and the vocabulary.

    Args:
        src: the bundle directory.
        manifest: its manifest.
        names: the files the caller reads, each checked against the manifest's checksum.

    Returns:
        (config, vocabulary).

    Raises:
        BundleMismatchError: a file is unlisted, missing or corrupt, the config is invalid or
            the vocabulary is not the manifest's.
    """
    verify_files(src, manifest, names)
    try:
        config = from_dict(manifest.config)
    except ConfigError as exc:
        raise BundleMismatchError(f"bundle {src}: manifest config is invalid: {exc}") from exc
    vocab = Vocabulary.load(src / VOCAB_FILE)
    if vocab.fingerprint != manifest.vocab_fingerprint:
        raise BundleMismatchError(f"bundle {src}: vocabulary does not match the manifest")
    return config, vocab


def _attributes(src: Path, manifest: BundleManifest) -> np.ndarray | None:
    """The bundle's attribute (or content) matrix, or None when it has none."""
    return np.load(src / ITEM_ATTRS_FILE) if ITEM_ATTRS_FILE in manifest.files else None


def _read_state(src: Path, name: str) -> StateDict:
    """A state dict file of the bundle.

    Raises:
        BundleMismatchError: the file does not load as a state dict.
    """
    try:
        state = torch.load(src / name, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise BundleMismatchError(f"bundle {src}: {name} does not load: {exc}") from exc
    if not isinstance(state, dict):
        raise BundleMismatchError(f"bundle {src}: {name} is not a state dict")
    return state


def _side_file(manifest: BundleManifest, name: str) -> str:
    """The file holding one side's weights: its own (``name``), or an older bundle's model.pt."""
    return name if _is_split(manifest) else MODEL_FILE


def _side_state(src: Path, manifest: BundleManifest, model: TwoTower, name: str) -> StateDict:
    """One side's state dict (``name``: the item or the user tower file), from its own file or
    from its part of an older bundle's ``model.pt``."""
    if not _is_split(manifest):
        item, user = split_state(model, _read_state(src, MODEL_FILE))
        return item if name == ITEM_TOWER_FILE else user
    return _read_state(src, name) if name == ITEM_TOWER_FILE else _user_state(src, model)


def _user_state(src: Path, model: TwoTower) -> StateDict:
    """``user_tower.pt``, refused when it holds an entry of the item tower.

    Raises:
        BundleMismatchError: the file does not load or holds item-tower keys.
    """
    state = _read_state(src, USER_TOWER_FILE)
    user_keys = split_state(model, state)[1]
    stray = sorted(k for k in state if k not in user_keys)
    if stray:
        raise BundleMismatchError(f"bundle {src}: {USER_TOWER_FILE} holds item-tower keys {stray}")
    return state


def _load_state(src: Path, module: torch.nn.Module, state: StateDict) -> None:
    """Load ``state`` strictly into ``module`` and put it in eval mode.

    Raises:
        BundleMismatchError: keys or shapes do not match the module the config builds.
    """
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:
        raise BundleMismatchError(f"bundle {src}: model weights do not load: {exc}") from exc
    module.eval()


def _table_model(config: TrainConfig, num_items: int) -> TwoTower:
    """The model of ``config`` with a plain id item tower, to hold the item vectors as a table.

    A plain ``ItemTower`` without attributes embeds item i as row i of its table, so loaded with
    ``item_vecs.npy`` it gives the history items the vectors the trained item tower gives them.
    """
    plain = config.model.model_copy(update={"item_tower": "id", "use_attributes": False})
    return build_model(plain, num_items, None, config.data.max_len)


def _history_batch(config: TrainConfig, histories: list[np.ndarray] | list[list[int]]) -> SeqBatch:
    """Histories of vocabulary indices, left-padded to ``data.max_len``, as a SeqBatch."""
    hist = pad_left(histories, config.data.max_len)
    rows = torch.zeros(hist.shape[0], dtype=torch.long)
    return SeqBatch(hist, (hist != PAD_ITEM_ID).sum(1), rows)


@torch.no_grad()
def _user_vectors(
    model: TwoTower, config: TrainConfig, histories: list[np.ndarray] | list[list[int]]
) -> np.ndarray:
    """``model.user_vectors`` of the histories in eval mode, float32 [B, K, D]."""
    model.eval()
    vecs = model.user_vectors(_history_batch(config, histories))
    return vecs.float().cpu().numpy()


@torch.no_grad()
def _score_users(
    model: TwoTower, config: TrainConfig, histories: list[np.ndarray] | list[list[int]]
) -> np.ndarray:
    """``model.score_all`` of the histories in eval mode, float32 [B, N+1]."""
    model.eval()
    return model.score_all(_history_batch(config, histories)).float().cpu().numpy()


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
