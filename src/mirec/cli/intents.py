"""``mirec intents``: the users of a dataset grouped by a trained model's intent centres (ELCRec).

Each user's whole behaviour sequence (the last ``data.max_len`` events) goes through the user
tower; its behaviour vector's nearest centre is its intent. The table lists every intent with its
users and the items most common in their histories; ``--user`` prints chosen users' intents and
``--out`` writes ``user_id,intent`` for all of them.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from mirec.tables import format_table

log = logging.getLogger(__name__)
CHUNK = 1024  # users per forward pass


def assign_intents(bundle_dir: str | Path, data: str, columns: str | None = None):  # type: ignore[no-untyped-def]
    """(user ids [U], intent ids [U], histories) of every user of ``data``.

    Raises:
        ConfigError: the bundle's model has no trained intent centres.
    """
    import torch

    from mirec.bundle import ModelBundle
    from mirec.data.batches import SeqBatch, pad_left
    from mirec.data.columns import parse_columns
    from mirec.data.loaders import load_dataset
    from mirec.data.splits import build_sequences
    from mirec.models.intents import user_intents

    bundle = ModelBundle.load(bundle_dir)
    cfg = bundle.config
    dataset = load_dataset(
        data, columns=parse_columns(columns), max_bad_fraction=cfg.data.max_bad_fraction
    )
    seqs = build_sequences(dataset.events, bundle.vocab)
    histories = [items[-cfg.data.max_len :] for items in seqs.items]
    keep = [i for i, h in enumerate(histories) if len(h)]
    intents = np.full(len(histories), -1, dtype=np.int64)
    bundle.model.eval()
    for start in range(0, len(keep), CHUNK):
        rows = keep[start : start + CHUNK]
        hist = pad_left([histories[i] for i in rows], cfg.data.max_len)
        batch = SeqBatch(hist, (hist != 0).sum(1), torch.zeros(len(rows), dtype=torch.long))
        intents[rows] = user_intents(bundle.model, batch).numpy()
    return seqs.user_ids, intents, histories, bundle.vocab


def intent_table(intents: np.ndarray, histories: list[np.ndarray], vocab, top: int) -> str:  # type: ignore[no-untyped-def]
    """One row per intent: users, share, the items most common in their histories."""
    rows = []
    assigned = intents[intents >= 0]
    for intent in sorted(set(assigned.tolist())):
        members = np.flatnonzero(intents == intent)
        counts: Counter[int] = Counter()
        for i in members:
            counts.update(int(x) for x in histories[i])
        items = vocab.decode(np.array([idx for idx, _ in counts.most_common(top)]))
        rows.append(
            [intent, f"{len(members):,}", f"{len(members) / len(assigned):.1%}", ", ".join(items)]
        )
    return format_table(["intent", "users", "share", f"top {top} items in their histories"], rows)


def cmd_intents(args: argparse.Namespace) -> int:
    """Print the intent table (and chosen users' intents); write all assignments to ``--out``."""
    users, intents, histories, vocab = assign_intents(args.bundle, args.data, args.columns)
    print(intent_table(intents, histories, vocab, args.top))
    if args.user:
        by_user = {str(u): int(k) for u, k in zip(users, intents, strict=True)}
        rows = [[u, by_user.get(u, "unknown user")] for u in args.user]
        print(format_table(["user", "intent"], rows))
    if args.out:
        import pandas as pd

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"user_id": users, "intent": intents}).to_csv(out, index=False)
        log.info("wrote %d users' intents to %s", len(users), out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``mirec intents``."""
    parser = sub.add_parser(
        "intents",
        help="group users by a trained model's intent centres (model.num_intents > 0)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, help="bundle directory")
    parser.add_argument("--data", required=True, help="dataset whose users to group")
    parser.add_argument("--columns", help="column mapping of a table, e.g. user_id=uid")
    parser.add_argument("--user", action="append", help="print this user's intent (repeatable)")
    parser.add_argument("--top", type=int, default=5, help="items listed per intent")
    parser.add_argument("--out", help="CSV of user_id,intent for every user")
    parser.set_defaults(func=cmd_intents)
