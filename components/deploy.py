"""Component ``deploy``: register the bundle in the model registry and stage it."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    gate_report: Input[Artifact],
    features: Input[Dataset],
    registry_root: str,
    run_id: str,
    run_name: str,
    deployment: Output[Artifact],
) -> str:
    """Import the bundle into BentoML's store; first model -> production, later -> canary.

    Serving loads the registry's ``production`` and ``canary`` stages (see docs/pipeline.md).
    """
    from mirec.pipeline.model import deploy_model

    record = deploy_model(
        model.path,
        gate_report.path,
        registry_root,
        run_id=run_id,
        run_name=run_name,
        feature_repo=features.uri,
    )
    deployment.metadata.update(record.dump())
    record.write(deployment.path)
    return record.stage
