"""Model registry: ``build_model(cfg, num_items)`` -> TwoTower (item tower + one user tower).

``model.name`` names a user tower of ``MODELS`` or a floor of ``FLOOR_MODELS`` (popularity,
itemknn: fixed weights fitted from counts, see ``mirec.models.baselines``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mirec.config import ModelConfig
from mirec.errors import ConfigError
from mirec.models.baselines import FLOOR_MODELS, check_floor
from mirec.models.cold_start import attach_zero_shot
from mirec.models.comirec import ComiRecDR, ComiRecSA
from mirec.models.content_tower import build_item_tower
from mirec.models.intents import IntentCentres
from mirec.models.item_tower import EMBED_INIT_STD, ItemTower
from mirec.models.mind import MIND
from mirec.models.multi_tower import MultiTower
from mirec.models.sasrec import SASRec
from mirec.models.two_tower import TwoTower
from mirec.schema import DEFAULT_MAX_LEN


def _sasrec(cfg: ModelConfig, item_tower: ItemTower, max_len: int) -> nn.Module:
    return SASRec(
        item_tower, max_len, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, cfg.dropout, cfg.norm
    )


def _comirec_sa(cfg: ModelConfig, item_tower: ItemTower, max_len: int) -> nn.Module:
    return ComiRecSA(item_tower, max_len, cfg.num_interests)


def _comirec_dr(cfg: ModelConfig, item_tower: ItemTower, max_len: int) -> nn.Module:
    return ComiRecDR(item_tower, max_len, cfg.num_interests, cfg.routing_iters)


def _mind(cfg: ModelConfig, item_tower: ItemTower, max_len: int) -> nn.Module:
    return MIND(item_tower, max_len, cfg.num_interests, cfg.routing_iters)


def _multi_tower(cfg: ModelConfig, item_tower: ItemTower, max_len: int) -> nn.Module:
    extractor = MODELS[cfg.extractor](cfg, item_tower, max_len)
    return MultiTower(
        item_tower,
        extractor,
        max_len,
        cfg.num_layers,
        cfg.num_heads,
        cfg.ffn_dim,
        cfg.dropout,
        cfg.norm,
    )


# name -> user-tower constructor (cfg, shared item tower, max_len)
MODELS: dict[str, Callable[[ModelConfig, ItemTower, int], nn.Module]] = {
    "sasrec": _sasrec,
    "comirec_sa": _comirec_sa,
    "comirec_dr": _comirec_dr,
    "mind": _mind,
    "multi_tower": _multi_tower,
}
CAUSAL_MODELS = frozenset({"sasrec"})


def normal_linear_init(user_tower: nn.Module, item_tower: nn.Module) -> None:
    """The user tower's own ``nn.Linear`` layers: weights N(0, 0.02), biases 0 (S3-Rec code).

    The shared item tower inside it keeps its own initialisation.
    """
    shared = {id(m) for m in item_tower.modules()}
    for layer in user_tower.modules():
        if isinstance(layer, nn.Linear) and id(layer) not in shared:
            nn.init.normal_(layer.weight, std=EMBED_INIT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def build_model(
    cfg: ModelConfig,
    num_items: int,
    item_attributes: torch.Tensor | None = None,
    max_len: int = DEFAULT_MAX_LEN,
) -> TwoTower:
    """Build the two towers named by ``cfg.name``.

    Args:
        cfg: model config.
        num_items: N, the number of real items (the tables have N+1 rows, row 0 = PAD).
        item_attributes: optional LongTensor [N+1, A]; used only when ``cfg.use_attributes``.
        max_len: the longest history the user tower accepts (positions / per-position maps);
            pass ``data.max_len``. Histories wider than this raise ConfigError at forward time.

    Returns:
        The untrained TwoTower.

    Raises:
        ConfigError: unknown model name, or ``use_attributes`` without an attribute matrix.
    """
    if cfg.name in FLOOR_MODELS:
        check_floor(cfg)
        return FLOOR_MODELS[cfg.name](num_items)
    if cfg.name not in MODELS:
        known = sorted([*MODELS, *FLOOR_MODELS])
        raise ConfigError(f"model.name {cfg.name!r} is not one of {known}")
    if cfg.use_attributes and item_attributes is None:
        raise ConfigError("model.use_attributes is true but no item attribute matrix was given")
    attrs = item_attributes if cfg.use_attributes or cfg.item_tower == "content" else None
    item_tower = build_item_tower(
        cfg.item_tower, num_items, cfg.dim, attrs, cfg.attribute_pool, cfg.content
    )
    user_tower = MODELS[cfg.name](cfg, item_tower, max_len)
    if cfg.linear_init == "normal":
        normal_linear_init(user_tower, item_tower)
    if cfg.num_intents:  # ELCRec centres: parameters of the user tower, saved with it
        user_tower.add_module("intents", IntentCentres(cfg.num_intents, cfg.dim))
    model = TwoTower(item_tower, user_tower, causal=cfg.name in CAUSAL_MODELS)
    return attach_zero_shot(cfg, model)  # MAIL zero-shot tower when model.zero_shot.enabled


__all__ = ["FLOOR_MODELS", "MODELS", "ItemTower", "TwoTower", "build_model"]
