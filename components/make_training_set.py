"""Component ``make_training_set``: the protocol's training examples from the feature store."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def make_training_set(
    features: Input[Dataset],
    events: Input[Dataset],
    train_config: dict,
    training_set: Output[Dataset],
    stats: Output[Metrics],
) -> None:
    """Join each training event to the user features Feast serves for its time (point in time)."""
    from mirec.pipeline.data import make_training_set as run_step

    result = run_step(features.path, events.path, training_set.path, train_config)
    for name, value in result.metrics.items():
        stats.log_metric(name, value)
    training_set.metadata.update(result.metadata)
