"""Model steps of the retraining pipeline: train, evaluate + gate, build the index, deploy.

Each function takes paths (the components' artifact paths) and plain values, calls the library
and returns a ``StepResult`` or a typed record (``GateReport``, ``DeployRecord``); the
components only log it. The evaluation gate compares the challenger with the registry's current
production model on the CHALLENGER's held-out split, each model at its own input width (targets
unknown to the older vocabulary count as misses).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirec.bundle import INDEX_FILE, ModelBundle, attach_file
from mirec.config import TrainConfig, from_dict
from mirec.data.batches import eval_batches
from mirec.data.splits import EvalData
from mirec.data.vocab import Vocabulary
from mirec.errors import ContractError
from mirec.pipeline.io import DeployRecord, IndexedModel, IndexRecord, StepResult, read_dataset_dir
from mirec.registry import CANARY, PRODUCTION, GateReport, Registry, config_hash, deploy_version

log = logging.getLogger(__name__)

MAX_QUERY_USERS = 1000  # users whose interest vectors gate the ANN index's recall


def _use_threads(cfg: TrainConfig) -> None:
    """Apply ``optim.num_threads`` to this step's torch work too (evaluation, user vectors)."""
    if cfg.optim.num_threads:
        torch.set_num_threads(cfg.optim.num_threads)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``, replacing whatever is at ``dst``."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


def train_model(
    events_dir: str | Path,
    train_config: dict[str, Any],
    model_dir: str | Path,
    log_dir: str | Path,
    *,
    features_dir: str | Path | None = None,
    training_set_dir: str | Path | None = None,
    num_workers: int = 1,
) -> StepResult:
    """Train on the feature store's training set; the bundle lands in ``model_dir``.

    With ``training_set_dir`` the training examples are its rows, exactly
    (``mirec.training.prepare_from_training_set``: the histories Feast served, checked to be
    the protocol's training examples); validation and test users come from the protocol's split
    of the event log. Without it the examples are built in memory from the event log. The
    feature build contributes its vocabulary, so the model's item indices are the feature
    store's.

    Args:
        events_dir: dataset directory with the clean events (from ``validate_events``).
        train_config: a (partial) ``TrainConfig`` tree.
        model_dir: where the model bundle is written.
        log_dir: the run directory: per-epoch ``metrics.jsonl``, ``training_curve.png``.
        features_dir: the feature build (its append-only vocabulary extends production's);
            None or no vocabulary there: build one from the events.
        training_set_dir: the ``make_training_set`` output, or None.
        num_workers: > 1 trains with DistributedDataParallel under torchrun.

    Raises:
        DataValidationError: the training set's rows are not the protocol's training examples,
            or its row count differs from the examples trained on.
    """
    import pandas as pd

    from mirec.errors import DataValidationError
    from mirec.features.repo import Layout
    from mirec.pipeline.data import TRAINING_SET_FILE
    from mirec.training import num_examples, prepare, prepare_from_training_set, train

    cfg = from_dict(train_config)
    dataset = read_dataset_dir(events_dir)
    vocab_path = Layout(Path(features_dir)).vocab if features_dir else None
    vocab = Vocabulary.load(vocab_path) if vocab_path and vocab_path.is_file() else None
    rows = None
    if training_set_dir is not None:
        frame = pd.read_parquet(Path(training_set_dir) / TRAINING_SET_FILE)
        rows = len(frame)
        prep = prepare_from_training_set(cfg, dataset, frame, vocab)
    else:
        prep = prepare(cfg, dataset, vocab)
    examples = num_examples(prep)
    if rows is not None and rows != examples:
        raise DataValidationError(f"training set has {rows} rows but {examples} examples")
    result = train(
        cfg, dataset, log_dir, num_workers=int(num_workers), progress=False, prepared=prep
    )
    _replace_dir(Path(result.bundle_dir), Path(model_dir))
    metadata = {
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 2),
        "examples_per_second": round(result.examples_per_second, 1),
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "num_workers": int(num_workers),
        "examples_from": "training set" if rows is not None else "event log",
    }
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics["train_seconds"] = float(result.train_seconds)
    metrics["training_examples"] = float(examples)
    if rows is not None:
        metrics["training_set_rows"] = float(rows)
    return StepResult(metrics=metrics, metadata=metadata)


def production_bundle(registry_root: str | Path) -> tuple[ModelBundle | None, int | None]:
    """The registry's current production bundle and its version (None, None if none)."""
    registry = Registry(registry_root)
    version = registry.stage("production")
    if version is None:
        return None, None
    return ModelBundle.load(registry.bundle_path(version.version)), version.version


def evaluate_challenger(
    model_dir: str | Path, events_dir: str | Path, registry_root: str | Path, run_id: str = ""
) -> GateReport:
    """Evaluate challenger and production on the challenger's held-out split, then gate.

    Each model reads histories at its own config's width and with its own vocabulary
    (``mirec.evaluate.evaluate_bundle``), so a retrain may change ``data.max_len``. The report
    (decision, both metric sets, the challenger's lineage: ``run_id``, data fingerprint, config
    hash) is recorded in the registry whether the gate passes or fails.
    """
    from mirec.evaluate import evaluate_bundle, gate
    from mirec.training import prepare

    challenger = ModelBundle.load(model_dir)
    cfg = challenger.config
    _use_threads(cfg)
    split = prepare(cfg, read_dataset_dir(events_dir), challenger.vocab).split
    ours = evaluate_bundle(challenger, split, cfg.eval, which="test")
    prod_bundle, prod_version = production_bundle(registry_root)
    theirs = None
    if prod_bundle is not None:
        theirs = evaluate_bundle(prod_bundle, split, cfg.eval, which="test")
    else:
        log.info("no production model yet: the gate checks absolute thresholds only")
    result = gate(ours, theirs, cfg.gate)
    report = GateReport(
        decision=result.decision,
        metric=result.metric,
        challenger_value=result.challenger_value,
        production_value=result.production_value,
        production_version=prod_version,
        reasons=tuple(result.reasons),
        min_value=cfg.gate.min_value,
        max_regression=cfg.gate.max_regression,
        challenger_metrics={k: float(v) for k, v in ours.items()},
        production_metrics={k: float(v) for k, v in (theirs or {}).items()},
        pipeline_run_id=run_id,
        data_fingerprint=challenger.data_fingerprint,
        config_hash=config_hash(cfg.model_dump(mode="json")),
        code_version=code_version(),
    )
    Registry(registry_root).record_gate(report)
    return report


@torch.no_grad()
def interest_vectors(
    bundle: ModelBundle, data: EvalData, max_len: int, limit: int = MAX_QUERY_USERS
) -> np.ndarray:
    """The model's interest vectors for the first ``limit`` users of ``data``: [Q, K, D]."""
    bundle.model.eval()
    rows = EvalData(
        data.user_ids[:limit], data.histories[:limit], data.targets[:limit], data.exclude[:limit]
    )
    parts = [
        bundle.model.user_vectors(batch).float().cpu().numpy()
        for batch, _ in eval_batches(rows, bundle.config.eval.batch_size, max_len)
    ]
    dim = bundle.config.model.dim
    empty = np.zeros((0, bundle.config.model.interests, dim), np.float32)
    return np.concatenate(parts).astype(np.float32) if parts else empty


def build_model_index(
    model_dir: str | Path, events_dir: str | Path, out_dir: str | Path
) -> StepResult:
    """Copy the bundle to ``out_dir`` and add its faiss index (recall-gated on real users).

    The index holds every item's vector under its vocabulary index (1..N, PAD excluded).
    """
    from mirec.index import build_index, save_index
    from mirec.training import prepare

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model_dir, out)
    bundle = ModelBundle.load(out)
    cfg = bundle.config
    _use_threads(cfg)
    split = prepare(cfg, read_dataset_dir(events_dir), bundle.vocab).split
    queries = interest_vectors(bundle, split.test, split.max_len)
    item_vecs = bundle.item_vectors()[1:]  # [N, D] without PAD
    item_ids = np.arange(1, item_vecs.shape[0] + 1, dtype=np.int64)
    index, info = build_index(
        item_vecs, item_ids, cfg.index, query_sample=queries if len(queries) else None
    )
    save_index(index, out / INDEX_FILE)
    record = IndexRecord.parse(info.to_dict(), "index info")
    attach_file(out, INDEX_FILE, extra={"index": record.dump()})
    metrics = {
        f"index_recall@{info.k}": float(info.recall_at_k if info.recall_at_k is not None else -1),
        "index_build_seconds": float(info.build_seconds),
        "index_items": float(info.num_items),
        "index_fell_back": float(info.fell_back),
    }
    return StepResult(metrics=metrics, metadata=IndexedModel(index=record).dump())


CODE_VERSION_ENV = "MIREC_CODE_VERSION"


def code_version() -> str:
    """The code a model is trained with: ``$MIREC_CODE_VERSION`` (e.g. the image's git sha).

    Without it: ``<mirec version>+src.<sha256 of the package's source files>[:12]``, so the same
    code gives the same string and an edited checkout a new one.
    """
    import os

    import mirec

    given = os.environ.get(CODE_VERSION_ENV, "").strip()
    if given:
        return given
    package = Path(mirec.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return f"{mirec.__version__}+src.{digest.hexdigest()[:12]}"


def deploy_model(
    model_dir: str | Path,
    gate_report: str | Path,
    registry_root: str | Path,
    *,
    run_id: str = "",
    run_name: str = "",
    feature_repo: str = "",
) -> DeployRecord:
    """Register the indexed bundle and deploy it: first model -> production, later -> canary.

    Registration is idempotent: the same data fingerprint, resolved config and code version
    give back the registered version. Lineage records the pipeline run, the gate's decision,
    both metric sets, the index and the Feast repository the model's features came from.
    """
    from mirec.manifest import read_manifest

    bundle = Path(model_dir)
    manifest = read_manifest(bundle)
    report = GateReport.read(gate_report)
    if "index" not in manifest.extra:
        raise ContractError(f"bundle {bundle}: manifest extra has no 'index' (not indexed)")
    index = IndexRecord.parse(manifest.extra["index"], f"bundle {bundle}: extra.index")
    lineage = {
        "pipeline_run_id": run_id,
        "pipeline_run_name": run_name,
        "gate": report.dump(),
        "production_metrics": report.production_metrics,
        "index": index.dump(),
        "feature_repo": feature_repo,
    }
    registry = Registry(registry_root)
    entry = registry.register(
        bundle,
        metrics=report.challenger_metrics,
        data_fingerprint=manifest.data_fingerprint,
        config=manifest.config,
        code_version=code_version(),
        lineage=lineage,
    )
    stage = deploy_version(registry, entry.version)
    production, canary = registry.stage(PRODUCTION), registry.stage(CANARY)
    return DeployRecord(
        version=entry.version,
        tag=entry.tag,
        stage=stage,
        production_version=production.version if production else None,
        canary_version=canary.version if canary else None,
        registry_root=str(registry.root),
        bundle_path=str(registry.bundle_path(entry.version)),
    )
