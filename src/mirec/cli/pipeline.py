"""``mirec pipeline ...``: compile, run locally, submit, schedule, demo (kfp imported lazily)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from mirec.errors import ConfigError

log = logging.getLogger("mirec")
WORK_DIR = ".mirec/pipeline"
DEMO_DIR = ".mirec/demo"
DEMO_CONFIG = "configs/demo.yaml"
# One torch thread: on a small 2-core machine two threads are several times slower for these
# tiny models (and much worse when other processes compete); overrides given later win.
DEMO_OVERRIDES = ("optim.num_threads=1",)
SPEC_ARGUMENTS = {
    "source",
    "registry_root",
    "config",
    "overrides",
    "num_workers",
    "max_bad_fraction",
    "feature_store",
    "columns",
}


def _out(text: str) -> None:
    """Command output (the CLI's result, not a log line)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


PIPELINE_FILE = "retraining.yaml"


def compile_package(
    out: str | Path, image: str | None = None, *, pvc: str | None = None, mount_path: str = ""
) -> Path:
    """Compile the retraining pipeline to IR YAML at ``out`` (see ``pipelines.compile``).

    Args:
        out: the YAML file.
        image: the container image of every step (default ``components.images.BASE_IMAGE``).
        pvc: a PersistentVolumeClaim mounted into every step (cluster runs), or None.
        mount_path: where it is mounted (default ``pipelines.compile.DEFAULT_MOUNT``).
    """
    from pipelines.compile import DEFAULT_MOUNT, compile_pipeline

    path = compile_pipeline(out, image, pvc=pvc, mount_path=mount_path or DEFAULT_MOUNT)
    log.info("compiled the retraining pipeline to %s", path)
    return path


def _config_tree(config: str | None, overrides: list[str]) -> dict[str, Any]:
    from mirec.config import load

    return load(config, overrides).model_dump(mode="json")


def _arguments(args: argparse.Namespace, registry: str) -> dict[str, Any]:
    from mirec.pipeline.arguments import pipeline_arguments

    if not args.source:
        raise ConfigError("give --source: a dataset directory, an events parquet or a loader path")
    return pipeline_arguments(
        args.source,
        registry,
        _config_tree(args.config, args.overrides),
        num_workers=args.workers,
        max_bad_fraction=args.max_bad_fraction,
        feature_store=_pairs(args.feature_store),
        columns=args.columns or "",
    )


def _override(flag: float | None, spec: object) -> float | None:
    """The tolerance given by the flag, else by the spec file, else None (the config's)."""
    if flag is not None:
        return flag
    return None if spec is None else float(str(spec))


def _pairs(items: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--feature-store takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _package(args: argparse.Namespace) -> Path:
    if args.package:
        return Path(args.package)
    out = Path(WORK_DIR) / "retraining.yaml"
    return compile_package(out, args.image, pvc=args.pvc, mount_path=args.mount_path)


def cmd_compile(args: argparse.Namespace) -> int:
    """Write the pipeline's IR YAML."""
    path = compile_package(args.out, args.image, pvc=args.pvc, mount_path=args.mount_path)
    _out(f"wrote {path}")
    return 0


def run_and_summarize(
    arguments: dict[str, Any], work_dir: str | Path, *, title: str, verbose: bool = False
) -> str:
    """Run the pipeline locally and return its printed summary (the ``run --local`` body)."""
    from mirec.pipeline.local import run_local
    from mirec.pipeline.summary import format_summary

    package = compile_package(Path(work_dir).resolve() / PIPELINE_FILE)
    run = run_local(arguments, work_dir, package=package, verbose=verbose)
    text = format_summary(run.run_dir, run.task_seconds)
    bar = "=" * 78
    return f"{bar}\n{title} ({run.seconds:.0f} s; run directory {run.run_dir})\n{bar}\n{text}\n"


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline with kfp.local and print its summary."""
    if not args.local:
        raise ConfigError("only --local runs happen here; use `mirec pipeline submit --host URL`")
    registry = args.registry or str(Path(args.work_dir) / "registry")
    arguments = _arguments(args, str(Path(registry).resolve()))
    _out(
        run_and_summarize(
            arguments, args.work_dir, title="retraining pipeline", verbose=args.verbose
        )
    )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Create one run on a KFP endpoint."""
    from mirec.pipeline.remote import submit

    if not args.registry:
        raise ConfigError("give --registry: the registry directory as the cluster's steps see it")
    run_id = submit(
        _package(args),
        args.host,
        _arguments(args, args.registry),
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
    )
    _out(f"run {run_id} created on {args.host}")
    return 0


def schedule_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recurring run's settings: ``--spec`` YAML first, then the command-line flags."""
    spec: dict[str, Any] = {}
    if args.spec:
        loaded = yaml.safe_load(Path(args.spec).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"schedule spec {args.spec} must be a mapping")
        spec = loaded
    known = {"name", "experiment", "cron", "max_concurrency", "no_catchup", "arguments"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"schedule spec {args.spec}: unknown keys {unknown}; use {sorted(known)}")
    arguments = dict(spec.get("arguments") or {})
    for flag, key in (("source", "source"), ("registry", "registry_root")):
        if getattr(args, flag):
            arguments[key] = getattr(args, flag)
    for flag in ("cron", "name", "experiment"):
        if getattr(args, flag):
            spec[flag] = getattr(args, flag)
    if not spec.get("cron"):
        raise ConfigError("give --cron '0 3 * * *' (5 fields) or a spec file with `cron:`")
    spec["arguments"] = arguments
    return spec


def cmd_schedule(args: argparse.Namespace) -> int:
    """Create a recurring run (scheduled retraining) on a KFP endpoint."""
    from mirec.pipeline.arguments import pipeline_arguments
    from mirec.pipeline.remote import schedule

    spec = schedule_settings(args)
    given = spec["arguments"]
    unknown = sorted(set(given) - SPEC_ARGUMENTS)
    if unknown:
        raise ConfigError(
            f"schedule spec arguments: unknown keys {unknown}; use {sorted(SPEC_ARGUMENTS)}"
        )
    config = args.config or given.get("config")
    overrides = list(given.get("overrides", [])) + list(args.overrides)
    missing = [k for k in ("source", "registry_root") if not given.get(k)]
    if missing:
        raise ConfigError(f"schedule needs pipeline arguments {missing} (flags or spec file)")
    arguments = pipeline_arguments(
        given["source"],
        given["registry_root"],
        _config_tree(config, overrides),
        num_workers=int(given.get("num_workers", args.workers)),
        max_bad_fraction=_override(args.max_bad_fraction, given.get("max_bad_fraction")),
        feature_store={**dict(given.get("feature_store") or {}), **_pairs(args.feature_store)},
        columns=args.columns or str(given.get("columns") or ""),
    )
    recurring_id = schedule(
        _package(args),
        args.host,
        arguments,
        cron=spec["cron"],
        name=spec.get("name", "mirec-retraining"),
        experiment=spec.get("experiment", "mirec"),
        max_concurrency=int(spec.get("max_concurrency", 1)),
        no_catchup=bool(spec.get("no_catchup", True)),
        namespace=args.namespace,
    )
    _out(f"recurring run {recurring_id} created on {args.host}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    """Write the demo event log of one round."""
    from mirec.pipeline.demo import write_demo_data

    out = write_demo_data(args.out, args.round, **_demo_sizes(args))
    _out(f"wrote demo data round {args.round} to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Round 1 then round 2 of the demo: first model -> production, retrained one -> gate."""
    from mirec.pipeline.arguments import pipeline_arguments
    from mirec.pipeline.demo import write_demo_data

    work = Path(args.work_dir)
    if work.exists() and not args.keep:
        shutil.rmtree(work)
    tree = _config_tree(args.config, [*DEMO_OVERRIDES, *args.overrides])
    registry = str((work / "registry").resolve())
    for round_no in range(1, args.rounds + 1):
        source = write_demo_data(work / "data", round_no, **_demo_sizes(args))
        arguments = pipeline_arguments(
            str(source.resolve()), registry, tree, num_workers=args.workers
        )
        _out(run_and_summarize(arguments, work, title=f"round {round_no}", verbose=args.verbose))
    return 0


def _run_flags(p: argparse.ArgumentParser, source_required: bool = False) -> None:
    p.add_argument(
        "--source",
        required=source_required,
        help="event log: dataset directory, events parquet, or a loader path / 'demo'",
    )
    p.add_argument("--registry", help="model registry directory")
    p.add_argument("--config", help="YAML config (defaults in code)")
    p.add_argument("--workers", type=int, default=1, help="training processes (DDP when > 1)")
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        help="override the config's data.max_bad_fraction (fail validation above this share)",
    )
    p.add_argument(
        "--columns",
        help="column mapping of a table --source, e.g. event_ts=timestamp,user_id=uid",
    )
    p.add_argument(
        "--feature-store",
        action="append",
        metavar="KEY=VALUE",
        help="Feast settings: online_store=redis, redis_url=..., registry=..., project=...",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def _compile_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="container image of every step (default $MIREC_COMPONENT_IMAGE)")
    p.add_argument("--pvc", help="PersistentVolumeClaim mounted into every step (shared data)")
    p.add_argument("--mount-path", default="", help="where --pvc is mounted (default /mnt/mirec)")


def _remote_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--package", help="compiled pipeline YAML (default: compile now)")
    _compile_flags(p)
    p.add_argument("--experiment", default="mirec", help="KFP experiment")
    p.add_argument("--namespace", help="namespace of a multi-user KFP deployment")


def _demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, help="users in round 1 (default 1000)")
    p.add_argument("--items", type=int, help="items in the catalog (default 500)")
    p.add_argument("--new-users", type=int, help="users added per round (default 250)")
    p.add_argument("--seed", type=int, default=0, help="generator seed")


def _demo_sizes(args: argparse.Namespace) -> dict[str, int]:
    """The generator sizes given on the command line (the rest keep their defaults)."""
    given = {"num_users": args.users, "num_items": args.items, "new_users": args.new_users}
    return {"seed": args.seed, **{k: v for k, v in given.items() if v is not None}}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``mirec pipeline ...`` to the top-level parser."""
    group = subparsers.add_parser("pipeline", help="the Kubeflow retraining pipeline")
    sub = group.add_subparsers(dest="pipeline_cmd", required=True)

    p = sub.add_parser("compile", help="write the pipeline's IR YAML")
    p.add_argument("--out", default="retraining.yaml", help="YAML file to write")
    _compile_flags(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run the pipeline locally (kfp.local) and print a summary")
    p.add_argument("--local", action="store_true", required=True, help="run with kfp.local")
    p.add_argument("--work-dir", default=WORK_DIR, help="compiled YAML, run outputs and logs")
    p.add_argument("--verbose", action="store_true", help="echo every line the steps print")
    _run_flags(p, source_required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="create one run on a KFP endpoint")
    _remote_flags(p)
    p.add_argument("--run-name", help="the run's display name")
    _run_flags(p, source_required=True)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("schedule", help="create a recurring run (scheduled retraining)")
    _remote_flags(p)
    p.add_argument("--cron", help="5-field crontab expression in UTC, e.g. '0 3 * * *'")
    p.add_argument("--spec", help="recurring-run settings YAML, e.g. infra/kfp/recurring-run.yaml")
    p.add_argument("--name", help="the recurring run's display name")
    _run_flags(p)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("demo-data", help="write the demo event log of round N")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--round", type=int, default=1, help="1 = first log; 2 = plus new events")
    _demo_flags(p)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("demo", help="the quickstart: demo data round 1 then 2, each run locally")
    p.add_argument("--work-dir", default=DEMO_DIR, help="data, registry and runs (cleared first)")
    p.add_argument("--keep", action="store_true", help="keep the registry of an earlier demo")
    p.add_argument("--rounds", type=int, default=2, help="pipeline runs, each with new events")
    p.add_argument("--config", default=DEMO_CONFIG, help="YAML config")
    p.add_argument("--workers", type=int, default=1, help="training processes (DDP when > 1)")
    p.add_argument("--verbose", action="store_true", help="echo every line the steps print")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    _demo_flags(p)
    p.set_defaults(func=cmd_demo)
