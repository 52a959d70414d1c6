"""Data validation (EDGE): row quarantine for pandas / Spark and Great Expectations suites.

Importing this package is cheap: ``great_expectations`` and ``pyspark`` are imported inside the
functions that need them. The core (``mirec.data`` and friends) never imports this package.
"""

from __future__ import annotations

from mirec.validation.outcome import ValidationOutcome, require
from mirec.validation.quarantine import (
    QuarantineReport,
    quarantine_events_pandas,
    quarantine_events_spark,
    read_events_lenient,
)
from mirec.validation.suites import SUITES, SuiteParams, build_suite, validate_table

__all__ = [
    "SUITES",
    "QuarantineReport",
    "SuiteParams",
    "ValidationOutcome",
    "build_suite",
    "quarantine_events_pandas",
    "quarantine_events_spark",
    "read_events_lenient",
    "require",
    "validate_table",
]
