"""The sticky per-user split: a salted hash of the user id against the canary's weight.

A user's bucket is ``sha256(salt + ":" + user_id)`` read as an integer modulo ``BUCKETS``; the
user sees the canary when the bucket is below ``weight * BUCKETS``. The same salt and weight give
the same arm for a user in every process and after every restart, and raising the weight only
moves users from production to the canary (never back). The salt is made once, at random, and
persisted with the weight in ``<registry root>/canary_split.json`` (one atomic write per change).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

from pydantic import Field

from mirec.errors import ConfigError
from mirec.records import Record

log = logging.getLogger(__name__)

BUCKETS = 10_000
SPLIT_FILE = "canary_split.json"
PRODUCTION_ARM, CANARY_ARM = "production", "canary"


class SplitSettings(Record):
    """The persisted split: the canary's share of users and the hash salt."""

    weight: float = Field(ge=0.0, le=1.0)
    salt: str = Field(min_length=8)


def bucket(user_id: str, salt: str) -> int:
    """The user's bucket in ``[0, BUCKETS)``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_variant(user_id: str, weight: float, salt: str) -> str:
    """``"canary"`` for the users whose bucket is below ``weight``'s share, else production."""
    return CANARY_ARM if bucket(user_id, salt) < round(weight * BUCKETS) else PRODUCTION_ARM


def check_weight(weight: float) -> float:
    """``weight`` when it is a share in [0, 1]; ConfigError naming it otherwise."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ConfigError(f"canary weight must be a number in [0, 1], got {weight!r}")
    return float(weight)


class SplitStore:
    """The split settings of a registry, in ``<root>/canary_split.json``.

    Args:
        root: the registry root.
        default_weight: the weight of a split that was never set.
    """

    def __init__(self, root: str | Path, default_weight: float = 0.1) -> None:
        self.path = Path(root) / SPLIT_FILE
        self.default_weight = check_weight(default_weight)

    def load(self) -> SplitSettings:
        """The stored settings; the first call makes and persists a fresh salt."""
        if self.path.exists():
            return SplitSettings.read(self.path, ConfigError)
        settings = SplitSettings(weight=self.default_weight, salt=secrets.token_hex(16))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        settings.write(self.path)
        log.info("new canary split in %s (weight %.3f)", self.path, settings.weight)
        return settings

    def set_weight(self, weight: float) -> SplitSettings:
        """Persist a new weight (the salt is kept, so users keep their buckets)."""
        settings = self.load().model_copy(update={"weight": check_weight(weight)})
        settings.write(self.path)
        log.info("canary weight -> %.3f", settings.weight)
        return settings
