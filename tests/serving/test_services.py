"""The BentoML service classes through their Python API (no server): entry, towers, composed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from bentoml.exceptions import BentoMLException

from tests.serving.conftest import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.serving, pytest.mark.spark]


@pytest.fixture(scope="module")
def services(deployment: Deployment) -> Iterator[dict[str, Any]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("MIREC_REGISTRY", str(deployment.registry_root))
    mp.delenv("MIREC_MODEL_TAG", raising=False)
    # BentoML resolves its model store once per process (the first BENTOML_HOME it saw, maybe
    # an earlier test's); the services read the registry's store, as a served process does
    from bentoml._internal.configuration.containers import BentoMLContainer

    from mirec.registry import Registry

    BentoMLContainer.model_store.set(Registry(deployment.registry_root).store)
    from serving.composed import ComposedRecommender
    from serving.item_tower import ItemTower
    from serving.service import Recommender
    from serving.user_tower import UserTower

    yield {
        "entry": Recommender(),
        "composed": ComposedRecommender(),
        "user": UserTower(),
        "item": ItemTower(),
    }
    BentoMLContainer.model_store.reset()
    mp.undo()


def _known_user(deployment: Deployment) -> str:
    counts = deployment.dataset.events["user_id"].astype(str).value_counts()
    return str(counts.index[0])


def test_entry_and_composed_services_agree(
    services: dict[str, Any], deployment: Deployment
) -> None:
    user = _known_user(deployment)
    inproc = asyncio.run(services["entry"].recommend(user_id=user, k=8))
    composed = asyncio.run(services["composed"].recommend(user_id=user, k=8))
    assert inproc.model_version == composed.model_version == "v1"
    assert inproc.items == composed.items and len(inproc.items) == 8
    assert np.allclose(inproc.scores, composed.scores, atol=1e-4)


def test_entry_service_refuses_with_the_status(services: dict[str, Any]) -> None:
    with pytest.raises(BentoMLException) as err:
        asyncio.run(services["entry"].recommend(user_id="1", k=0))
    assert err.value.error_code == 400 and "k must be a positive integer" in str(err.value)
    with pytest.raises(BentoMLException) as err:
        services["entry"].feedback(request_id="nope", item_id="1")
    assert err.value.error_code == 404


def test_user_tower_and_item_tower(services: dict[str, Any]) -> None:
    vectors = services["user"].encode(histories=[[1, 2, 3], [4]])
    assert np.asarray(vectors).shape == (2, 2, 16)  # [B, K, D] of the test model
    found = services["item"].search(vectors=vectors, k=5, exclude=[[1, 2, 3], [4]])
    assert len(found.ids) == 2 and all(len(row) == 5 for row in found.ids)
    assert not {1, 2, 3} & set(found.ids[0]) and 4 not in found.ids[1]
    added = services["item"].items(items=[{"item_id": "tower-new", "similar_to": ["1", "2"]}])
    assert list(added.added) == ["tower-new"] and added.added["tower-new"] > 0
