"""Data steps of the retraining pipeline: validate events, build features, the training set.

Each function takes paths (the components' artifact paths) and plain values and returns a
``StepResult``. A validation failure raises ``DataValidationError`` whose message carries the
quarantine report or the Great Expectations Data Docs path, so the run stops before training.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mirec.config import from_dict
from mirec.data.vocab import Vocabulary, sort_ids
from mirec.pipeline.io import (
    EVENTS_FILE,
    ITEMS_FILE,
    USERS_FILE,
    StepResult,
    catalog_from_ids,
    is_dataset_dir,
    read_raw_dataset_dir,
    write_dataset_dir,
)
from mirec.schema import (
    ITEM_ATTRIBUTES,
    ITEM_ID,
    MIN_EVENT_TS,
    USER_ATTRIBUTES,
    USER_ID,
)

if TYPE_CHECKING:
    from mirec.features.repo import StoreSettings

log = logging.getLogger(__name__)

TRAINING_SET_FILE = "training_set.parquet"


def read_source(
    source: str, columns: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame, pd.DataFrame]:
    """(raw events, loader rejects or None, items, users) of the pipeline's source.

    A dataset directory or a canonical events parquet is read as stored; any other path is
    parsed by ``mirec.data.loaders.read_raw_dataset`` (with the column mapping), its rows
    keeping their source lines and the lines it could not parse coming back as rejects. No row
    rule has run yet: the quarantine applies them all, once. A loaded source's catalogs hold
    only the ids with attributes (``validate_events`` adds the clean events' ids).
    """
    from mirec.data.loaders import catalogs, read_raw_dataset
    from mirec.validation.quarantine import read_events_lenient

    path = Path(source)
    if is_dataset_dir(path):
        _, items, users = read_raw_dataset_dir(path)
        return read_events_lenient(path / EVENTS_FILE), None, items, users
    if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        events = read_events_lenient(path)
        items = catalog_from_ids(events[ITEM_ID].iloc[:0], ITEM_ID, ITEM_ATTRIBUTES)
        users = catalog_from_ids(events[USER_ID].iloc[:0], USER_ID, USER_ATTRIBUTES)
        return events, None, items, users
    raw = read_raw_dataset(source, columns)
    items, users = catalogs(raw, raw.events.iloc[:0])
    return raw.events, raw.rejects, items, users


def validate_events(
    source: str,
    events_dir: str | Path,
    quarantine_dir: str | Path,
    docs_dir: str | Path,
    *,
    max_bad_fraction: float,
    columns: str = "",
    now: datetime | None = None,
) -> StepResult:
    """Quarantine bad rows, run the ``events`` suite, write the clean dataset directory.

    Every rejected row (loader rejects and rule rejects) goes to the one quarantine,
    ``<quarantine_dir>/quarantine/raw_events/`` with its report (``mirec.validation``).

    Args:
        source: the event log (see ``read_source``).
        events_dir, quarantine_dir, docs_dir: the step's output folders.
        max_bad_fraction: the tolerance (the pipeline passes the config's
            ``data.max_bad_fraction`` unless overridden).
        columns: a column mapping for table sources, ``"event_ts=timestamp,..."``.
        now: later events are ``future_timestamp`` (default: now).

    Raises:
        DataValidationError: too many quarantined rows (message: the quarantine summary and
            report path) or a failed expectation (message: the failures and Data Docs page).
        DataFormatError: the source cannot be read.
    """
    from mirec.data.columns import parse_columns
    from mirec.validation import quarantine_events_pandas, require, validate_table

    quarantine = Path(quarantine_dir)
    events, rejects, items, users = read_source(source, parse_columns(columns))
    clean, report = quarantine_events_pandas(
        events,
        now=now or datetime.now(UTC),
        epoch=MIN_EVENT_TS,
        out_dir=quarantine,
        max_bad_fraction=max_bad_fraction,
        rejects=rejects,
    )
    items = _with_event_ids(items, clean[ITEM_ID], ITEM_ID, ITEM_ATTRIBUTES)
    users = _with_event_ids(users, clean[USER_ID], USER_ID, USER_ATTRIBUTES)
    outcome = validate_table(clean, "events", docs_dir=docs_dir)
    require(outcome)
    write_dataset_dir(clean, items, users, events_dir)
    metrics = {
        "rows_read": float(report.rows_in),
        "rows_kept": float(report.rows_clean),
        "rows_quarantined": float(report.rows_bad),
        "bad_fraction": report.bad_fraction,
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


def _with_event_ids(
    catalog: pd.DataFrame, ids: pd.Series, id_column: str, attr_column: str
) -> pd.DataFrame:
    """``catalog`` plus a row (no attributes) for every id of the clean events it lacks,
    in vocabulary order."""
    missing = pd.Index(ids.astype(str).unique()).difference(catalog[id_column].astype(str))
    if missing.empty:
        return catalog
    extra = catalog_from_ids(pd.Series(missing, dtype=object), id_column, attr_column)
    if catalog.empty:
        return extra
    both = pd.concat([catalog, extra], ignore_index=True)
    order = {value: rank for rank, value in enumerate(sort_ids(both[id_column].astype(str)))}
    return both.iloc[both[id_column].astype(str).map(order).argsort()].reset_index(drop=True)


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

    Raises:
        ConfigError: an unknown field or a bad value, named.
    """
    from mirec.features.repo import StoreSettings

    return StoreSettings.from_parameter(feature_store)


def publish_features(root: Path, feature_store: dict[str, Any] | None) -> dict[str, Any]:
    """Render the Feast repository, apply its definitions and materialize the latest rows."""
    from mirec.features import feast_io
    from mirec.features.repo import render_repo

    settings = store_settings(feature_store)
    render_repo(root, settings)
    settings.write(root)
    feast_io.apply(root)
    feast_io.materialize(root)
    return {"repo": str(root), "online_store": settings.online_store, "project": settings.project}


def make_training_set(
    features_dir: str | Path,
    events_dir: str | Path,
    out_dir: str | Path,
    train_config: dict[str, Any],
) -> StepResult:
    """The protocol's training examples with the user features Feast serves, as parquet.

    One row per training example of ``data.protocol`` (held-out validation and test targets
    are not among them): the target event and, read point-in-time from the feature store's
    ``user_tower_v1`` views at the event's stamp, the history before it (see
    ``mirec.features.training_set``). The set is registered with Feast as a saved dataset.
    """
    from mirec.features.repo import StoreSettings, render_repo
    from mirec.features.training_set import build_training_set

    cfg = from_dict(train_config)
    root = Path(features_dir).resolve()
    render_repo(root, StoreSettings.read(root))  # paths of this machine (artifacts move on KFP)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = build_training_set(
        root, Path(events_dir) / EVENTS_FILE, out / TRAINING_SET_FILE, cfg.data
    )
    metrics = {
        "rows": float(result.rows),
        "users": float(result.users),
        "mean_hist_len": result.mean_hist_len,
        "empty_histories": float(result.empty_histories),
        "seconds": result.seconds,
    }
    metadata = {
        "protocol": cfg.data.protocol,
        "saved_dataset": result.saved_dataset,
        "source": "Feast user_tower_v1, point-in-time",
    }
    return StepResult(metrics=metrics, metadata=metadata)


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
