"""Derived columns the GX suites check: array sizes / min / max, parsed timestamps, vocabulary flag.

GX cannot check the elements or lengths of array columns on Spark (``length()`` refuses
``array<bigint>``), so both engines get the same scalar helper columns: ``<col>__size``,
``<col>__min`` and ``<col>__max`` per array column, timestamps parsed to UTC, and
``IN_VOCABULARY`` (1 when ``ITEM_ID`` is in the vocabulary, else 0). The input is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mirec.data.events import to_utc_timestamps
from mirec.schema import ITEM_ID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame

IN_VOCABULARY = "__item_in_vocabulary"


def size_column(column: str) -> str:
    """Name of the derived length column of an array column."""
    return f"{column}__size"


def min_column(column: str) -> str:
    """Name of the derived smallest-element column of an array column."""
    return f"{column}__min"


def max_column(column: str) -> str:
    """Name of the derived largest-element column of an array column."""
    return f"{column}__max"


@dataclass(frozen=True)
class Derived:
    """Which helper columns a suite needs.

    Attributes:
        array_stats: array columns that get size, min and max columns.
        array_sizes: array columns that get only a size column.
        timestamps: columns parsed to UTC timestamps in place.
        vocabulary: external item ids for ``IN_VOCABULARY``, or None for no flag.
    """

    array_stats: tuple[str, ...] = ()
    array_sizes: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()
    vocabulary: Sequence[str] | None = None


def _list_stats(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 [R] size, min and max per list (NaN for null lists; NaN min / max when empty)."""
    arr = pa.array(values.to_numpy(dtype=object), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):  # every list is null
        nan = np.full(len(values), np.nan)
        return nan, nan.copy(), nan.copy()
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)  # null list -> NaN
    flat = arr.flatten()
    numbers = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
    counts = np.nan_to_num(lengths, nan=0.0).astype(np.int64)
    mins = np.full(len(values), np.nan)
    maxs = np.full(len(values), np.nan)
    nonempty = counts > 0
    if nonempty.any():
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
        mins[nonempty] = np.fmin.reduceat(numbers, starts)
        maxs[nonempty] = np.fmax.reduceat(numbers, starts)
    return np.asarray(lengths, dtype=np.float64), mins, maxs


def _list_sizes(values: pd.Series) -> np.ndarray:
    arr = pa.array(values.to_numpy(dtype=object), from_pandas=True)
    if pa.types.is_null(arr.type):
        return np.full(len(values), np.nan)
    return np.asarray(arr.value_lengths().to_numpy(zero_copy_only=False), dtype=np.float64)


def _ids_of(vocabulary: Sequence[str] | Any) -> Sequence[str]:
    return getattr(vocabulary, "ids", vocabulary)


def add_derived_pandas(frame: pd.DataFrame, derived: Derived) -> pd.DataFrame:
    """A copy of ``frame`` [R] with the helper columns (missing source columns are skipped)."""
    new: dict[str, Any] = {}
    for column in derived.array_stats:
        if column in frame.columns:
            sizes, mins, maxs = _list_stats(frame[column])
            new[size_column(column)] = sizes
            new[min_column(column)] = mins
            new[max_column(column)] = maxs
    for column in derived.array_sizes:
        if column in frame.columns:
            new[size_column(column)] = _list_sizes(frame[column])
    for column in derived.timestamps:
        if column in frame.columns:
            new[column] = to_utc_timestamps(frame[column])  # keeps frame's index
    if derived.vocabulary is not None and ITEM_ID in frame.columns:
        known = pd.Index(list(_ids_of(derived.vocabulary)))
        new[IN_VOCABULARY] = frame[ITEM_ID].isin(known).to_numpy(dtype=np.int64)
    return frame.assign(**new)


def add_derived_spark(df: SparkDataFrame, derived: Derived) -> SparkDataFrame:
    """``df`` [R] with the helper columns (lazy; missing source columns are skipped)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from mirec.validation.rules_spark import parse_timestamps_spark

    out = df
    for column in derived.array_stats + derived.array_sizes:
        if column in df.columns:
            value = F.col(column)
            out = out.withColumn(size_column(column), F.when(value.isNotNull(), F.size(value)))
            if column in derived.array_stats:
                out = out.withColumn(min_column(column), F.array_min(value))
                out = out.withColumn(max_column(column), F.array_max(value))
    for column in derived.timestamps:
        if column in df.columns:
            data_type = df.schema[column].dataType
            if not isinstance(data_type, T.TimestampType):
                out = out.withColumn(column, parse_timestamps_spark(F.col(column), data_type))
    if derived.vocabulary is not None and ITEM_ID in df.columns:
        unique = list(dict.fromkeys(str(i) for i in _ids_of(derived.vocabulary)))
        ids = pd.DataFrame({ITEM_ID: unique, IN_VOCABULARY: np.ones(len(unique), dtype=np.int64)})
        schema = f"`{ITEM_ID}` string, `{IN_VOCABULARY}` bigint"
        known = df.sparkSession.createDataFrame(ids, schema=schema)
        out = out.join(F.broadcast(known), on=ITEM_ID, how="left").withColumn(
            IN_VOCABULARY, F.coalesce(F.col(IN_VOCABULARY), F.lit(0))
        )
    return out
