"""Item attribute tokens -> a padded integer matrix the item tower embeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mirec.data.vocab import Vocabulary
from mirec.schema import ITEM_ATTRIBUTES, ITEM_ID


def attribute_matrix(items: pd.DataFrame, vocab: Vocabulary, max_attrs: int = 8) -> np.ndarray:
    """Build int64 [N+1, A] attribute ids (0 = none) aligned with the vocabulary's item indices.

    Attribute tokens get ids 1..V in sorted order; each item keeps at most ``max_attrs`` tokens.
    Items missing from the catalog get an all-zero row.
    """
    num_rows = vocab.size + 1
    if items.empty or ITEM_ATTRIBUTES not in items.columns:
        return np.zeros((num_rows, 1), dtype=np.int64)
    tokens = sorted({t for attrs in items[ITEM_ATTRIBUTES] for t in _as_list(attrs)})
    token_id = {t: i + 1 for i, t in enumerate(tokens)}
    width = max(
        1, min(max_attrs, max((len(_as_list(a)) for a in items[ITEM_ATTRIBUTES]), default=1))
    )
    out = np.zeros((num_rows, width), dtype=np.int64)
    idx = vocab.encode(items[ITEM_ID].astype(str).to_numpy())
    for row, attrs in zip(idx, items[ITEM_ATTRIBUTES], strict=True):
        if row <= 0:
            continue
        ids = [token_id[t] for t in _as_list(attrs)][:width]
        out[row, : len(ids)] = ids
    return out


def _as_list(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]  # type: ignore[attr-defined]
