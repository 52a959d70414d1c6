"""5-field crontab -> KFP's 6-field cron; everything else is rejected with a message."""

from __future__ import annotations

import pytest

from mirec.errors import ConfigError
from mirec.pipeline.cron import to_kfp_cron


@pytest.mark.parametrize(
    ("crontab", "kfp"),
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("*/15 * * * *", "0 */15 * * * *"),
        ("30 2 * * MON-FRI", "0 30 2 * * MON-FRI"),
        ("0 0 1 JAN,JUL *", "0 0 0 1 JAN,JUL *"),
        ("5 4 1-7/2 * 0", "0 5 4 1-7/2 * 0"),
        ("0 12 ? * SUN", "0 0 12 ? * SUN"),
        ("  0   3 * *   *  ", "0 0 3 * * *"),
    ],
)
def test_five_fields_gain_a_seconds_field(crontab: str, kfp: str) -> None:
    assert to_kfp_cron(crontab) == kfp


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 3 * * *", "6 fields; expected the usual 5"),
        ("0 3 * *", "4 fields"),
        ("", "0 fields"),
        ("@daily", "1 fields"),
        ("60 3 * * *", "minute field: 60 is outside 0-59"),
        ("0 24 * * *", "hour field: 24 is outside 0-23"),
        ("0 3 0 * *", "day of month field: 0 is outside 1-31"),
        ("0 3 * 13 *", "month field: 13 is outside 1-12"),
        ("0 3 * * 7", "use 0 for Sunday"),
        ("0 3 * * FUNDAY", "not a number"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("0 5-2 * * *", "runs backwards"),
        ("0 1--2 * * *", "not a value, range or */step"),
        ("? 3 * * *", "minute field"),
    ],
)
def test_anything_else_is_rejected_with_a_message(expression: str, message: str) -> None:
    with pytest.raises(ConfigError, match="cron") as info:
        to_kfp_cron(expression)
    assert message in str(info.value)
