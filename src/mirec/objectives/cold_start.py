"""The cold-start stage before training: id add-on for seen items, pretraining, MAIL co-training.

``prepare_cold_start`` is the one call the training loop makes after building the model; it does
nothing for a model without a content item tower or a zero-shot tower.
"""

from __future__ import annotations

import numpy as np
import torch

from mirec.config import TrainConfig
from mirec.errors import ConfigError
from mirec.models.cold_start import ZERO_SHOT
from mirec.models.content_tower import ContentItemTower
from mirec.models.mail import ZeroShotTower
from mirec.models.two_tower import TwoTower
from mirec.objectives.mail import ZeroShotTrainer
from mirec.objectives.multiview import pretrain_content_tower


def prepare_cold_start(
    model: TwoTower,
    item_counts: np.ndarray,
    user_profiles: np.ndarray | None,
    cfg: TrainConfig,
) -> None:
    """Set up the cold-start parts of ``model`` for training.

    Content tower: items with training events (``item_counts`` [N+1] > 0) get the id add-on,
    and ``pretrain.epochs`` of multi-view pretraining run over them. Zero-shot tower: a
    ``ZeroShotTrainer`` is hooked onto the user tower with the training users' profiles.

    Raises:
        ConfigError: a zero-shot tower without the training users' profiles.
    """
    tower = model.item_tower
    if isinstance(tower, ContentItemTower):
        counts = torch.from_numpy(np.asarray(item_counts, dtype=np.int64))
        tower.set_known_items(counts)
        if cfg.pretrain.epochs:
            assert tower.item_attributes is not None
            has_content = (tower.item_attributes != 0).any(-1)
            seen = torch.nonzero((counts > 0) & has_content).flatten()
            pretrain_content_tower(tower, seen, cfg.pretrain, cfg.seed)
    zero_shot = getattr(model, ZERO_SHOT, None)
    if isinstance(zero_shot, ZeroShotTower):
        if user_profiles is None:
            raise ConfigError("model.zero_shot is enabled but no user profiles were prepared")
        profiles = torch.from_numpy(np.asarray(user_profiles, dtype=np.int64))
        trainer = ZeroShotTrainer(zero_shot, profiles, cfg.model.zero_shot)
        model.user_tower.register_forward_hook(trainer)
