"""Which source column feeds which canonical event column: ``--columns``, aliases and warnings.

A table's columns are matched to ``TABLE_COLUMNS`` in this order: an explicit mapping
(``--columns event_ts=timestamp,user_id=uid``), the canonical name, then a common alias
(``ALIASES``). Columns known to carry nothing the event log keeps (``IGNORED_COLUMNS``, e.g.
``rating``) are skipped quietly; any other column left over is named in a warning, and a table
without a time column says, once and loudly, that its times are synthesized.
"""

from __future__ import annotations

import logging

from mirec.errors import ConfigError, DataFormatError
from mirec.schema import EVENT_ID, EVENT_TS, EVENT_TYPE, ITEM_ID, SEQ_POS, USER_ID

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (USER_ID, ITEM_ID, EVENT_TS, EVENT_TYPE, EVENT_ID, SEQ_POS)
# Common names of the canonical columns in public files, tried in this order.
ALIASES: dict[str, tuple[str, ...]] = {
    USER_ID: ("user", "uid", "userid"),
    ITEM_ID: ("item", "iid", "itemid"),
    EVENT_TS: ("timestamp", "ts", "time"),
    EVENT_TYPE: ("type",),
}
IGNORED_COLUMNS = ("rating",)  # present in many files, not part of the event log


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"event_ts=timestamp,user_id=uid"`` -> ``{"event_ts": "timestamp", "user_id": "uid"}``.

    Raises:
        ConfigError: a pair without ``=``, an empty name, a canonical name twice or one that
            is not in ``TABLE_COLUMNS``.
    """
    mapping: dict[str, str] = {}
    for pair in (spec or "").split(","):
        if not pair.strip():
            continue
        canonical, sep, source = (part.strip() for part in pair.partition("="))
        if not sep or not canonical or not source:
            raise ConfigError(f"--columns takes CANONICAL=SOURCE pairs, got {pair.strip()!r}")
        if canonical not in TABLE_COLUMNS:
            raise ConfigError(
                f"--columns: {canonical!r} is not a canonical column; use {list(TABLE_COLUMNS)}"
            )
        if canonical in mapping:
            raise ConfigError(f"--columns maps {canonical!r} twice")
        mapping[canonical] = source
    return mapping


def resolve_columns(
    header: list[str], mapping: dict[str, str] | None, source: str
) -> dict[str, str]:
    """Canonical column -> source column for a table with ``header``; warns about the rest.

    Args:
        header: the source's column names.
        mapping: explicit canonical -> source names (``parse_columns``); they win.
        source: the file, for messages.

    Raises:
        ConfigError: the mapping names a column that is not canonical.
        DataFormatError: a mapped column is not in the header, or no user / item column.
    """
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(TABLE_COLUMNS))
    if unknown:
        raise ConfigError(f"column mapping has unknown canonical columns {unknown}")
    for canonical, column in mapping.items():
        if column not in header:
            raise DataFormatError(
                source, 1, f"--columns {canonical}={column}: no column {column!r} in {header}"
            )
    chosen = dict(mapping)
    for canonical in TABLE_COLUMNS:
        if canonical in chosen:
            continue
        candidates = (canonical, *ALIASES.get(canonical, ()))
        found = next((c for c in candidates if c in header and c not in chosen.values()), None)
        if found is not None:
            chosen[canonical] = found
            if found != canonical:
                logger.info("%s: reading column %r as %s", source, found, canonical)
    for needed in (USER_ID, ITEM_ID):
        if needed not in chosen:
            raise DataFormatError(
                source,
                1,
                f"no {needed} column (or alias {list(ALIASES[needed])}); found {header}; "
                f"map one with --columns {needed}=NAME",
            )
    _warn_unused(header, chosen, source)
    if EVENT_TS not in chosen:
        logger.warning(
            "%s has NO TIME COLUMN (%s, an alias %s, or --columns %s=NAME): every event gets a "
            "synthesized time in row order, so unparsable or future times cannot be found",
            source,
            EVENT_TS,
            list(ALIASES[EVENT_TS]),
            EVENT_TS,
        )
    return chosen


def _warn_unused(header: list[str], chosen: dict[str, str], source: str) -> None:
    used = set(chosen.values())
    unused = [c for c in header if c not in used and c not in IGNORED_COLUMNS]
    if unused:
        logger.warning(
            "%s: columns %s are not read (neither canonical %s, an alias, nor mapped with "
            "--columns CANONICAL=NAME)",
            source,
            unused,
            list(TABLE_COLUMNS),
        )
