"""The ``mirec`` command line: thin wrappers over library functions (edges imported lazily)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from mirec.tables import format_table

if TYPE_CHECKING:
    from mirec.data.events import Dataset

log = logging.getLogger("mirec")
DATA_ENV = "MIREC_DATA_DIR"
REPORT_KEYS = (
    "hr@5",
    "hr@10",
    "hr@20",
    "hr@50",
    "ndcg@5",
    "ndcg@10",
    "ndcg@20",
    "recall@20",
    "recall@50",
)


def _data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=os.environ.get(DATA_ENV),
        help=f"dataset path, or 'demo' for generated data (default: ${DATA_ENV})",
    )
    parser.add_argument(
        "--columns",
        help="column mapping of a table, e.g. event_ts=timestamp,user_id=uid "
        "(aliases such as timestamp, ts, time, user, uid, item are recognised)",
    )


def _load(args: argparse.Namespace, max_bad_fraction: float) -> Dataset:
    """``load_dataset`` of ``--data`` with ``--columns``."""
    from mirec.data.columns import parse_columns
    from mirec.data.loaders import load_dataset

    columns = parse_columns(args.columns)
    return load_dataset(_require_data(args), columns=columns, max_bad_fraction=max_bad_fraction)


def _require_data(args: argparse.Namespace) -> str:
    if not args.data:
        raise SystemExit(f"error: give --data PATH (or set {DATA_ENV}); 'demo' generates data")
    return str(args.data)


def cmd_data_stats(args: argparse.Namespace) -> int:
    """Print dataset statistics and the quarantine report (the pipeline's rules and counts)."""
    import tempfile

    from mirec.config import load
    from mirec.data.columns import parse_columns
    from mirec.data.loaders import read_raw_dataset
    from mirec.data.stats import dataset_stats
    from mirec.validation.quarantine import quarantine_dataset

    tolerance = args.max_bad_fraction
    if tolerance is None:
        tolerance = load(args.config, []).data.max_bad_fraction
    raw = read_raw_dataset(_require_data(args), parse_columns(args.columns))
    with tempfile.TemporaryDirectory(prefix="mirec-stats-") as scratch:
        ds, report = quarantine_dataset(
            raw, out_dir=args.quarantine or scratch, max_bad_fraction=tolerance
        )
    stats = dataset_stats(ds)
    print(format_table(["statistic", "value"], [[k, v] for k, v in stats.items()]))
    print("\n" + report.summary())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model and print its evaluation table."""
    from mirec.config import load
    from mirec.data.vocab import Vocabulary
    from mirec.training import train

    cfg = load(args.config, args.overrides)
    ds = _load(args, cfg.data.max_bad_fraction)
    vocab = Vocabulary.load(args.vocab) if args.vocab else None
    result = train(
        cfg,
        ds,
        args.out,
        vocab=vocab,
        resume=args.resume,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    print(result_table(result.metrics))
    print(
        f"\nbest epoch {result.best_epoch}, {result.train_seconds:.0f} s training, "
        f"{result.examples_per_second:.0f} examples/s, peak RSS {result.peak_rss_mb:.0f} MiB"
    )
    print(f"bundle: {result.bundle_dir}")
    return 0


def result_table(metrics: dict[str, float]) -> str:
    """Valid / test / reference-protocol rows side by side."""
    rows = []
    for prefix, label in (("valid/", "valid"), ("test/", "test"), ("test_ref/", "test (0-score)")):
        if any(k.startswith(prefix) for k in metrics):
            rows.append(
                [label] + [f"{metrics.get(prefix + k, float('nan')):.4f}" for k in REPORT_KEYS]
            )
    return format_table(["split", *REPORT_KEYS], rows)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a bundle on a dataset's held-out users."""
    from mirec.bundle import ModelBundle
    from mirec.data.splits import make_split
    from mirec.evaluate import evaluate_bundle

    bundle = ModelBundle.load(args.bundle)
    cfg = bundle.config
    ds = _load(args, cfg.data.max_bad_fraction)
    import pandas as pd

    from mirec.schema import ITEM_ID

    vocab = bundle.vocab.extend(
        pd.concat([ds.events[ITEM_ID], ds.items[ITEM_ID]]).astype(str).unique()
    )
    split = make_split(ds, vocab, cfg.data)
    metrics = evaluate_bundle(bundle, split, cfg.eval, which=args.split)
    print(format_table(["metric", "value"], [[k, f"{v:.4f}"] for k, v in sorted(metrics.items())]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full ``mirec`` argument parser."""
    parser = argparse.ArgumentParser(prog="mirec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect datasets").add_subparsers(
        dest="data_cmd", required=True
    )
    stats = data.add_parser("stats", help="dataset statistics and bad-row counts")
    _data_arg(stats)
    stats.add_argument("--config", help="YAML config whose data.max_bad_fraction applies")
    stats.add_argument(
        "--max-bad-fraction",
        type=float,
        help="override the config's data.max_bad_fraction (fail above this share of bad rows)",
    )
    stats.add_argument(
        "--quarantine", help="write the quarantine (bad rows + report) under this directory"
    )
    stats.set_defaults(func=cmd_data_stats)

    tr = sub.add_parser("train", help="train a model and write a bundle")
    tr.add_argument("--config", help="YAML config (defaults in code)")
    _data_arg(tr)
    tr.add_argument("--out", default="runs/train", help="run directory")
    tr.add_argument("--vocab", help="previous vocabulary JSON to extend (append-only)")
    tr.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    tr.add_argument("--workers", type=int, default=1, help="processes for DDP training (torchrun)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. model.name=mind"
    )
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a bundle with full ranking")
    ev.add_argument("--bundle", required=True, help="bundle directory")
    _data_arg(ev)
    ev.add_argument("--split", choices=["valid", "test"], default="test", help="held-out users")
    ev.set_defaults(func=cmd_evaluate)

    for register in _edge_commands():
        register(sub)
    return parser


def _edge_commands() -> list[Callable[[argparse._SubParsersAction], None]]:  # type: ignore[type-arg]
    """Sub-command groups of the edge packages (their heavy imports happen per command)."""
    out = []
    groups = ("features", "pipeline", "serve", "events", "canary", "intents")
    for module in (f"mirec.cli.{group}" for group in groups):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        out.append(mod.register)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mirec`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from mirec.errors import MirecError

    try:
        return int(args.func(args) or 0)
    except MirecError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
