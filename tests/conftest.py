"""Shared fixtures: a tiny seeded synthetic dataset (with vocabulary and split) and the public data.

The public datasets are found via ``MIREC_SHARED_DATA`` or ``../shared/data`` next to the
repository; tests that need them are skipped with a reason when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirec.config import DataConfig
from mirec.data.events import Dataset
from mirec.data.splits import Split, make_split
from mirec.data.synthetic import generate
from mirec.data.vocab import Vocabulary
from mirec.schema import ITEM_ID

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The public-data directory, or None when it is not available."""
    configured = os.environ.get("MIREC_SHARED_DATA")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding Beauty/, Yelp/, ml-100k/, ... (skips when absent)."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("public datasets not found: set MIREC_SHARED_DATA or provide ../shared/data")
    return path


@pytest.fixture
def tiny_dataset() -> Dataset:
    """200 users, 120 items in 4 planted clusters (seed 0), ~2,400 events; fresh for each test."""
    return generate(num_users=200, num_items=120, num_clusters=4, mean_len=12, seed=0)


@pytest.fixture
def tiny_vocab(tiny_dataset: Dataset) -> Vocabulary:
    """Vocabulary over every catalog item of ``tiny_dataset`` (item "k" -> index k)."""
    return Vocabulary.build(tiny_dataset.items[ITEM_ID])


@pytest.fixture
def tiny_split(tiny_dataset: Dataset, tiny_vocab: Vocabulary) -> Split:
    """Protocol B (leave-one-out) split of ``tiny_dataset`` with max_len 20."""
    return make_split(tiny_dataset, tiny_vocab, DataConfig(protocol="B", max_len=20))
