"""``mirec features build|apply|materialize|lookup``: thin wrappers over ``mirec.features``.

Spark and Feast are imported inside the commands, so ``mirec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mirec.tables import format_table

log = logging.getLogger("mirec.features")
DATA_ENV = "MIREC_DATA_DIR"
DEFAULT_WORKDIR = ".mirec/features"  # same as mirec.features.repo.DEFAULT_WORKDIR
VALIDATION_DOCS = "validation_docs"  # GX Data Docs of the build, inside the workdir


def _workdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        help=f"feature workdir, a Feast repository (default: {DEFAULT_WORKDIR})",
    )


def cmd_build(args: argparse.Namespace) -> int:
    """Run the Spark job and write feature tables, training examples and the vocabulary."""
    from mirec.config import load
    from mirec.features.build import FeatureBuildConfig, build_dataset, build_features
    from mirec.features.checks import quarantine_validator, suite_checker

    cfg = load(args.config, args.overrides)
    build_cfg = FeatureBuildConfig(
        hist_len=args.hist_len,
        protocols=tuple(args.protocols.upper().split(","))
        if args.protocols
        else (cfg.data.protocol,),
        data=cfg.data,
        master=args.master,
        driver_memory=args.driver_memory,
    )
    now = datetime.now(UTC)
    tolerance = cfg.data.max_bad_fraction
    hooks: dict[str, Any] = {}
    root = Path(args.workdir)
    if not args.no_validate:
        hooks["check_tables"] = suite_checker(root / VALIDATION_DOCS, now=now)
    if args.events:
        if not args.no_validate:
            hooks["validate"] = quarantine_validator(root, now=now, max_bad_fraction=tolerance)
        result = build_features(args.events, args.workdir, cfg=build_cfg, now=now, **hooks)
    else:
        from mirec.data.columns import parse_columns
        from mirec.data.loaders import clean_dataset, read_raw_dataset

        data = args.data or os.environ.get(DATA_ENV)
        if not data:
            raise SystemExit(f"error: give --data PATH (or set {DATA_ENV}) or --events PARQUET")
        raw = read_raw_dataset(data, parse_columns(args.columns))
        if args.no_validate:  # the loader's pandas rules only, no quarantine files
            dataset = clean_dataset(raw, max_bad_fraction=tolerance)
            result = build_dataset(dataset, args.workdir, cfg=build_cfg, now=now, **hooks)
        else:  # Spark applies the rules; loader rejects join the same quarantine
            hooks["validate"] = quarantine_validator(
                root, now=now, max_bad_fraction=tolerance, rejects=raw.rejects
            )
            result = build_raw(raw, root, cfg=build_cfg, now=now, **hooks)
    print(_manifest_table(result.manifest))
    print(f"\nfeature workdir: {result.layout.root}")
    return 0


def build_raw(raw: Any, workdir: Path, **kwargs: Any) -> Any:
    """Write a parsed dataset's raw events and attribute catalogs, then run the Spark build.

    Args:
        raw: a ``mirec.data.events.RawDataset`` (no row rule applied yet).
        workdir: the feature workdir.
        **kwargs: passed to ``build_features`` (``cfg``, ``validate``, ``check_tables``, ``now``).
    """
    from mirec.data.loaders import catalogs
    from mirec.features.build import build_features, write_catalog
    from mirec.features.repo import Layout
    from mirec.schema import ITEM_ATTRIBUTES, ITEM_ID, USER_ATTRIBUTES, USER_ID
    from mirec.validation.quarantine import write_raw_events

    layout = Layout(workdir.resolve())
    events = write_raw_events(raw.events, layout.events)
    item_table, user_table = catalogs(raw, raw.events.iloc[:0])  # ids with attributes only
    items = write_catalog(
        item_table if len(item_table) else None, ITEM_ID, ITEM_ATTRIBUTES, layout.catalog_items
    )
    users = write_catalog(
        user_table if len(user_table) else None, USER_ID, USER_ATTRIBUTES, layout.catalog_users
    )
    return build_features(events, layout.root, items_path=items, users_path=users, **kwargs)


def _manifest_table(manifest: dict[str, Any]) -> str:
    rows: list[list[object]] = [
        ["build time", manifest["build_ts"]],
        ["vocabulary", f"{manifest['vocab_size']:,} items"],
    ]
    rows += [[name, f"{value:,}"] for name, value in manifest["counts"].items()]
    for protocol, counts in manifest["training_examples"].items():
        rows += [[f"protocol {protocol} {split}", f"{n:,}"] for split, n in counts.items()]
    rows += [[f"{stage} (s)", f"{secs:.1f}"] for stage, secs in manifest["seconds"].items()]
    return format_table(["feature build", "value"], rows)


def cmd_apply(args: argparse.Namespace) -> int:
    """Render feature_store.yaml for the chosen stores and register the Feast objects."""
    from mirec.features import feast_io
    from mirec.features.repo import StoreSettings, render_repo

    settings = StoreSettings(
        project=args.project,
        online_store=args.online_store,
        redis_url=args.redis,
        registry=args.registry,
    )
    root = render_repo(args.workdir, settings)
    feast_io.apply(root)
    print(
        f"applied Feast repo {root} (project {args.project}, online store {args.online_store}, "
        f"registry {'sqlite' if args.registry == 'sqlite' else 'postgresql'})"
    )
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    """Load the latest rows of the last build into the online store."""
    from mirec.features import feast_io

    end = datetime.fromisoformat(args.end) if args.end else None
    written = feast_io.materialize(args.workdir, end)
    print(format_table(["feature view", "rows written online"], list(written.items())))
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    """Print users' online sequences (indices, external ids, times) and feature values."""
    from mirec.data.vocab import Vocabulary
    from mirec.features import feast_io
    from mirec.features.repo import Layout

    store = feast_io.open_store(args.workdir)
    vocab_path = Layout(Path(args.workdir).resolve()).vocab
    vocab = Vocabulary.load(vocab_path) if vocab_path.is_file() else None
    found = feast_io.get_online_histories(store, args.user)
    for user, values in found.items():
        print(f"\nuser {user}")
        if values is None:
            print("  not in the online store (unknown user)")
            continue
        print(format_user(values, vocab))
    return 0 if all(v is not None for v in found.values()) else 1


def format_user(values: dict[str, Any], vocab: Any | None) -> str:
    """A user's sequence as a table (position, index, external id, UTC time) + other values."""
    from mirec.schema import HIST_ITEM_IDS, HIST_TS

    items = list(values.get(HIST_ITEM_IDS) or [])
    stamps = list(values.get(HIST_TS) or [])
    ids = vocab.decode(items) if vocab is not None else ["?"] * len(items)
    rows = [
        [k + 1, idx, ext, datetime.fromtimestamp(ts / 1e6, UTC).isoformat()]
        for k, (idx, ext, ts) in enumerate(zip(items, ids, stamps, strict=False))
    ]
    sequence = format_table(["#", "item index", "item id", "time (UTC)"], rows)
    rest = [[k, v] for k, v in values.items() if k not in (HIST_ITEM_IDS, HIST_TS)]
    return sequence + "\n" + format_table(["feature", "value"], rest)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``features build|apply|materialize|lookup`` to the ``mirec`` parser."""
    features = subparsers.add_parser("features", help="Spark feature build and Feast store")
    sub = features.add_subparsers(dest="features_cmd", required=True)

    build = sub.add_parser("build", help="Spark job: sequences, training examples, vocabulary")
    build.add_argument(
        "--data",
        default=os.environ.get(DATA_ENV),
        help=f"dataset path, or 'demo' (default: ${DATA_ENV})",
    )
    build.add_argument(
        "--columns", help="column mapping of a --data table, e.g. event_ts=timestamp,user_id=uid"
    )
    build.add_argument("--events", help="a canonical event parquet file or folder instead")
    _workdir(build)
    build.add_argument("--config", help="YAML config; its data section sets the protocol")
    build.add_argument(
        "--protocols",
        help="training examples to write, e.g. A,B (default: the config's data.protocol)",
    )
    build.add_argument("--hist-len", type=int, default=50, help="items per snapshot (N)")
    build.add_argument("--master", help="Spark master (default: $MIREC_SPARK_MASTER or local[*])")
    build.add_argument("--driver-memory", help="Spark driver memory, e.g. 8g")
    build.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the quarantine of raw events and the GX suites on the written tables",
    )
    build.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.max_len=20"
    )
    build.set_defaults(func=cmd_build)

    apply = sub.add_parser("apply", help="render feature_store.yaml and register the objects")
    _workdir(apply)
    apply.add_argument(
        "--online-store",
        choices=["sqlite", "redis"],
        default="sqlite",
        help="online store (default: sqlite)",
    )
    apply.add_argument(
        "--redis", default="redis://127.0.0.1:6379/0", help="Redis URL for --online-store redis"
    )
    apply.add_argument(
        "--registry",
        default="sqlite",
        help="'sqlite' (a file in the workdir) or a postgresql:// URL",
    )
    apply.add_argument("--project", default="mirec", help="Feast project name")
    apply.set_defaults(func=cmd_apply)

    mat = sub.add_parser("materialize", help="load the latest rows into the online store")
    _workdir(mat)
    mat.add_argument("--end", help="ISO time up to which to load (default: now)")
    mat.set_defaults(func=cmd_materialize)

    look = sub.add_parser("lookup", help="print users' online features")
    _workdir(look)
    look.add_argument(
        "--user", action="append", required=True, help="external user id (repeat for several)"
    )
    look.set_defaults(func=cmd_lookup)
