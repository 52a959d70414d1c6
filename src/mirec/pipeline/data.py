"""Data steps of the retraining pipeline: validate events, build features, the training set.

Each function takes paths (the components' artifact paths) and plain values and returns a
``StepResult``. A validation failure raises ``DataValidationError`` whose message carries the
quarantine report or the Great Expectations Data Docs path, so the run stops before training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.config import from_dict
from mirec.data.vocab import Vocabulary
from mirec.errors import ConfigError
from mirec.pipeline.io import (
    EVENTS_FILE,
    ITEMS_FILE,
    USERS_FILE,
    StepResult,
    catalog_from_ids,
    is_dataset_dir,
    read_dataset_dir,
    read_raw_dataset_dir,
    write_dataset_dir,
)
from mirec.schema import (
    BEHAVIOUR_EVENT_TYPES,
    EVENT_TS,
    EVENT_TYPE,
    FEAST_TS,
    HIST_LEN,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    MIN_EVENT_TS,
    SEQ_POS,
    TARGET_ITEM_IDS,
    USER_ATTRIBUTES,
    USER_ID,
)

if TYPE_CHECKING:
    from mirec.features.repo import StoreSettings

log = logging.getLogger(__name__)

TRAINING_SET_FILE = "training_set.parquet"
STORE_SETTINGS_FILE = "store_settings.json"  # how the Feast repo was rendered (re-rendered later)
LOADER_STAGE = "load"  # quarantine sub-folder of rows a format loader set aside


def _write_loader_rejects(bad: pd.DataFrame, quarantine_dir: Path) -> None:
    if bad.empty:
        return
    out = quarantine_dir / "quarantine" / LOADER_STAGE
    out.mkdir(parents=True, exist_ok=True)
    frame = bad.astype({c: str for c in bad.columns if bad[c].dtype == object})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), str(out / "part-0.parquet"))


def read_source(
    source: str, quarantine_dir: Path, max_bad_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """(raw events, items, users, rows a loader already set aside) of the pipeline's source.

    A dataset directory or a canonical events parquet is read as stored (every row checks in
    the quarantine); any other path goes through ``load_dataset``, whose row rules are the
    same, and its rejected rows are written to ``<quarantine_dir>/quarantine/load/``.
    """
    from mirec.data.loaders import load_dataset
    from mirec.validation.quarantine import read_events_lenient

    path = Path(source)
    if is_dataset_dir(path):
        _, items, users = read_raw_dataset_dir(path)
        return read_events_lenient(path / EVENTS_FILE), items, users, 0
    if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        events = read_events_lenient(path)
        items = catalog_from_ids(events[ITEM_ID], ITEM_ID, ITEM_ATTRIBUTES)
        users = catalog_from_ids(events[USER_ID], USER_ID, USER_ATTRIBUTES)
        return events, items, users, 0
    dataset = load_dataset(source, max_bad_fraction=max_bad_fraction)
    _write_loader_rejects(dataset.report.bad_rows, quarantine_dir)
    rejected = dataset.report.rows_read - dataset.report.rows_kept
    return dataset.events, dataset.items, dataset.users, rejected


def validate_events(
    source: str,
    events_dir: str | Path,
    quarantine_dir: str | Path,
    docs_dir: str | Path,
    *,
    max_bad_fraction: float,
    now: datetime | None = None,
) -> StepResult:
    """Quarantine bad rows, run the ``events`` suite, write the clean dataset directory.

    Raises:
        DataValidationError: too many quarantined rows (message: the quarantine summary and
            report path) or a failed expectation (message: the failures and Data Docs page).
        DataFormatError: the source cannot be read.
    """
    from mirec.validation import quarantine_events_pandas, require, validate_table

    quarantine = Path(quarantine_dir)
    events, items, users, rejected = read_source(source, quarantine, max_bad_fraction)
    clean, report = quarantine_events_pandas(
        events,
        now=now or datetime.now(UTC),
        epoch=MIN_EVENT_TS,
        out_dir=quarantine,
        max_bad_fraction=max_bad_fraction,
    )
    outcome = validate_table(clean, "events", docs_dir=docs_dir)
    require(outcome)
    write_dataset_dir(clean, items, users, events_dir)
    rows_read = report.rows_in + rejected
    metrics = {
        "rows_read": float(rows_read),
        "rows_kept": float(report.rows_clean),
        "rows_quarantined": float(rows_read - report.rows_clean),
        "bad_fraction": (rows_read - report.rows_clean) / rows_read if rows_read else 0.0,
        "users": float(clean[USER_ID].nunique()),
        "items": float(clean[ITEM_ID].nunique()),
        "suite_success": float(outcome.success),
    }
    metadata = {
        "source": str(source),
        "bad_by_reason": dict(report.bad_by_reason),
        "quarantine_path": report.quarantine_path or "",
        "data_docs": outcome.docs_path or "",
    }
    return StepResult(metrics=metrics, metadata=metadata)


def seed_vocabulary(features_dir: Path, registry_root: str | Path) -> int:
    """Start the feature build from production's vocabulary (append-only); returns its size."""
    from mirec.features.repo import Layout
    from mirec.pipeline.model import production_bundle

    bundle, version = production_bundle(registry_root)
    if bundle is None:
        return 0
    target = Layout(features_dir).vocab
    target.parent.mkdir(parents=True, exist_ok=True)
    bundle.vocab.save(target)
    log.info("vocabulary seeded from production v%s (%d items)", version, bundle.vocab.size)
    return bundle.vocab.size


def build_features(
    events_dir: str | Path,
    train_config: dict[str, Any],
    registry_root: str | Path,
    features_dir: str | Path,
    feature_store: dict[str, Any] | None = None,
) -> StepResult:
    """Spark feature build into a Feast repository, then Feast apply + materialize.

    The vocabulary extends production's, so item indices keep their meaning across versions.
    """
    from mirec.features.build import FeatureBuildConfig
    from mirec.features.build import build_features as spark_build

    cfg = from_dict(train_config)
    root = Path(features_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    seeded = seed_vocabulary(root, registry_root)
    src = Path(events_dir)
    build_cfg = FeatureBuildConfig(
        hist_len=cfg.data.max_len, protocols=(cfg.data.protocol,), data=cfg.data
    )
    result = spark_build(
        src / EVENTS_FILE,
        root,
        items_path=src / ITEMS_FILE,
        users_path=src / USERS_FILE,
        cfg=build_cfg,
    )
    online = publish_features(root, feature_store)
    manifest = result.manifest
    counts = manifest.get("counts", {})
    metrics = {f"{k}": float(v) for k, v in counts.items() if isinstance(v, int | float)}
    metrics["vocab_size"] = float(manifest["vocab_size"])
    metrics["vocab_seeded_from_production"] = float(seeded)
    metrics["spark_seconds"] = float(sum(manifest.get("seconds", {}).values()))
    metadata = {
        "vocab_fingerprint": manifest["vocab_fingerprint"],
        "training_examples": manifest.get("training_examples", {}),
        "build_ts": manifest["build_ts"],
        "online": online,
    }
    return StepResult(metrics=metrics, metadata=metadata)


def store_settings(feature_store: dict[str, Any] | None) -> StoreSettings:
    """``StoreSettings`` from the pipeline's ``feature_store`` parameter (empty: local SQLite).

    Keys: ``project``, ``online_store`` ("sqlite" | "redis"), ``redis_url``, ``registry``
    ("sqlite" | a postgresql:// URL).

    Raises:
        ConfigError: an unknown key or online store.
    """
    from mirec.features.repo import StoreSettings

    given = {k: str(v) for k, v in (feature_store or {}).items()}
    known = sorted(StoreSettings.__dataclass_fields__)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"feature_store has unknown keys {unknown}; use {known}")
    default = StoreSettings()
    online = given.get("online_store", default.online_store)
    if online not in ("sqlite", "redis"):
        raise ConfigError(f"feature_store.online_store must be 'sqlite' or 'redis', got {online!r}")
    return StoreSettings(
        project=given.get("project", default.project),
        online_store="redis" if online == "redis" else "sqlite",
        redis_url=given.get("redis_url", default.redis_url),
        registry=given.get("registry", default.registry),
    )


def publish_features(root: Path, feature_store: dict[str, Any] | None) -> dict[str, Any]:
    """Render the Feast repository, apply its definitions and materialize the latest rows."""
    from mirec.features import feast_io
    from mirec.features.repo import render_repo

    settings = store_settings(feature_store)
    render_repo(root, settings)
    (root / STORE_SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(settings)))
    feast_io.apply(root)
    feast_io.materialize(root)
    return {"repo": str(root), "online_store": settings.online_store, "project": settings.project}


def entity_rows(events: pd.DataFrame, vocab: Vocabulary) -> pd.DataFrame:
    """One training row per behaviour event that has an earlier one: who, when, which item.

    Returns:
        [R] ``USER_ID``, ``FEAST_TS`` (the event's time: features must come from before it),
        ``TARGET_ITEM_IDS`` (the event's item index, as a one-item list).
    """
    rows = events[events[EVENT_TYPE].isin(BEHAVIOUR_EVENT_TYPES)]
    rows = rows.sort_values([USER_ID, EVENT_TS, SEQ_POS], kind="stable")
    rows = rows[rows.groupby(USER_ID).cumcount() >= 1]
    targets = vocab.encode(rows[ITEM_ID].astype(str).to_numpy())
    return pd.DataFrame(
        {
            USER_ID: rows[USER_ID].astype(str).to_numpy(),
            FEAST_TS: rows[EVENT_TS].to_numpy(),
            TARGET_ITEM_IDS: [[int(t)] for t in targets],
        }
    )


def make_training_set(
    features_dir: str | Path, events_dir: str | Path, out_dir: str | Path
) -> StepResult:
    """The point-in-time training frame from Feast's offline store, as one parquet file.

    Every behaviour event with an earlier one becomes a row whose user features are read as of
    the event's time (strictly earlier events only): what the model may see, never later.
    """
    from mirec.features import feast_io
    from mirec.features.repo import Layout, render_repo

    root = Path(features_dir).resolve()
    saved = json.loads((root / STORE_SETTINGS_FILE).read_text())
    render_repo(root, store_settings(saved))  # paths of this machine (artifacts move on KFP)
    vocab = Vocabulary.load(Layout(root).vocab)
    entities = entity_rows(read_dataset_dir(events_dir).events, vocab)
    frame = feast_io.get_training_frame(feast_io.open_store(root), entities)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / TRAINING_SET_FILE, index=False)
    lengths = frame[HIST_LEN].to_numpy() if HIST_LEN in frame.columns else np.zeros(0)
    metrics = {
        "rows": float(len(frame)),
        "users": float(frame[USER_ID].nunique()),
        "mean_hist_len": float(lengths.mean()) if len(lengths) else 0.0,
        "empty_histories": float((lengths == 0).sum()),
    }
    return StepResult(metrics=metrics, metadata={"columns": list(frame.columns)})


def validate_training_set(
    training_set_dir: str | Path,
    features_dir: str | Path,
    train_config: dict[str, Any],
    docs_dir: str | Path,
) -> StepResult:
    """Run the ``training_frame`` suite (lengths, index ranges against the vocabulary).

    Raises:
        DataValidationError: a failed expectation; the message names the Data Docs page.
    """
    from mirec.features.repo import Layout
    from mirec.validation import SuiteParams, require, validate_table

    cfg = from_dict(train_config)
    vocab = Vocabulary.load(Layout(Path(features_dir)).vocab)
    frame = pd.read_parquet(Path(training_set_dir) / TRAINING_SET_FILE)
    params = SuiteParams(max_len=cfg.data.max_len, vocab_size=vocab.size)
    outcome = validate_table(frame, "training_frame", params=params, docs_dir=docs_dir)
    require(outcome)
    metrics = {"rows": float(len(frame)), "suite_success": float(outcome.success)}
    return StepResult(metrics=metrics, metadata={"data_docs": outcome.docs_path or ""})
