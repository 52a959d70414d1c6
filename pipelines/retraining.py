"""The retraining pipeline: validate, features, training set, train, gate, index, deploy.

Wiring only; every step is a component in ``components/``. Steps that read or write state
outside their artifacts (the event source, the model registry) never use KFP's cache.
"""

from kfp import dsl

from components.build_features import build_features
from components.build_index import build_index
from components.deploy import deploy
from components.evaluate import evaluate
from components.make_training_set import make_training_set
from components.train import train
from components.validate_events import validate_events
from components.validate_training_set import validate_training_set

PIPELINE_NAME = "mirec-retraining"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Validate new events, rebuild features, retrain, gate against production, "
    "index and deploy (first model -> production, later ones -> canary).",
)
def retraining(
    source: str,
    registry_root: str,
    max_bad_fraction: float,
    train_config: dict = {},  # noqa: B006 (KFP takes the default as a constant)
    num_workers: int = 1,
    feature_store: dict = {},  # noqa: B006
    columns: str = "",
) -> None:
    """Retrain on the current event log and deploy the model if it passes the gate.

    Args:
        source: the event log: a dataset directory (``events.parquet`` + ``items.parquet`` +
            ``users.parquet``), a canonical events parquet, or any path ``load_dataset`` reads.
        registry_root: the model registry's directory (a shared volume on a cluster).
        train_config: a (partial) ``TrainConfig`` tree; unknown keys fail the run.
        num_workers: training processes (DistributedDataParallel under torchrun when > 1).
        max_bad_fraction: the share of quarantined events above which validation fails
            (``pipeline_arguments`` passes the config's ``data.max_bad_fraction``).
        feature_store: Feast store settings (``online_store``: "sqlite" | "redis",
            ``redis_url``, ``registry``: "sqlite" | a postgresql:// URL, ``project``);
            empty = SQLite files inside the features artifact.
        columns: column mapping of a table source, ``"event_ts=timestamp,user_id=uid"``.
    """
    checked = validate_events(source=source, max_bad_fraction=max_bad_fraction, columns=columns)
    checked.set_caching_options(False)
    events = checked.outputs["events"]

    features = build_features(
        events=events,
        train_config=train_config,
        registry_root=registry_root,
        feature_store=feature_store,
    )
    features.set_caching_options(False)
    training_set = make_training_set(
        features=features.outputs["features"], events=events, train_config=train_config
    )
    checked_set = validate_training_set(
        training_set=training_set.outputs["training_set"],
        features=features.outputs["features"],
        train_config=train_config,
    )

    trained = train(
        events=events,
        features=features.outputs["features"],
        training_set=training_set.outputs["training_set"],
        train_config=train_config,
        num_workers=num_workers,
    ).after(checked_set)
    gate = evaluate(
        model=trained.outputs["model"],
        events=events,
        registry_root=registry_root,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    gate.set_caching_options(False)

    with dsl.If(gate.outputs["Output"] == "pass", name="gate-passed"):
        indexed = build_index(model=trained.outputs["model"], events=events)
        deployed = deploy(
            model=indexed.outputs["indexed_model"],
            gate_report=gate.outputs["gate_report"],
            features=features.outputs["features"],
            registry_root=registry_root,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        deployed.set_caching_options(False)
