"""Derived columns for the GX suites on pandas: array size / min / max, timestamps, vocabulary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mirec.schema import EVENT_TS, HIST_ITEM_IDS, HIST_TS, ITEM_ID
from mirec.validation.derived import (
    IN_VOCABULARY,
    Derived,
    add_derived_pandas,
    max_column,
    min_column,
    size_column,
)


def test_array_stats_handle_empty_null_and_numpy_lists() -> None:
    frame = pd.DataFrame(
        {
            HIST_ITEM_IDS: [[3, 1, 2], [], None, np.array([7, 9])],
            HIST_TS: [[1, 2, 3], [], None, [5, 6]],
        },
        index=[10, 11, 12, 13],
    )
    out = add_derived_pandas(frame, Derived(array_stats=(HIST_ITEM_IDS,), array_sizes=(HIST_TS,)))
    assert out[size_column(HIST_ITEM_IDS)].tolist()[:2] == [3, 0]
    assert np.isnan(out[size_column(HIST_ITEM_IDS)].iloc[2])
    assert out[min_column(HIST_ITEM_IDS)].iloc[[0, 3]].tolist() == [1, 7]
    assert out[max_column(HIST_ITEM_IDS)].iloc[[0, 3]].tolist() == [3, 9]
    assert out[min_column(HIST_ITEM_IDS)].iloc[[1, 2]].isna().all()
    assert out[size_column(HIST_TS)].iloc[[0, 1, 3]].tolist() == [3, 0, 2]
    assert list(frame.columns) == [HIST_ITEM_IDS, HIST_TS]  # input untouched


def test_timestamps_and_vocabulary_flag() -> None:
    frame = pd.DataFrame({ITEM_ID: ["a", "b", "zz"], EVENT_TS: ["2020-01-01", "bad", "1600000000"]})
    out = add_derived_pandas(frame, Derived(timestamps=(EVENT_TS,), vocabulary=("a", "b")))
    assert str(out[EVENT_TS].dtype) == "datetime64[ns, UTC]"
    assert out[EVENT_TS].isna().tolist() == [False, True, False]
    assert out[IN_VOCABULARY].tolist() == [1, 1, 0]
    assert frame[EVENT_TS].tolist()[1] == "bad"


def test_missing_source_columns_are_skipped() -> None:
    frame = pd.DataFrame({ITEM_ID: ["a"]})
    out = add_derived_pandas(frame, Derived(array_stats=(HIST_ITEM_IDS,), timestamps=(EVENT_TS,)))
    assert list(out.columns) == [ITEM_ID]
