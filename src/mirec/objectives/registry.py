"""The objective registry: main losses by ``loss.kind``, auxiliary terms by name.

A main loss maps a ``LossContext`` to a scalar; exactly one runs per batch (``loss.kind``).
An auxiliary term (a regulariser such as interest repel or routing regularisation) maps the same
context to a scalar that is added with its configured weight. A new objective is a module that
registers itself here; ``compute_loss`` never grows a branch for it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mirec.errors import ConfigError
from mirec.objectives.base import LossContext

Objective = Callable[[LossContext], torch.Tensor]

MAIN: dict[str, Objective] = {}
AUXILIARY: dict[str, Objective] = {}


def register_main(name: str) -> Callable[[Objective], Objective]:
    """Register a main loss under ``loss.kind`` = ``name``."""
    return _register(MAIN, name)


def register_auxiliary(name: str) -> Callable[[Objective], Objective]:
    """Register an auxiliary term under ``name`` (weighted by the config)."""
    return _register(AUXILIARY, name)


def _register(table: dict[str, Objective], name: str) -> Callable[[Objective], Objective]:
    def add(fn: Objective) -> Objective:
        if name in table:
            raise ValueError(f"objective {name!r} is registered twice")
        table[name] = fn
        return fn

    return add


def main_objective(name: str) -> Objective:
    """The main loss registered as ``name``; ConfigError naming the known ones otherwise."""
    if name not in MAIN:
        raise ConfigError(f"loss.kind {name!r} is not one of {sorted(MAIN)}")
    return MAIN[name]


def auxiliary_objective(name: str) -> Objective:
    """The auxiliary term registered as ``name``; ConfigError naming the known ones otherwise."""
    if name not in AUXILIARY:
        raise ConfigError(f"auxiliary loss {name!r} is not one of {sorted(AUXILIARY)}")
    return AUXILIARY[name]
