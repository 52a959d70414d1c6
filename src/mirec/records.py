"""Typed records that cross a process boundary as JSON: one model, one writer, one reader each.

A record (the gate report, the deploy record, the bundle manifest, a step's metadata) is a
frozen pydantic model that refuses unknown fields, so a missing or renamed field fails where it
is read, with the field's name, instead of reading as a default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from mirec.errors import ContractError, MirecError

_SHOWN = 4  # problems named in one message


def describe(exc: ValidationError) -> str:
    """The problems of a failed validation, each naming its field."""
    problems = []
    for error in exc.errors()[:_SHOWN]:
        field = ".".join(str(p) for p in error["loc"]) or "<record>"
        if error["type"] == "missing":
            problems.append(f"field {field!r} is missing")
        elif error["type"] == "extra_forbidden":
            problems.append(f"unknown field {field!r}")
        else:
            problems.append(f"field {field!r}: {error['msg']}")
    more = exc.error_count() - _SHOWN
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


class Record(BaseModel):
    """Base of every typed record: frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def parse(cls, raw: Any, where: str, error: type[MirecError] = ContractError) -> Self:
        """Validate a decoded JSON value; ``error`` names ``where`` and every bad field."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise error(f"{where}: not a valid {cls.__name__}: {describe(exc)}") from exc

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict ``parse`` reads back."""
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: str | Path, error: type[MirecError] = ContractError) -> Self:
        """Read a record written by ``write``."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise error(f"{path}: cannot read {cls.__name__}: {exc}") from exc
        return cls.parse(raw, str(path), error)

    def write(self, path: str | Path) -> Path:
        """Write the record as JSON atomically (temp file, then rename)."""
        out = Path(path)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(self.dump(), indent=2, sort_keys=True))
        os.replace(tmp, out)
        return out
