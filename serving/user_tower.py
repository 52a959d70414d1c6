"""The user tower as its own service: item-index sequences -> K interest vectors.

bentoml serve serving.user_tower:UserTower --host 127.0.0.1 --port 3001
"""

from __future__ import annotations

import bentoml
import torch

from mirec.registry import BUNDLE_DIR
from mirec.serving.model import load_bundle
from serving.common import model_tag


@bentoml.service(name="mirec_user_tower", workers=1)
class UserTower:
    """The bundle's user tower (no feature store: callers send the sequences)."""

    bundle = bentoml.models.BentoModel(model_tag())

    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.model = load_bundle(self.bundle.path_of(BUNDLE_DIR), str(self.bundle.tag))

    @bentoml.api(route="/encode")
    def encode(self, histories: list[list[int]]) -> list[list[list[float]]]:
        """[B] sequences of item indices -> [B, K, D] interest vectors."""
        return self.model.user_vectors(histories).tolist()
