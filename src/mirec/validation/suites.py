"""Great Expectations 1.x suites defined in code, for pandas and Spark frames, and how to run them.

Suites (``SUITES``): ``events`` (raw or cleaned event log), ``user_sequences`` (per-user sequence
features), ``item_features`` and ``training_frame``. They check the schema (columns exist),
nulls, id ranges (item indices within 1..vocab size), timestamp sanity (not after ``now``, not
before ``epoch``), sequence-length bounds (0..max_len) and vocabulary coverage. Array columns are
checked through derived scalar columns (``mirec.validation.derived``), the same on both engines.
``great_expectations`` is imported only when a suite is built or run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mirec.errors import ConfigError
from mirec.schema import (
    DEFAULT_MAX_LEN,
    EVENT_ID,
    EVENT_TS,
    EVENT_TYPE,
    EVENT_TYPES,
    FEAST_TS,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_ID,
    ITEM_IDX,
    ITEM_POPULARITY,
    MIN_EVENT_TS,
    SEQ_POS,
    SPLIT,
    SPLITS,
    TARGET_ITEM_IDS,
    USER_ID,
)
from mirec.validation.derived import (
    IN_VOCABULARY,
    Derived,
    max_column,
    min_column,
    size_column,
)
from mirec.validation.outcome import ValidationOutcome, jsonable, require, result_dict

logger = logging.getLogger(__name__)

RESULT_FORMAT = "SUMMARY"


@dataclass(frozen=True)
class SuiteParams:
    """Thresholds of the suites.

    Attributes:
        now: timestamps after this fail (default: the time of the run, UTC).
        epoch: timestamps before this fail.
        max_len: sequences may hold 0..max_len items.
        vocab_size: item indices must lie in 1..vocab_size (None: only >= 1 is checked).
        vocabulary: external item ids known to the vocabulary (e.g. ``Vocabulary.ids``), for the
            events coverage check; None skips it.
        min_vocab_coverage: least share of event item ids in ``vocabulary``; for item features,
            least share of the ``vocab_size`` items that have a row.
        known_event_types: accepted ``EVENT_TYPE`` values.
        min_rows: least number of rows of any table.
    """

    now: datetime | None = None
    epoch: datetime = MIN_EVENT_TS
    max_len: int = DEFAULT_MAX_LEN
    vocab_size: int | None = None
    vocabulary: Sequence[str] | None = field(default=None, repr=False)
    min_vocab_coverage: float = 0.95
    known_event_types: tuple[str, ...] = EVENT_TYPES
    min_rows: int = 1

    def resolved(self) -> SuiteParams:
        """A copy with ``now`` set (to the current UTC time when None) and both times in UTC."""
        now = self.now or datetime.now(UTC)
        return replace(self, now=_utc(now), epoch=_utc(self.epoch))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class SuiteSpec:
    """A suite built in code: its expectations and the helper columns they read.

    Attributes:
        name: the suite's name.
        expectations: GX expectation objects.
        derived: helper columns to add before validating.
    """

    name: str
    expectations: list[Any] = field(repr=False)
    derived: Derived = Derived()

    def to_gx(self) -> Any:
        """The ``great_expectations.ExpectationSuite``."""
        import great_expectations as gx

        return gx.ExpectationSuite(name=self.name, expectations=list(self.expectations))


def _gxe() -> Any:
    import great_expectations.expectations as gxe

    return gxe


def _exist(columns: Sequence[str]) -> list[Any]:
    return [_gxe().ExpectColumnToExist(column=c) for c in columns]


def _not_null(columns: Sequence[str]) -> list[Any]:
    return [_gxe().ExpectColumnValuesToNotBeNull(column=c) for c in columns]


def _between(column: str, low: Any, high: Any, **kwargs: Any) -> Any:
    return _gxe().ExpectColumnValuesToBeBetween(
        column=column, min_value=low, max_value=high, **kwargs
    )


def _rows(minimum: int) -> Any:
    return _gxe().ExpectTableRowCountToBeBetween(min_value=minimum, max_value=None)


def _time_column(columns: Sequence[str]) -> str:
    return next((c for c in (FEAST_TS, EVENT_TS) if c in columns), FEAST_TS)


def _index_array(column: str, p: SuiteParams, low_len: int, high_len: int | None) -> list[Any]:
    """Length bounds and element range 1..vocab_size of an array of item indices."""
    return [
        _between(size_column(column), low_len, high_len),
        _between(min_column(column), 1, p.vocab_size),
        _between(max_column(column), 1, p.vocab_size),
    ]


def _equal(column_a: str, column_b: str) -> Any:
    return _gxe().ExpectColumnPairValuesToBeEqual(column_A=column_a, column_B=column_b)


def events_suite(columns: Sequence[str], params: SuiteParams) -> SuiteSpec:
    """Event log: schema, non-null ids and times, time window, known types, vocabulary coverage."""
    gxe, p = _gxe(), params.resolved()
    required = [USER_ID, ITEM_ID, EVENT_TS, EVENT_TYPE, SEQ_POS]
    expectations = _exist(required) + [_rows(p.min_rows)] + _not_null([USER_ID, ITEM_ID, EVENT_TS])
    expectations += [
        _between(EVENT_TS, p.epoch, p.now),
        gxe.ExpectColumnValuesToBeInSet(column=EVENT_TYPE, value_set=list(p.known_event_types)),
        _between(SEQ_POS, 0, None),
    ]
    if EVENT_ID in columns:
        expectations.append(gxe.ExpectColumnValuesToBeUnique(column=EVENT_ID))
    if p.vocabulary is not None:
        expectations.append(
            gxe.ExpectColumnMeanToBeBetween(
                column=IN_VOCABULARY, min_value=p.min_vocab_coverage, max_value=1.0
            )
        )
    derived = Derived(timestamps=(EVENT_TS,), vocabulary=p.vocabulary)
    return SuiteSpec("events", expectations, derived)


def user_sequences_suite(columns: Sequence[str], params: SuiteParams) -> SuiteSpec:
    """Per-user sequence features: lengths 0..max_len, indices in range, consistent lengths."""
    p = params.resolved()
    ts = _time_column(columns)
    required = [USER_ID, ts, HIST_ITEM_IDS, HIST_LEN]
    expectations = _exist(required) + [_rows(p.min_rows)] + _not_null(required)
    expectations += [
        _between(HIST_LEN, 0, p.max_len),
        *_index_array(HIST_ITEM_IDS, p, 0, p.max_len),
        _equal(HIST_LEN, size_column(HIST_ITEM_IDS)),
        _between(ts, p.epoch, p.now),
    ]
    sizes: tuple[str, ...] = ()
    if HIST_TS in columns:
        expectations.append(_equal(HIST_LEN, size_column(HIST_TS)))
        sizes = (HIST_TS,)
    derived = Derived(array_stats=(HIST_ITEM_IDS,), array_sizes=sizes, timestamps=(ts,))
    return SuiteSpec("user_sequences", expectations, derived)


def item_features_suite(columns: Sequence[str], params: SuiteParams) -> SuiteSpec:
    """Item features: unique ids and indices, indices in 1..vocab_size, vocabulary coverage."""
    gxe, p = _gxe(), params.resolved()
    required = [ITEM_ID, ITEM_IDX]
    least = p.min_rows
    if p.vocab_size is not None:
        least = max(least, math.ceil(p.min_vocab_coverage * p.vocab_size))
    expectations = _exist(required) + [_rows(least)] + _not_null(required)
    expectations += [
        gxe.ExpectColumnValuesToBeUnique(column=ITEM_ID),
        gxe.ExpectColumnValuesToBeUnique(column=ITEM_IDX),
        _between(ITEM_IDX, 1, p.vocab_size),
    ]
    if ITEM_POPULARITY in columns:
        expectations.append(_between(ITEM_POPULARITY, 0, None))
    timestamps: tuple[str, ...] = ()
    if FEAST_TS in columns:
        expectations.append(_between(FEAST_TS, p.epoch, p.now))
        timestamps = (FEAST_TS,)
    return SuiteSpec("item_features", expectations, Derived(timestamps=timestamps))


def training_frame_suite(columns: Sequence[str], params: SuiteParams) -> SuiteSpec:
    """Training examples: history 0..max_len, >= 1 target, all indices in 1..vocab_size."""
    gxe, p = _gxe(), params.resolved()
    required = [USER_ID, HIST_ITEM_IDS, TARGET_ITEM_IDS]
    expectations = _exist(required) + [_rows(p.min_rows)] + _not_null(required)
    expectations += _index_array(HIST_ITEM_IDS, p, 0, p.max_len)
    expectations += _index_array(TARGET_ITEM_IDS, p, 1, None)
    if SPLIT in columns:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column=SPLIT, value_set=list(SPLITS)))
    if HIST_LEN in columns:
        expectations.append(_equal(HIST_LEN, size_column(HIST_ITEM_IDS)))
    timestamps = tuple(c for c in (FEAST_TS, EVENT_TS) if c in columns)
    expectations += [_between(c, p.epoch, p.now) for c in timestamps]
    derived = Derived(array_stats=(HIST_ITEM_IDS, TARGET_ITEM_IDS), timestamps=timestamps)
    return SuiteSpec("training_frame", expectations, derived)


SUITES: dict[str, Callable[[Sequence[str], SuiteParams], SuiteSpec]] = {
    "events": events_suite,
    "user_sequences": user_sequences_suite,
    "item_features": item_features_suite,
    "training_frame": training_frame_suite,
}


def build_suite(suite_name: str, columns: Sequence[str], params: SuiteParams) -> SuiteSpec:
    """The named suite for a table with ``columns``.

    Raises:
        ConfigError: unknown suite name (the message lists the known ones).
    """
    builder = SUITES.get(suite_name)
    if builder is None:
        raise ConfigError(f"unknown validation suite {suite_name!r}; known: {sorted(SUITES)}")
    return builder(columns, params)


# --- running a suite ---------------------------------------------------------------------------


def _is_pandas(df: Any) -> bool:
    if isinstance(df, pd.DataFrame):
        return True
    if hasattr(df, "sparkSession") and hasattr(df, "schema"):
        return False
    raise TypeError(f"validate_table takes a pandas or Spark DataFrame, got {type(df).__name__}")


def validate_table(
    df: Any,
    suite_name: str,
    *,
    params: SuiteParams | None = None,
    docs_dir: str | Path | None = None,
) -> ValidationOutcome:
    """Run a suite on a pandas or Spark DataFrame; write Data Docs when ``docs_dir`` is given.

    Args:
        df: [R] the table (pandas ``DataFrame`` or ``pyspark.sql.DataFrame``); not modified.
        suite_name: a key of ``SUITES``.
        params: thresholds (default ``SuiteParams()``; ``now`` = the time of the call).
        docs_dir: directory of the Data Docs site (created), or None for no HTML.

    Returns:
        The outcome; it never raises for failed expectations (see ``require``).

    Raises:
        ConfigError: unknown suite name.
    """
    from mirec.validation.derived import add_derived_pandas, add_derived_spark
    from mirec.validation.docs import docs_page, new_context

    pandas_engine = _is_pandas(df)
    spec = build_suite(suite_name, list(df.columns), (params or SuiteParams()).resolved())
    context = new_context(docs_dir)
    if pandas_engine:
        identifier, result = _run_checkpoint(
            context, spec, add_derived_pandas(df, spec.derived), "pandas", docs_dir
        )
    else:  # every expectation is a Spark job: compute the derived columns once
        frame = add_derived_spark(df, spec.derived).persist()
        try:
            identifier, result = _run_checkpoint(context, spec, frame, "spark", docs_dir)
        finally:
            frame.unpersist()
    outcome = ValidationOutcome(
        success=bool(result.success),
        statistics=jsonable(dict(result.statistics)),
        results=[result_dict(r) for r in result.results],
        docs_path=docs_page(context, identifier),
        suite_name=suite_name,
    )
    log = logger.info if outcome.success else logger.warning
    log("%s", outcome.summary())
    return outcome


def _run_checkpoint(
    context: Any, spec: SuiteSpec, frame: Any, engine: str, docs_dir: str | Path | None
) -> tuple[Any, Any]:
    """Run ``spec`` on ``frame`` through a GX checkpoint; (result identifier, suite result)."""
    import great_expectations as gx

    from mirec.validation.docs import docs_actions

    sources = context.data_sources
    source = (
        sources.add_pandas(name=engine) if engine == "pandas" else sources.add_spark(name=engine)
    )
    asset = source.add_dataframe_asset(name=spec.name)
    batch = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(spec.to_gx())
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec.name}_validation", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{spec.name}_checkpoint",
            validation_definitions=[definition],
            actions=docs_actions(docs_dir),
            result_format={"result_format": RESULT_FORMAT},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    return next(iter(run.run_results.items()))


__all__ = [
    "SUITES",
    "SuiteParams",
    "SuiteSpec",
    "ValidationOutcome",
    "build_suite",
    "events_suite",
    "item_features_suite",
    "require",
    "training_frame_suite",
    "user_sequences_suite",
    "validate_table",
]
