"""Submit and schedule the compiled retraining pipeline on a KFP cluster (``kfp.Client``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from mirec.pipeline.cron import to_kfp_cron

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "mirec"
DEFAULT_SCHEDULE_NAME = "mirec-retraining"


def _client(host: str, namespace: str | None) -> Any:
    import kfp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow")


def submit(
    package: str | Path,
    host: str,
    arguments: dict[str, Any],
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
) -> str:
    """Create one run of the compiled pipeline on the KFP endpoint ``host``; returns its id.

    KFP's cache is switched off for the run: its steps read the event source and the registry,
    which change between runs without changing the step inputs.
    """
    client = _client(host, namespace)
    result = client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        enable_caching=False,
    )
    log.info("submitted run %s to %s", result.run_id, host)
    return str(result.run_id)


def schedule(
    package: str | Path,
    host: str,
    arguments: dict[str, Any],
    *,
    cron: str,
    name: str = DEFAULT_SCHEDULE_NAME,
    experiment: str = DEFAULT_EXPERIMENT,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    namespace: str | None = None,
) -> str:
    """Create a recurring run (scheduled retraining) on ``host``; returns its id.

    Args:
        package: the compiled pipeline YAML.
        host: the KFP API endpoint, e.g. ``http://ml-pipeline-ui.kubeflow:80``.
        arguments: the pipeline's parameters.
        cron: a 5-field crontab expression (UTC), converted to KFP's 6-field form.
        name: the recurring run's display name.
        experiment: the experiment that holds its runs (created when missing).
        max_concurrency: runs allowed at the same time (1: retrainings never overlap).
        no_catchup: do not backfill runs missed while the schedule was paused.
        namespace: the Kubernetes namespace of a multi-user deployment.

    Raises:
        ConfigError: the cron expression is not a valid 5-field expression.
    """
    kfp_cron = to_kfp_cron(cron)
    client = _client(host, namespace)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    recurring = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=name,
        cron_expression=kfp_cron,
        pipeline_package_path=str(package),
        params=arguments,
        max_concurrency=max_concurrency,
        no_catchup=no_catchup,
        enable_caching=False,
        enabled=True,
    )
    log.info("scheduled %r (%s) on %s", name, kfp_cron, host)
    return str(recurring.recurring_run_id)
