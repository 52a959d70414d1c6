"""Crontab expressions for scheduled retraining: 5-field crontab in, KFP's 6-field form out."""

from __future__ import annotations

from mirec.errors import ConfigError

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
