"""Validation hooks of the feature build, backed by ``mirec.validation`` (imported lazily).

``quarantine_validator`` cleans the raw events (bad rows to a quarantine parquet with their
reason; the build fails above the tolerance); ``suite_checker`` runs the Great Expectations suites
on the written tables and writes Data Docs (the build fails when a suite fails).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mirec.schema import MIN_EVENT_TS

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

# Raw Spark events -> clean events (it may write a quarantine and raise DataValidationError).
EventValidator = Callable[["DataFrame"], "DataFrame"]
# (suite name, table, max sequence length, vocabulary size) -> None; raises when the suite fails.
TableChecker = Callable[[str, "DataFrame", int, int], None]

# Suite of each output table (``mirec.validation.suites.SUITES``).
USER_SEQUENCES_SUITE = "user_sequences"
ITEM_FEATURES_SUITE = "item_features"
TRAINING_FRAME_SUITE = "training_frame"


def quarantine_validator(
    out_dir: str | Path,
    *,
    now: datetime,
    max_bad_fraction: float,
    epoch: datetime = MIN_EVENT_TS,
    rejects: pd.DataFrame | None = None,
) -> EventValidator:
    """The row-level quarantine of ``mirec.validation`` as the build's event hook.

    Bad rows go to ``<out_dir>/quarantine/raw_events/`` with their reason and the report next to
    it; the hook raises ``DataValidationError`` when their share passes ``max_bad_fraction``.
    ``rejects`` are the rows a format loader could not parse (``RawDataset.rejects``): they
    join the same quarantine and counts.
    """
    from mirec.validation.quarantine import quarantine_events_spark

    def validate(events: DataFrame) -> DataFrame:
        clean, _ = quarantine_events_spark(
            events,
            now=now,
            epoch=epoch,
            out_dir=out_dir,
            max_bad_fraction=max_bad_fraction,
            rejects=rejects,
        )
        return clean

    return validate


def suite_checker(
    docs_dir: str | Path, *, now: datetime, epoch: datetime = MIN_EVENT_TS
) -> TableChecker:
    """GX suites on the written tables, with Data Docs in ``docs_dir``; failures raise.

    Args:
        docs_dir: the Data Docs site (one page per suite run).
        now: timestamps after this fail (the build time or later).
        epoch: timestamps before this fail.
    """
    from mirec.validation import SuiteParams, require, validate_table

    def check(suite: str, table: DataFrame, max_len: int, vocab_size: int) -> None:
        params = SuiteParams(now=now, epoch=epoch, max_len=max_len, vocab_size=vocab_size)
        require(validate_table(table, suite, params=params, docs_dir=docs_dir))

    return check
