"""A small trained, indexed and registered model with its Feast repository, built once.

Synthetic users (planted interest clusters) -> Spark feature build -> Feast apply and
materialize (SQLite online store) -> one training epoch on the feature build's vocabulary ->
exact faiss index -> registry version 1 in production, its lineage naming the repository.
BentoML's store lives in a temporary BENTOML_HOME.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mirec.bundle import INDEX_FILE, ModelBundle, attach_file
from mirec.config import from_dict
from mirec.data.events import Dataset
from mirec.data.synthetic import generate
from mirec.data.vocab import Vocabulary
from mirec.features import feast_io
from mirec.features.build import build_dataset
from mirec.features.repo import Layout, StoreSettings, render_repo
from mirec.index import build_index, save_index
from mirec.registry import PRODUCTION, Registry

TRAIN_CONFIG = {
    "data": {"protocol": "B", "max_len": 20},
    "model": {"name": "comirec_sa", "dim": 16, "num_interests": 2, "dropout": 0.0},
    "loss": {"kind": "sampled_softmax", "num_negatives": 32},
    "optim": {"max_epochs": 1, "batch_size": 128, "num_threads": 1},
}


@dataclass(frozen=True)
class Deployment:
    """What the serving tests serve."""

    registry_root: Path
    feature_root: Path  # the built feature workdir (Spark outputs, vocabulary)
    repo: Path  # the rendered SQLite Feast repository
    dataset: Dataset
    vocab: Vocabulary


def unique(prefix: str) -> str:
    """A name no other test run uses (Feast projects, Redis keys)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _index_bundle(bundle_dir: Path) -> None:
    bundle = ModelBundle.load(bundle_dir)
    vecs = bundle.item_vectors()[1:]
    index, info = build_index(vecs, np.arange(1, len(vecs) + 1), bundle.config.index)
    save_index(index, bundle_dir / INDEX_FILE)
    attach_file(bundle_dir, INDEX_FILE, extra={"index": info.to_dict()})


def register_production(root: Path, result: Any, cfg: Any, repo: Path) -> Path:
    """Register a trained (and indexed) bundle in the registry at ``root`` as production;
    returns the bundle's path in the registry."""
    registry = Registry(root)
    entry = registry.register(
        result.bundle_dir,
        metrics=result.metrics,
        data_fingerprint="serving-tests",
        config=cfg.model_dump(mode="json"),
        code_version="tests",
        lineage={"feature_repo": str(repo)},
    )
    registry.set_stage(PRODUCTION, entry.version)
    return registry.bundle_path(entry.version)


@contextmanager
def serve_copy(
    deployment: Deployment, tmp_path: Path, prefix: str, **env: str
) -> Iterator[tuple[str, str]]:
    """``bentoml serve`` of the deployment over a private copy of its feature repository (a
    SQLite online store of its own) and a SQLite event store; yields (url, event store URL)."""
    from tests.serving.servers import bentoml_serve, free_port

    root = tmp_path / "features"
    shutil.copytree(deployment.feature_root, root)
    repo = render_repo(root, StoreSettings(project=unique(prefix)))
    feast_io.apply(repo)
    feast_io.materialize(repo)
    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    env = {
        "BENTOML_HOME": str(deployment.registry_root.parent / "bentoml"),
        "MIREC_REGISTRY": str(deployment.registry_root),
        "MIREC_FEATURE_REPO": str(repo),
        "MIREC_EVENT_STORE": store_url,
        "OMP_NUM_THREADS": "1",
        **env,
    }
    try:
        with bentoml_serve(
            "serving.service:Recommender", free_port(), env, tmp_path / "serve.log"
        ) as url:
            yield url, store_url
    finally:
        feast_io.teardown(repo)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Build, train, index and register once per session."""
    from mirec.features.spark_session import get_spark
    from mirec.training import train

    base = tmp_path_factory.mktemp("serving")
    old_home = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(base / "bentoml")
    spark = get_spark("local[2]", driver_memory="2g", conf={"spark.sql.shuffle.partitions": "4"})
    dataset = generate(num_users=150, num_items=90, num_clusters=3, mean_len=12, seed=5)
    root = base / "features"
    build_dataset(dataset, root, spark=spark, now=datetime.now(UTC) - timedelta(minutes=1))
    repo = render_repo(root, StoreSettings(project=unique("t_serve")))
    feast_io.apply(repo)
    feast_io.materialize(repo)
    vocab = Vocabulary.load(Layout(root).vocab)
    cfg = from_dict(TRAIN_CONFIG)
    result = train(cfg, dataset, base / "run", vocab=vocab, progress=False)
    _index_bundle(result.bundle_dir)
    register_production(base / "registry", result, cfg, repo)
    try:
        yield Deployment(base / "registry", root, repo, dataset, vocab)
    finally:
        feast_io.teardown(repo)
        if old_home is None:
            os.environ.pop("BENTOML_HOME", None)
        else:
            os.environ["BENTOML_HOME"] = old_home
