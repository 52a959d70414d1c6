"""``mirec events export|counts``: the serving event store as the next retraining's event log.

``export`` writes a dataset directory (``mirec.pipeline.io``) that the retraining pipeline's
``--source`` reads: the batch events of ``--base`` (a dataset directory or anything
``load_dataset`` reads) followed by every stored impression and click as canonical events with
their model version, variant, request id and position. Feedback events already in the base (an
earlier export) are counted, not repeated; item and user ids the catalogs lack are added to them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mirec.tables import format_table


def _base(source: str | None) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """(events, items, users) of the batch log; no base = no events and derived catalogs."""
    from mirec.data.events import empty_events
    from mirec.data.loaders import load_dataset
    from mirec.pipeline.io import is_dataset_dir, read_raw_dataset_dir

    if source is None:
        return empty_events(), None, None
    if is_dataset_dir(source):
        return read_raw_dataset_dir(source)
    dataset = load_dataset(source)
    return dataset.events, dataset.items, dataset.users


def _with_ids(catalog: pd.DataFrame | None, ids: pd.Series, id_col: str, attr: str) -> pd.DataFrame:
    """``catalog`` plus a row without attributes for each id of ``ids`` it lacks."""
    from mirec.pipeline.io import catalog_from_ids

    if catalog is None:
        return catalog_from_ids(ids, id_col, attr)
    missing = ids[~ids.astype(str).isin(set(catalog[id_col].astype(str)))]
    if missing.empty:
        return catalog
    return pd.concat([catalog, catalog_from_ids(missing, id_col, attr)], ignore_index=True)


def cmd_export(args: argparse.Namespace) -> int:
    """Write the batch log plus the stored feedback as a dataset directory."""
    from mirec.pipeline.io import write_dataset_dir
    from mirec.schema import EVENT_TYPE, ITEM_ATTRIBUTES, ITEM_ID, USER_ATTRIBUTES, USER_ID
    from mirec.serving.events import merge_feedback, open_event_store

    store = open_event_store(args.store)
    feedback = store.read_events()
    store.close()
    events, items, users = _base(args.base)
    merged, held = merge_feedback(events, feedback)
    items = _with_ids(items, merged[ITEM_ID], ITEM_ID, ITEM_ATTRIBUTES)
    users = _with_ids(users, merged[USER_ID], USER_ID, USER_ATTRIBUTES)
    out = write_dataset_dir(merged, items, users, Path(args.out))
    by_type = feedback[EVENT_TYPE].value_counts().to_dict()
    rows = [["batch events", f"{len(events):,}"]]
    rows += [[f"stored {kind}s", f"{n:,}"] for kind, n in sorted(by_type.items())]
    rows += [["already in the batch log", f"{held:,}"], ["events written", f"{len(merged):,}"]]
    print(format_table(["export", "value"], rows))
    print(f"\ndataset directory: {out}")
    return 0


def cmd_counts(args: argparse.Namespace) -> int:
    """Impressions, clicks and CTR per variant and model version."""
    from mirec.serving.events import open_event_store

    store = open_event_store(args.store)
    counts = store.counts()
    store.close()
    rows = [
        [a.variant, a.model_version, f"{a.impressions:,}", f"{a.clicks:,}", f"{a.ctr:.4f}"]
        for a in counts.arms
    ]
    print(format_table(["variant", "model version", "impressions", "clicks", "CTR"], rows))
    print(f"\nclicks without a stored impression: {counts.unmatched_clicks:,}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``events export|counts`` to the ``mirec`` parser."""
    events = subparsers.add_parser("events", help="the serving event store (impressions, clicks)")
    sub = events.add_subparsers(dest="events_cmd", required=True)
    store_help = "event store: a SQLite file path, sqlite:///path or postgresql://...[?schema=S]"

    export = sub.add_parser("export", help="batch events + stored feedback as a dataset directory")
    export.add_argument("--store", required=True, help=store_help)
    export.add_argument("--out", required=True, help="dataset directory to write")
    export.add_argument(
        "--base", help="the batch event log: a dataset directory or a dataset path (default: none)"
    )
    export.set_defaults(func=cmd_export)

    counts = sub.add_parser("counts", help="impressions and clicks per variant and model version")
    counts.add_argument("--store", required=True, help=store_help)
    counts.set_defaults(func=cmd_counts)
