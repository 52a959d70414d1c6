"""Compile, run locally, submit and schedule the retraining pipeline (behind ``mirec pipeline``).

Local runs compile the pipeline to IR YAML, load it back (so the compiled artifact is what
runs) and execute it with ``kfp.local.SubprocessRunner(use_venv=False)``: every step is a
subprocess of this Python, no container, no cluster. ``submit`` and ``schedule`` send the same
YAML to a real KFP endpoint with ``kfp.Client``; schedules take a 5-field crontab expression and
hand KFP its 6-field form (seconds first).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mirec.errors import ConfigError, MirecError

log = logging.getLogger(__name__)

PIPELINE_FILE = "retraining.yaml"
DEFAULT_EXPERIMENT = "mirec"
DEFAULT_SCHEDULE_NAME = "mirec-retraining"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ERROR_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Exit)): ")
# kfp.local's own progress lines (the steps' output is indented under them)
_ECHO = re.compile(r"^\S.*(Running pipeline|Executing task|finished with status|Skipping)")


class PipelineRunError(MirecError):
    """A local pipeline run failed; the message names the step and its error."""


# --- cron ------------------------------------------------------------------------------------
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())},
    ),
    ("day of week", 0, 6, {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}),
)


def _cron_value(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    value = names.get(text.upper()) if text.isalpha() else None
    if value is None:
        if not text.isdigit():
            raise ConfigError(f"cron {name} field: {text!r} is not a number")
        value = int(text)
    if not lo <= value <= hi:
        hint = " (use 0 for Sunday)" if name == "day of week" and value == 7 else ""
        raise ConfigError(f"cron {name} field: {value} is outside {lo}-{hi}{hint}")
    return value


def _check_cron_field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> None:
    for part in text.split(","):
        body, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ConfigError(f"cron {name} field: step {step!r} must be a positive number")
        if body in ("*", "?") and (body == "*" or name in ("day of month", "day of week")):
            continue
        ends = body.split("-")
        if len(ends) > 2 or not all(ends):
            raise ConfigError(f"cron {name} field: {part!r} is not a value, range or */step")
        values = [_cron_value(e, name, lo, hi, names) for e in ends]
        if len(values) == 2 and values[0] > values[1]:
            raise ConfigError(f"cron {name} field: range {body!r} runs backwards")


def to_kfp_cron(expression: str) -> str:
    """A 5-field crontab expression -> KFP's 6-field form (seconds first, ``0``).

    ``"0 3 * * *"`` (daily at 03:00) becomes ``"0 0 3 * * *"``. Fields accept numbers, names
    (``JAN``, ``MON``), ranges, lists and ``*/step``; ``?`` in the day fields.

    Raises:
        ConfigError: not exactly 5 fields (a 6-field expression is rejected too: write the
            usual 5 fields, the seconds are added here), or a field out of range.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ConfigError(
            f"cron {expression!r} has {len(fields)} fields; expected the usual 5 "
            "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *' for daily at 03:00"
        )
    for text, (name, lo, hi, names) in zip(fields, _CRON_FIELDS, strict=True):
        _check_cron_field(text, name, lo, hi, names)
    return "0 " + " ".join(fields)


# --- arguments -------------------------------------------------------------------------------
def _drop_default_nones(tree: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
    for key in list(tree):
        value, default = tree[key], defaults.get(key)
        if isinstance(value, dict):
            _drop_default_nones(
                value, default if isinstance(default, dict) else {}, f"{prefix}{key}."
            )
        elif value is None:
            if default is not None:
                raise ConfigError(
                    f"config key {prefix + key!r} is null, which a KFP parameter cannot carry; "
                    f"give it a value (default {default!r})"
                )
            del tree[key]


def kfp_config_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as a KFP ``dict`` parameter: validated, nulls that are defaults left out.

    KFP parameters travel as protobuf Structs, which hold no nulls (and turn ints into floats,
    which the components' ``mirec.config.from_dict`` turns back).

    Raises:
        ConfigError: an unknown key or bad value, or a null where the default is not null.
    """
    from mirec.config import TrainConfig, from_dict

    resolved = from_dict(tree).model_dump(mode="json")
    _drop_default_nones(resolved, TrainConfig().model_dump(mode="json"), "")
    return resolved


def pipeline_arguments(
    source: str,
    registry_root: str,
    train_config: dict[str, Any],
    *,
    num_workers: int = 1,
    max_bad_fraction: float = 0.01,
    feature_store: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The retraining pipeline's parameters (the resolved config tree validates first).

    Raises:
        ConfigError: the config tree has an unknown key or a bad value.
    """
    from mirec.steps.data import store_settings

    resolved = kfp_config_tree(train_config)
    store_settings(feature_store)  # unknown keys fail here, not in the cluster
    if num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers}")
    return {
        "source": str(source),
        "registry_root": str(registry_root),
        "train_config": resolved,
        "num_workers": int(num_workers),
        "max_bad_fraction": float(max_bad_fraction),
        "feature_store": dict(feature_store or {}),
    }


def compile_package(
    out: str | Path, image: str | None = None, *, pvc: str | None = None, mount_path: str = ""
) -> Path:
    """Compile the retraining pipeline to IR YAML at ``out`` (see ``pipelines.compile``).

    Args:
        out: the YAML file.
        image: the container image of every step (default ``components.images.BASE_IMAGE``).
        pvc: a PersistentVolumeClaim mounted into every step (cluster runs), or None.
        mount_path: where it is mounted (default ``pipelines.compile.DEFAULT_MOUNT``).
    """
    from pipelines.compile import DEFAULT_MOUNT, compile_pipeline

    path = compile_pipeline(out, image, pvc=pvc, mount_path=mount_path or DEFAULT_MOUNT)
    log.info("compiled the retraining pipeline to %s", path)
    return path


# --- local runs ------------------------------------------------------------------------------
@dataclass
class _LogTee(io.TextIOBase):
    """Captures kfp.local's output to a file, echoes task progress, records per-task times."""

    file: TextIO
    echo: TextIO
    verbose: bool = False
    starts: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    task_lines: dict[str, list[str]] = field(default_factory=dict)
    current: str = ""
    failed: str = ""
    _pending: str = ""

    def write(self, text: str) -> int:
        self.file.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, raw: str) -> None:
        line = _ANSI.sub("", raw)
        if started := _TASK_START.search(line):
            self.current = started.group(1)
            self.starts[self.current] = time.perf_counter()
            self.task_lines[self.current] = []
        elif ended := _TASK_END.search(line):
            name = ended.group(1)
            self.seconds[name] = time.perf_counter() - self.starts.get(name, time.perf_counter())
            if ended.group(2) != "SUCCESS":
                self.failed = name
        elif self.current:
            self.task_lines[self.current].append(line)
        if self.verbose or _ECHO.search(line):
            self.echo.write(line + "\n")
            self.echo.flush()

    def error_of(self, task: str) -> str:
        """The last exception line (and what follows it) that ``task`` printed, or ""."""
        lines = self.task_lines.get(task, [])
        hits = [i for i, text in enumerate(lines) if _ERROR_LINE.match(text)]
        if not hits:
            return ""
        tail = [text.strip() for text in lines[hits[-1] :] if text.strip()]
        return "\n".join(tail[:20])


@dataclass(frozen=True)
class LocalRun:
    """A finished local run.

    Attributes:
        run_dir: kfp.local's directory of this run (one sub-directory per executed task).
        log_path: the full captured log.
        seconds: wall time of the whole run.
        task_seconds: wall time per executed task, in execution order.
    """

    run_dir: Path
    log_path: Path
    seconds: float
    task_seconds: dict[str, float]


@contextlib.contextmanager
def _captured(log_path: Path, verbose: bool) -> Iterator[_LogTee]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as fh, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        tee = _LogTee(fh, sys.stderr, verbose)
        with contextlib.redirect_stdout(tee):
            yield tee
        fh.write(tee._pending)


def _new_run_dir(pipeline_root: Path, before: set[str]) -> Path:
    fresh = sorted(p for p in pipeline_root.iterdir() if p.is_dir() and p.name not in before)
    if not fresh:
        raise PipelineRunError(f"kfp.local wrote no run directory under {pipeline_root}")
    return fresh[-1]


def run_local(
    arguments: dict[str, Any],
    work_dir: str | Path,
    *,
    package: str | Path | None = None,
    verbose: bool = False,
) -> LocalRun:
    """Run the compiled retraining pipeline locally with kfp.local's SubprocessRunner.

    Args:
        arguments: the pipeline's parameters (``pipeline_arguments``).
        work_dir: holds the compiled YAML, kfp.local's ``pipeline_root`` and the run logs.
        package: an already compiled YAML to run; default: compile into ``work_dir``.
        verbose: echo every line of the steps' output, not only task progress.

    Raises:
        PipelineRunError: a step failed; the message names it and quotes its error.
    """
    from kfp import components, local

    work = Path(work_dir).resolve()
    yaml_path = Path(package) if package else compile_package(work / PIPELINE_FILE)
    pipeline = components.load_component_from_file(str(yaml_path))
    root = work / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    log_path = work / "logs" / time.strftime("run-%Y%m%d-%H%M%S.log")
    started = time.perf_counter()
    with _captured(log_path, verbose) as tee:
        try:
            pipeline(**arguments)
        except RuntimeError as exc:
            step = tee.failed or tee.current or "?"
            detail = tee.error_of(step) or _ANSI.sub("", str(exc))
            raise PipelineRunError(
                f"the pipeline failed in step {step!r}: {detail}\n(full log: {log_path})"
            ) from exc
    run = LocalRun(
        _new_run_dir(root, before), log_path, time.perf_counter() - started, dict(tee.seconds)
    )
    log.info("local run finished in %.1f s: %s", run.seconds, run.run_dir)
    return run


# --- a real KFP endpoint ---------------------------------------------------------------------
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
