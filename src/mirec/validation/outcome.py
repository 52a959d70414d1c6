"""Outcome of a GX suite run: JSON-able results per expectation, a readable summary, require."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirec.errors import DataValidationError

MAX_EXAMPLES = 5  # unexpected values quoted per failed expectation


@dataclass(frozen=True)
class ValidationOutcome:
    """The result of one suite run.

    Attributes:
        success: every expectation passed.
        statistics: GX's counts (evaluated / successful / unsuccessful expectations, percent).
        results: one JSON-able dict per expectation (``expectation``, ``column``, ``kwargs``,
            ``success``, ``observed_value``, ``unexpected_count``, ``unexpected_percent``,
            ``examples``, ``exception``).
        docs_path: the run's Data Docs HTML page, or None when no ``docs_dir`` was given.
        suite_name: the suite that ran.
    """

    success: bool
    statistics: dict[str, Any]
    results: list[dict[str, Any]]
    docs_path: str | None
    suite_name: str = ""

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The results of the expectations that failed."""
        return [r for r in self.results if not r["success"]]

    def summary(self) -> str:
        """Readable lines: the verdict, each failed expectation, and the Data Docs page."""
        stats = self.statistics
        head = (
            f"suite '{self.suite_name}' {'passed' if self.success else 'FAILED'}: "
            f"{stats.get('unsuccessful_expectations', 0)} of "
            f"{stats.get('evaluated_expectations', 0)} expectations failed"
        )
        lines = [head] + [f"  - {_describe(r)}" for r in self.failures]
        lines.append(f"Data Docs: {self.docs_path or 'not written (no docs_dir)'}")
        return "\n".join(lines)


def _describe(result: dict[str, Any]) -> str:
    args = ", ".join(
        f"{k}={v}" for k, v in result["kwargs"].items() if k not in ("column", "column_A")
    )
    text = f"{result['expectation']}({result['column']}{', ' + args if args else ''})"
    if result["exception"]:
        return f"{text}: error {result['exception']}"
    if result["unexpected_count"] is not None:
        percent = result["unexpected_percent"] or 0.0
        text += f": {result['unexpected_count']} unexpected ({percent:.3g}%)"
        if result["examples"]:
            text += f", e.g. {result['examples']}"
    if result["observed_value"] is not None:
        text += f"; observed {result['observed_value']}"
    return text


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalars
        return value.item()
    return str(value)


def _exception_text(info: Any) -> str | None:
    """The first raised exception message in GX's (possibly nested) ``exception_info``."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception").splitlines()[0][:300]
    for nested in info.values():
        text = _exception_text(nested)
        if text:
            return text
    return None


def result_dict(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    detail = result.result or {}
    column = kwargs.get("column") or ",".join(
        str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs
    )
    examples = (detail.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]
    return {
        "expectation": config.type,
        "column": column or "(table)",
        "kwargs": jsonable(kwargs),
        "success": bool(result.success),
        "observed_value": jsonable(detail.get("observed_value")),
        "unexpected_count": detail.get("unexpected_count"),
        "unexpected_percent": detail.get("unexpected_percent"),
        "examples": jsonable(examples),
        "exception": _exception_text(result.exception_info),
    }


def require(outcome: ValidationOutcome) -> None:
    """Fail when a suite failed.

    Raises:
        DataValidationError: ``outcome.success`` is False; the message is ``outcome.summary()``
            (each failed expectation with counts and examples, and the Data Docs page).
    """
    if not outcome.success:
        raise DataValidationError(outcome.summary())
