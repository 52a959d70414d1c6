"""Component ``evaluate``: challenger vs production on the challenger's split; the gate."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    events: Input[Dataset],
    registry_root: str,
    run_id: str,
    challenger_metrics: Output[Metrics],
    production_metrics: Output[Metrics],
    gate_report: Output[Artifact],
) -> str:
    """Log both metric sets and the gate's decision (also recorded in the registry, pass or
    fail); return ``"pass"`` or ``"fail"``."""
    import json

    from mirec.pipeline.model import (
        GATE_PREFIX_CHALLENGER,
        GATE_PREFIX_PRODUCTION,
        evaluate_challenger,
    )

    result = evaluate_challenger(model.path, events.path, registry_root, run_id=run_id)
    for name, value in result.metrics.items():
        if name.startswith(GATE_PREFIX_CHALLENGER):
            challenger_metrics.log_metric(name[len(GATE_PREFIX_CHALLENGER) :], value)
        elif name.startswith(GATE_PREFIX_PRODUCTION):
            production_metrics.log_metric(name[len(GATE_PREFIX_PRODUCTION) :], value)
    gate_report.metadata.update(result.metadata)
    with open(gate_report.path, "w") as fh:
        json.dump({**result.metadata, "metrics": result.metrics}, fh, indent=2, default=str)
    return result.decision
