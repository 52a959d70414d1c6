"""Data layer: canonical event log, loaders, synthetic data, vocabulary, splits, batches, samplers.

This package's ``__init__`` re-exports only the pandas-level API (no torch), so Spark and
validation edges can import ``mirec.data.quality`` cheaply; batches and samplers (torch) are
imported from ``mirec.data.batches`` and ``mirec.data.samplers``.
"""

from mirec.data.events import (
    Dataset,
    LoadReport,
    read_events_parquet,
    sort_events,
    write_events_parquet,
)
from mirec.data.loaders import load_dataset, load_recbole, load_s3rec, load_table
from mirec.data.quality import check_bad_fraction, find_bad_rows, split_bad_rows
from mirec.data.splits import (
    EvalData,
    Split,
    TrainData,
    UserSequences,
    build_sequences,
    make_split,
    split_leave_one_out,
    split_to_frame,
    split_users,
)
from mirec.data.synthetic import generate, generate_events, write_synthetic_events
from mirec.data.vocab import Vocabulary

__all__ = [
    "Dataset",
    "EvalData",
    "LoadReport",
    "Split",
    "TrainData",
    "UserSequences",
    "Vocabulary",
    "build_sequences",
    "check_bad_fraction",
    "find_bad_rows",
    "generate",
    "generate_events",
    "load_dataset",
    "load_recbole",
    "load_s3rec",
    "load_table",
    "make_split",
    "read_events_parquet",
    "sort_events",
    "split_bad_rows",
    "split_leave_one_out",
    "split_to_frame",
    "split_users",
    "write_events_parquet",
    "write_synthetic_events",
]
