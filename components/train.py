"""Component ``train``: the feature store's training set (+ held-out users) -> a model bundle."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(
    events: Input[Dataset],
    features: Input[Dataset],
    training_set: Input[Dataset],
    train_config: dict,
    num_workers: int,
    model: Output[Model],
    training_log: Output[Dataset],
    metrics: Output[Metrics],
) -> None:
    """Train on the training set's rows; ``num_workers`` > 1 runs DDP under torchrun."""
    from mirec.pipeline.model import train_model

    result = train_model(
        events.path,
        train_config,
        model.path,
        training_log.path,
        features_dir=features.path,
        training_set_dir=training_set.path,
        num_workers=int(num_workers),
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    model.metadata.update(result.metadata)
