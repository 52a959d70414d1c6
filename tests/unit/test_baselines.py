"""Non-neural floors: popularity ranks by count; ItemKNN recommends co-occurring items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirec.data.batches import SeqBatch, pad_left
from mirec.errors import ConfigError
from mirec.metrics import rank_topk
from mirec.models.baselines import ItemKNN, Popularity, cooccurrence, item_counts

torch.set_num_threads(1)


def _batch(histories: list[list[int]]) -> SeqBatch:
    return SeqBatch(
        pad_left(histories, 10),
        torch.tensor([len(h) for h in histories]),
        torch.zeros(len(histories), dtype=torch.long),
    )


def _top(model: Popularity | ItemKNN, histories: list[list[int]], k: int) -> np.ndarray:
    exclude = [np.array(h, dtype=np.int64) for h in histories]
    targets = [np.zeros(0, dtype=np.int64) for _ in histories]
    return rank_topk(model.score_all(_batch(histories)), exclude, targets, k)


SEQUENCES = [np.array(s) for s in ([1, 2, 5], [1, 2, 6], [3, 4, 5], [3, 4], [6, 5], [5, 6, 5])]


def test_item_counts_ignore_pad() -> None:
    assert item_counts([np.array([0, 1, 1, 3])], 4).tolist() == [0, 2, 0, 1, 0]


def test_popularity_ranks_by_count() -> None:
    pop = Popularity.fit(SEQUENCES, 7)  # counts: 5 -> 5, 6 -> 3, then 1, 2, 3, 4 -> 2, 7 -> 0
    top = _top(pop, [[], [5]], 3)
    assert top[0, :2].tolist() == [5, 6]
    assert top[1, 0] == 6  # history excluded
    assert pop.score_all(_batch([[1]])).shape == (1, 8)


def test_cooccurrence_is_distance_weighted_and_directional() -> None:
    rows, cols, w = cooccurrence([np.array([1, 2, 3])], 3, window=2, backward_weight=0.5)
    table = {(int(a), int(b)): float(x) for a, b, x in zip(rows, cols, w, strict=True)}
    assert table == {(1, 2): 1.0, (2, 3): 1.0, (1, 3): 0.5, (2, 1): 0.5, (3, 2): 0.5, (3, 1): 0.25}


def test_itemknn_recommends_the_co_occurring_item() -> None:
    knn = ItemKNN.fit(SEQUENCES, 7, window=1)
    top = _top(knn, [[1], [3], [3, 1]], 1)
    assert top[:, 0].tolist() == [2, 4, 2]  # the newest item weighs most


def test_itemknn_breaks_ties_by_popularity() -> None:
    knn = ItemKNN.fit(SEQUENCES, 7, window=1)
    # Item 7 never occurs: no neighbour scores, so the ranking is pure popularity.
    assert _top(knn, [[7]], 2)[0].tolist() == [5, 6]
    # Item 2's neighbours by cosine: 1 (1/sqrt(2*2)), 6 (1/sqrt(2*3)), 5 (1/sqrt(2*5)); then the
    # items without co-occurrence by count (3 and 4 twice, 7 never).
    top = _top(knn, [[2]], 6)[0].tolist()
    assert top[:3] == [1, 6, 5]
    assert set(top[3:5]) == {3, 4} and top[5] == 7


def test_itemknn_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="recency_decay"):
        ItemKNN.fit(SEQUENCES, 7, recency_decay=0.0)
