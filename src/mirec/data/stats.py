"""Summary statistics of a loaded dataset, for ``mirec data stats``."""

from __future__ import annotations

import numpy as np

from mirec.data.events import Dataset
from mirec.schema import EVENT_TS, ITEM_ID, USER_ID


def dataset_stats(ds: Dataset) -> dict[str, str]:
    """Users, items, events, sequence-length distribution and time range."""
    ev = ds.events
    lengths = ev.groupby(USER_ID).size().to_numpy() if len(ev) else np.zeros(1, dtype=int)
    users, items = ev[USER_ID].nunique(), ev[ITEM_ID].nunique()
    density = len(ev) / (users * items) if users and items else 0.0
    return {
        "name": ds.name,
        "users": f"{users:,}",
        "items": f"{items:,}",
        "events": f"{len(ev):,}",
        "avg / median / min / max length": (
            f"{lengths.mean():.2f} / {np.median(lengths):.0f} / {lengths.min()} / {lengths.max()}"
        ),
        "density": f"{100 * density:.3f}%",
        "first event": str(ev[EVENT_TS].min()) if len(ev) else "-",
        "last event": str(ev[EVENT_TS].max()) if len(ev) else "-",
        "catalog items with attributes": f"{len(ds.items):,}",
        "users with a profile": f"{len(ds.users):,}",
        "rows set aside": f"{ds.report.rows_read - ds.report.rows_kept:,}",
    }
