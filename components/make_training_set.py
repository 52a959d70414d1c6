"""Component ``make_training_set``: the point-in-time training frame from the feature store."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def make_training_set(
    features: Input[Dataset],
    events: Input[Dataset],
    training_set: Output[Dataset],
    stats: Output[Metrics],
) -> None:
    """Read each event's user features as of the event's time (point-in-time join)."""
    from mirec.pipeline.data import make_training_set as run_step

    result = run_step(features.path, events.path, training_set.path)
    for name, value in result.metrics.items():
        stats.log_metric(name, value)
    training_set.metadata.update(result.metadata)
