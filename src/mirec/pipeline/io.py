"""The on-disk layout of the datasets and results that pipeline steps pass to each other.

A *dataset directory* holds one dataset as three parquet files::

    events.parquet   canonical event log (``mirec.data.events``), UTC TIMESTAMP_MICROS
    items.parquet    item catalog: ITEM_ID + ITEM_ATTRIBUTES (+ ITEM_TEXT)
    users.parquet    user profiles: USER_ID + USER_ATTRIBUTES

It is what ``mirec pipeline demo-data`` writes, what the pipeline's ``source`` may point at,
and what ``validate_events`` hands to the later steps (its clean copy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.data.events import (
    Dataset,
    LoadReport,
    bad_rows_frame,
    read_events_parquet,
    write_events_parquet,
)
from mirec.data.loaders import EVENTS_FILE, ITEMS_FILE, USERS_FILE, read_side_table
from mirec.data.vocab import sort_ids
from mirec.records import Record
from mirec.schema import ITEM_ATTRIBUTES, ITEM_ID, USER_ATTRIBUTES, USER_ID


@dataclass(frozen=True)
class StepResult:
    """What a step reports to its component: numbers for KFP Metrics, facts for metadata.

    Steps whose facts another step or the run summary reads put a typed record's ``dump()`` in
    ``metadata`` (``IndexedModel``); the reader parses it back with the record's ``parse``.

    Attributes:
        metrics: flat ``name -> float`` logged with ``Metrics.log_metric``.
        metadata: JSON-ready facts stored on the step's main output artifact.
        decision: the string a pipeline branches on (the gate's ``"pass"`` / ``"fail"``), or "".
    """

    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    decision: str = ""


class IndexRecord(Record):
    """The index step's facts (``mirec.index.IndexInfo``), in the manifest and KFP metadata.

    Attributes:
        kind: "flat" | "hnsw" | "ivf".
        params: the index's parameters (``fallback_from`` after a fallback).
        num_items: N, the indexed items.
        dim: D.
        recall_at_k: recall@k against exact search (None: ANN built without query sample).
        k: the k of ``recall_at_k``.
        fell_back: True when the ANN index missed the recall gate (exact search is used).
        build_seconds: wall time of the build and the recall check.
    """

    kind: Literal["flat", "hnsw", "ivf"]
    params: dict[str, Any]
    num_items: int
    dim: int
    recall_at_k: float | None
    k: int
    fell_back: bool
    build_seconds: float


class IndexedModel(Record):
    """The metadata of the index step's ``indexed_model`` artifact."""

    index: IndexRecord


class DeployRecord(Record):
    """What the deploy step did: written by ``deploy_model``, read by the run summary.

    Attributes:
        version: the registry version of the deployed bundle.
        tag: its BentoML tag.
        stage: the stage it went to.
        production_version: the registry's production version after the deploy.
        canary_version: the registry's canary version after the deploy (None: no canary).
        registry_root: the registry's folder.
        bundle_path: the bundle directory inside BentoML's store.
    """

    version: int
    tag: str
    stage: Literal["production", "canary"]
    production_version: int | None
    canary_version: int | None
    registry_root: str
    bundle_path: str


def catalog_from_ids(ids: pd.Series, id_column: str, attr_column: str) -> pd.DataFrame:
    """A catalog with every distinct id of ``ids`` (vocabulary order) and no attributes."""
    distinct = sort_ids(pd.unique(ids.dropna().astype(str)).tolist())
    return pd.DataFrame(
        {id_column: np.asarray(distinct, dtype=object), attr_column: [[] for _ in distinct]}
    )


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), str(path))


def write_dataset_dir(
    events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, directory: str | Path
) -> Path:
    """Write a dataset directory (events, items, users); returns it."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_events_parquet(events, out / EVENTS_FILE)
    _write_table(items, out / ITEMS_FILE)
    _write_table(users, out / USERS_FILE)
    return out


def is_dataset_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory with an ``events.parquet``."""
    return (Path(path) / EVENTS_FILE).is_file()


def _read_table(path: Path, id_column: str, attr_column: str, events: pd.DataFrame) -> pd.DataFrame:
    frame = read_side_table(path, id_column)
    if frame is None:
        return catalog_from_ids(events[id_column], id_column, attr_column)
    if attr_column not in frame.columns:
        frame[attr_column] = [[] for _ in range(len(frame))]
    frame[attr_column] = [list(v) if v is not None else [] for v in frame[attr_column]]
    return frame


def read_raw_dataset_dir(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, items, users) of a dataset directory, events as stored (no row checks).

    Missing ``items.parquet`` / ``users.parquet`` are derived from the event ids.

    Raises:
        DataFormatError: unreadable parquet or missing columns, naming the file.
    """
    src = Path(directory)
    events = read_events_parquet(src / EVENTS_FILE)
    items = _read_table(src / ITEMS_FILE, ITEM_ID, ITEM_ATTRIBUTES, events)
    users = _read_table(src / USERS_FILE, USER_ID, USER_ATTRIBUTES, events)
    return events, items, users


def read_dataset_dir(directory: str | Path, name: str = "pipeline") -> Dataset:
    """A dataset directory written by a step as a ``Dataset`` (its events are already clean)."""
    events, items, users = read_raw_dataset_dir(directory)
    report = LoadReport(str(directory), len(events), len(events), {}, bad_rows_frame(events))
    return Dataset(name=name, events=events, items=items, users=users, report=report)
