"""The state dict of a TwoTower split into its item tower's and its user side's parts.

The item tower is one module reachable under several names: ``item_tower`` on the TwoTower and
again inside every user tower that embeds the history through it (``user_tower.item_tower``,
``user_tower.extractor.item_tower`` for the multi-tower model), so ``model.state_dict()``
repeats its tensors under each name. The item part is ``model.item_tower.state_dict()`` (keys
without prefix); the user part is every other entry of the full state dict: the user tower's
own layers with ELCRec's intent centres (``user_tower.intents``), the zero-shot MAIL tower
(``zero_shot``) and any state a floor keeps on the model itself (ItemKNN's neighbour tables).
``join_state`` rebuilds the full state dict from the two parts for ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mirec.models.two_tower import TwoTower

ITEM_TOWER = "item_tower"  # the TwoTower's own name for its item tower

StateDict = dict[str, torch.Tensor]


def item_tower_prefixes(model: TwoTower) -> list[str]:
    """Every name under which ``model`` reaches its item tower, ``item_tower`` first.

    Args:
        model: a TwoTower (or a floor).

    Returns:
        Module paths such as ``["item_tower", "user_tower.item_tower"]``.
    """
    names = model.named_modules(remove_duplicate=False)
    return [name for name, module in names if module is model.item_tower]


def split_state(
    model: TwoTower, state: Mapping[str, torch.Tensor] | None = None
) -> tuple[StateDict, StateDict]:
    """Split a full state dict into the item tower's part and the user side's part.

    Args:
        model: the model the state dict belongs to (gives the item tower's names).
        state: a full state dict of ``model`` (e.g. an old bundle's ``model.pt``); None for
            ``model.state_dict()``.

    Returns:
        (item state with keys relative to the item tower, user state with full keys and no
        entry of the item tower).
    """
    full = model.state_dict() if state is None else state
    prefixes = tuple(f"{p}." for p in item_tower_prefixes(model))
    own = f"{ITEM_TOWER}."
    item = {k[len(own) :]: v for k, v in full.items() if k.startswith(own)}
    user = {k: v for k, v in full.items() if not k.startswith(prefixes)}
    return item, user


def join_state(
    model: TwoTower, item_state: Mapping[str, torch.Tensor], user_state: Mapping[str, torch.Tensor]
) -> StateDict:
    """The full state dict of ``model`` from its two parts (the inverse of ``split_state``).

    Args:
        model: the model to load into (gives the item tower's names).
        item_state: the item tower's state dict (keys relative to the item tower).
        user_state: the user side's state dict (full keys).

    Returns:
        A state dict for ``model.load_state_dict(..., strict=True)``.
    """
    full = dict(user_state)
    for prefix in item_tower_prefixes(model):
        full.update({f"{prefix}.{k}": v for k, v in item_state.items()})
    return full
