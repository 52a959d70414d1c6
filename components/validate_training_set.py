"""Component ``validate_training_set``: Great Expectations on the training frame."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate_training_set(
    training_set: Input[Dataset],
    features: Input[Dataset],
    train_config: dict,
    data_docs: Output[Artifact],
    checks: Output[Metrics],
) -> None:
    """Fail (stopping the run before training) when an expectation fails."""
    from mirec.pipeline.data import validate_training_set as run_step

    result = run_step(training_set.path, features.path, train_config, data_docs.path)
    for name, value in result.metrics.items():
        checks.log_metric(name, value)
