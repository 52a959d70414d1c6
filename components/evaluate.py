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
    """Log both metric sets and the gate's report (also recorded in the registry, pass or
    fail); return ``"pass"`` or ``"fail"``."""
    from mirec.pipeline.model import evaluate_challenger

    report = evaluate_challenger(model.path, events.path, registry_root, run_id=run_id)
    for name, value in report.challenger_metrics.items():
        challenger_metrics.log_metric(name, value)
    for name, value in report.production_metrics.items():
        production_metrics.log_metric(name, value)
    gate_report.metadata.update(report.dump())
    report.write(gate_report.path)
    return report.decision
