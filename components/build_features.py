"""Component ``build_features``: Spark feature build into a Feast repo, apply + materialize."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def build_features(
    events: Input[Dataset],
    train_config: dict,
    registry_root: str,
    feature_store: dict,
    features: Output[Dataset],
    feature_metrics: Output[Metrics],
) -> None:
    """Sequence features, training examples and the vocabulary (extending production's)."""
    from mirec.pipeline.data import build_features as run_step

    result = run_step(events.path, train_config, registry_root, features.path, feature_store)
    for name, value in result.metrics.items():
        feature_metrics.log_metric(name, value)
    features.metadata.update(result.metadata)
