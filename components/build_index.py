"""Component ``build_index``: the bundle plus its recall-gated faiss index."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def build_index(
    model: Input[Model],
    events: Input[Dataset],
    indexed_model: Output[Model],
    index_metrics: Output[Metrics],
) -> None:
    """Index every item vector; an ANN index must reach the configured recall or falls back."""
    from mirec.pipeline.model import build_model_index

    result = build_model_index(model.path, events.path, indexed_model.path)
    for name, value in result.metrics.items():
        index_metrics.log_metric(name, value)
    indexed_model.metadata.update(result.metadata)
