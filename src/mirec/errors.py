"""The error hierarchy raised at boundaries: each message names the offending key, file or value."""

from __future__ import annotations


class MirecError(Exception):
    """Base class of every error mirec raises on purpose."""


class ConfigError(MirecError, ValueError):
    """A configuration is invalid: unknown key, bad value or bad override."""


class DataFormatError(MirecError, ValueError):
    """A file is not in the expected format.

    Args:
        path: the file.
        line: 1-based line number, or None when the problem is not tied to a line.
        problem: what is wrong.
    """

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class DataValidationError(MirecError):
    """Rows break the data contract beyond the configured tolerance, or a suite failed."""


class BundleMismatchError(MirecError):
    """A model bundle is of another format, corrupt, incomplete or inconsistent."""


class FeatureLookupError(MirecError):
    """The feature store could not serve the requested features."""


class ContractError(MirecError, ValueError):
    """A record passed between steps (gate report, deploy record, metadata) is incomplete."""


class RegistryError(MirecError):
    """The model registry is asked for something it does not hold."""
