"""Demo data in rounds: the event log grows between pipeline runs, as it does in production.

Round 1 is ``synthetic.generate`` as of ``DEFAULT_START``. Each later round appends one more
generation, a year later, with ``new_users`` more users: the item catalog and its planted
clusters stay the same (same seed and catalog size), existing users come back with freshly
drawn interests, and new users join. A second pipeline run therefore retrains on NEW events and
its gate compares the retrained model with the first one on the new held-out events.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from mirec.data.synthetic import DEFAULT_START, generate
from mirec.errors import ConfigError
from mirec.pipeline.io import write_dataset_dir
from mirec.schema import ITEM_ID, SEQ_POS, USER_ID

log = logging.getLogger(__name__)

ROUND_GAP = timedelta(days=365)
DEMO_USERS = 1000
DEMO_ITEMS = 500
DEMO_NEW_USERS = 250


def demo_round(
    round_no: int,
    *,
    num_users: int = DEMO_USERS,
    num_items: int = DEMO_ITEMS,
    new_users: int = DEMO_NEW_USERS,
    mean_len: int = 20,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, items, users) of the demo event log as of round ``round_no`` (1-based).

    Raises:
        ConfigError: ``round_no`` < 1 or a size the generator refuses.
    """
    if round_no < 1:
        raise ConfigError(f"round must be >= 1, got {round_no}")
    events, items, users = [], [], []
    offset = 0
    for r in range(round_no):
        ds = generate(
            num_users=num_users + r * new_users,
            num_items=num_items,
            mean_len=mean_len,
            seed=seed,
            start=DEFAULT_START + r * ROUND_GAP,
        )
        part = ds.events.copy()
        part[SEQ_POS] = part[SEQ_POS].to_numpy(dtype=np.int64) + offset
        offset += len(part)
        events.append(part)
        items.append(ds.items)
        users.append(ds.users)
    all_events = pd.concat(events, ignore_index=True)
    all_items = pd.concat(items, ignore_index=True).drop_duplicates(ITEM_ID, keep="first")
    all_users = pd.concat(users, ignore_index=True).drop_duplicates(USER_ID, keep="first")
    return all_events, all_items.reset_index(drop=True), all_users.reset_index(drop=True)


def write_demo_data(out_dir: str | Path, round_no: int, **sizes: int) -> Path:
    """Write the demo dataset directory of round ``round_no`` (replacing an older round).

    Args:
        out_dir: the dataset directory (``events.parquet``, ``items.parquet``, ``users.parquet``).
        round_no: 1 for the first event log, 2 for it plus a year of new events, ...
        sizes: ``num_users``, ``num_items``, ``new_users``, ``mean_len``, ``seed`` overrides.

    Returns:
        The directory.
    """
    events, items, users = demo_round(round_no, **sizes)
    out = write_dataset_dir(events, items, users, out_dir)
    log.info(
        "demo data round %d: %d events, %d users, %d items -> %s",
        round_no,
        len(events),
        events[USER_ID].nunique(),
        len(items),
        out,
    )
    return out
