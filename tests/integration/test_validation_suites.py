"""GX suites on pandas frames: pass on clean tables, fail on bad ones, Data Docs named in errors.

Importing great_expectations costs ~5 s, hence the integration marker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mirec.data.events import Dataset, sort_events
from mirec.data.splits import Split, split_to_frame
from mirec.data.vocab import Vocabulary
from mirec.errors import ConfigError, DataValidationError
from mirec.schema import (
    EVENT_TS,
    FEAST_TS,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_ID,
    ITEM_IDX,
    ITEM_POPULARITY,
    TARGET_ITEM_IDS,
    USER_ID,
)
from mirec.validation import SuiteParams, require, validate_table

pytestmark = pytest.mark.integration
MAX_LEN = 20
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def params(tiny_vocab: Vocabulary) -> SuiteParams:
    return SuiteParams(
        now=NOW, max_len=MAX_LEN, vocab_size=tiny_vocab.size, vocabulary=tiny_vocab.ids
    )


def user_sequences(dataset: Dataset, vocab: Vocabulary) -> pd.DataFrame:
    """One row per user as of its last event: the last MAX_LEN item indices and timestamps."""
    events = sort_events(dataset.events)
    events[ITEM_IDX] = vocab.encode(events[ITEM_ID])
    rows = []
    for user, group in events.groupby(USER_ID, sort=True):
        last = group.tail(MAX_LEN)
        rows.append(
            {
                USER_ID: user,
                FEAST_TS: group[EVENT_TS].iloc[-1],
                HIST_ITEM_IDS: last[ITEM_IDX].tolist(),
                HIST_TS: last[EVENT_TS].tolist(),
                HIST_LEN: len(last),
            }
        )
    return pd.DataFrame(rows)


def item_features(dataset: Dataset, vocab: Vocabulary) -> pd.DataFrame:
    counts = dataset.events[ITEM_ID].value_counts()
    return pd.DataFrame(
        {
            ITEM_ID: list(vocab.ids),
            ITEM_IDX: np.arange(1, vocab.size + 1),
            ITEM_POPULARITY: counts.reindex(list(vocab.ids), fill_value=0).to_numpy(),
        }
    )


def test_all_suites_pass_on_clean_tables_and_write_docs(
    tiny_dataset: Dataset, tiny_vocab: Vocabulary, tiny_split: Split, params, tmp_path: Path
) -> None:
    tables = {
        "events": tiny_dataset.events,
        "user_sequences": user_sequences(tiny_dataset, tiny_vocab),
        "item_features": item_features(tiny_dataset, tiny_vocab),
        "training_frame": split_to_frame(tiny_split),
    }
    for name, table in tables.items():
        outcome = validate_table(table, name, params=params, docs_dir=tmp_path / "docs")
        assert outcome.success, outcome.summary()
        assert outcome.statistics["unsuccessful_expectations"] == 0
        assert outcome.docs_path is not None and Path(outcome.docs_path).is_file()
        assert outcome.docs_path.endswith(".html") and name in outcome.docs_path
        require(outcome)  # does not raise
        json.dumps(outcome.results)  # JSON-able
    assert (tmp_path / "docs" / "index.html").is_file()


def test_out_of_range_index_and_future_time_fail_with_docs_in_error(
    tiny_dataset: Dataset, tiny_vocab: Vocabulary, params, tmp_path: Path
) -> None:
    table = user_sequences(tiny_dataset, tiny_vocab)
    table.at[0, HIST_ITEM_IDS] = [*table.at[0, HIST_ITEM_IDS][:-1], tiny_vocab.size + 1]
    table.at[1, FEAST_TS] = pd.Timestamp("2030-01-01", tz="UTC")
    outcome = validate_table(table, "user_sequences", params=params, docs_dir=tmp_path)
    assert not outcome.success
    failed = {(r["expectation"], r["column"]) for r in outcome.failures}
    assert failed == {
        ("expect_column_values_to_be_between", f"{HIST_ITEM_IDS}__max"),
        ("expect_column_values_to_be_between", FEAST_TS),
    }
    with pytest.raises(DataValidationError) as caught:
        require(outcome)
    message = str(caught.value)
    assert outcome.docs_path is not None and outcome.docs_path in message
    assert Path(outcome.docs_path).is_file()
    assert "hist_item_ids__max" in message and "2030-01-01" in message


def test_events_future_time_and_low_vocabulary_coverage(
    tiny_dataset: Dataset, params, tmp_path: Path
) -> None:
    events = tiny_dataset.events.copy()
    events.loc[3, EVENT_TS] = pd.Timestamp("2099-01-01", tz="UTC")
    events.loc[: len(events) // 10, ITEM_ID] = "unknown-item"  # ~10% unknown < 95% coverage
    outcome = validate_table(events, "events", params=params, docs_dir=None)
    assert not outcome.success and outcome.docs_path is None
    failed = {r["expectation"] for r in outcome.failures}
    assert failed == {"expect_column_values_to_be_between", "expect_column_mean_to_be_between"}
    assert "not written" in outcome.summary()


def test_training_frame_bounds(tiny_split: Split, params, tmp_path: Path) -> None:
    frame = split_to_frame(tiny_split)
    frame.at[0, TARGET_ITEM_IDS] = [0]  # the PAD index is never a real item
    frame.at[1, HIST_ITEM_IDS] = list(range(1, MAX_LEN + 2))  # longer than max_len
    outcome = validate_table(frame, "training_frame", params=params)
    failed = {r["column"] for r in outcome.failures}
    assert failed == {
        f"{TARGET_ITEM_IDS}__min",
        f"{TARGET_ITEM_IDS}__max",
        f"{HIST_ITEM_IDS}__size",
    }


def test_missing_column_fails_the_schema_check(
    tiny_dataset: Dataset, tiny_vocab: Vocabulary, params
) -> None:
    table = item_features(tiny_dataset, tiny_vocab).drop(columns=[ITEM_IDX])
    outcome = validate_table(table, "item_features", params=params)
    assert not outcome.success
    assert ("expect_column_to_exist", ITEM_IDX) in {
        (r["expectation"], r["column"]) for r in outcome.failures
    }


def test_unknown_suite_is_a_config_error(tiny_dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match="unknown validation suite 'nope'"):
        validate_table(tiny_dataset.events, "nope")
