"""Component ``validate_events``: quarantine bad rows, Great Expectations on the event log."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Metrics, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate_events(
    source: str,
    max_bad_fraction: float,
    events: Output[Dataset],
    quarantine: Output[Dataset],
    data_docs: Output[Artifact],
    checks: Output[Metrics],
    columns: str = "",
) -> None:
    """Fail (stopping the run) when too many rows are bad or an expectation fails."""
    from mirec.pipeline.data import validate_events as run_step

    result = run_step(
        source,
        events.path,
        quarantine.path,
        data_docs.path,
        max_bad_fraction=float(max_bad_fraction),
        columns=columns,
    )
    for name, value in result.metrics.items():
        checks.log_metric(name, value)
    events.metadata.update(result.metadata)
