"""Run the compiled retraining pipeline locally with ``kfp.local`` (no container, no cluster).

The compiled IR YAML is loaded back (so the compiled artifact is what runs) and executed with
``kfp.local.SubprocessRunner(use_venv=False)``: every step is a subprocess of this Python.
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

from mirec.errors import MirecError

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ERROR_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Exit)): ")
# kfp.local's own progress lines (the steps' output is indented under them)
_ECHO = re.compile(r"^\S.*(Running pipeline|Executing task|finished with status|Skipping)")


class PipelineRunError(MirecError):
    """A local pipeline run failed; the message names the step and its error."""


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
    package: str | Path,
    verbose: bool = False,
) -> LocalRun:
    """Run the compiled retraining pipeline locally with kfp.local's SubprocessRunner.

    Args:
        arguments: the pipeline's parameters (``pipeline_arguments``).
        work_dir: holds the compiled YAML, kfp.local's ``pipeline_root`` and the run logs.
        package: the compiled pipeline YAML (``pipelines.compile``, called by the CLI).
        verbose: echo every line of the steps' output, not only task progress.

    Raises:
        PipelineRunError: a step failed; the message names it and quotes its error.
    """
    from kfp import components, local

    work = Path(work_dir).resolve()
    yaml_path = Path(package)
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
