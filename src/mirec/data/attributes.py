"""Item attribute tokens and item / user content -> padded integer matrices the towers embed.

Two encodings: ``attribute_matrix`` numbers the catalog's attribute tokens 1..V (the id item
tower's attribute add-on); the content matrices hash tokens into a fixed number of buckets
(``hash_token``), so a new item or user with tokens never seen in training still encodes, and
serving needs no token table. Item text becomes a bag of hashed words and character trigrams:
an offline text encoder with nothing to download.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from mirec.config import ContentConfig, ZeroShotConfig
from mirec.data.vocab import Vocabulary
from mirec.errors import DataValidationError
from mirec.schema import ITEM_ATTRIBUTES, ITEM_ID, ITEM_TEXT, USER_ATTRIBUTES, USER_ID

ATTR_SALT, TEXT_SALT, PROFILE_SALT = "attr", "text", "profile"
AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # MovieLens-1M age groups: <18, 18-24, ..., 56+
_WORD = re.compile(r"[0-9a-z]+")


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


def hash_token(token: str, salt: str, buckets: int) -> int:
    """A stable bucket in 1..``buckets`` for ``token`` (blake2b of ``salt:token``; 0 = none)."""
    digest = hashlib.blake2b(f"{salt}:{token}".encode(), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % buckets


def hashed_row(tokens: Iterable[str], salt: str, buckets: int, width: int) -> np.ndarray:
    """int64 [width]: the first ``width`` distinct hashed tokens, right-padded with 0."""
    out = np.zeros(width, dtype=np.int64)
    seen: list[int] = []
    for token in tokens:
        bucket = hash_token(token, salt, buckets)
        if bucket not in seen:
            seen.append(bucket)
        if len(seen) == width:
            break
    out[: len(seen)] = seen
    return out


def text_tokens(text: str) -> list[str]:
    """Lower-cased words, then the character trigrams of each ``#word#`` (the text bag)."""
    words = _WORD.findall(text.lower())
    grams = [f"#{w}#"[i : i + 3] for w in words for i in range(len(w))]
    return [f"w:{w}" for w in words] + [f"g:{g}" for g in grams]


def content_row(attributes: Sequence[str], text: str, cfg: ContentConfig) -> np.ndarray:
    """int64 [max_attrs + text_tokens]: hashed attribute tokens, then hashed text tokens."""
    attrs = hashed_row(attributes, ATTR_SALT, cfg.attr_buckets, cfg.max_attrs)
    if cfg.text_tokens == 0:
        return attrs
    words = hashed_row(text_tokens(text), TEXT_SALT, cfg.text_buckets, cfg.text_tokens)
    return np.concatenate([attrs, words])


def content_matrix(items: pd.DataFrame, vocab: Vocabulary, cfg: ContentConfig) -> np.ndarray:
    """int64 [N+1, max_attrs + text_tokens] content tokens per item index (row 0 = PAD = 0).

    Items missing from the catalog keep an all-zero row (no content: the tower embeds them as 0).
    """
    out = np.zeros((vocab.size + 1, cfg.max_attrs + cfg.text_tokens), dtype=np.int64)
    if items.empty:
        return out
    attrs = items[ITEM_ATTRIBUTES] if ITEM_ATTRIBUTES in items.columns else [None] * len(items)
    texts = items[ITEM_TEXT] if ITEM_TEXT in items.columns else [""] * len(items)
    idx = vocab.encode(items[ITEM_ID].astype(str).to_numpy())
    for row, tokens, text in zip(idx, attrs, texts, strict=True):
        if row > 0:
            out[row] = content_row(_as_list(tokens), text if isinstance(text, str) else "", cfg)
    return out


def item_feature_matrix(
    items: pd.DataFrame, vocab: Vocabulary, use_attributes: bool, content: ContentConfig | None
) -> np.ndarray | None:
    """The matrix the item tower is built with: content tokens, attribute ids, or None."""
    if content is not None:
        return content_matrix(items, vocab, content)
    return attribute_matrix(items, vocab) if use_attributes else None


def profile_tokens(tokens: Sequence[str]) -> list[str]:
    """Profile tokens with ``age=<years>`` bucketed and ``zip_code=<zip>`` cut to its region.

    Other tokens (gender, occupation, the synthetic profiles' ``segment=...``) pass unchanged.
    """
    out = []
    for token in tokens:
        key, _, value = token.partition("=")
        if key == "age" and value.isdigit():
            out.append(f"age={sum(int(value) >= b for b in AGE_BUCKETS)}")
        elif key == "zip_code" and value:
            out.append(f"zip={value[0]}")
        else:
            out.append(token)
    return out


def profile_row(tokens: Sequence[str], cfg: ZeroShotConfig) -> np.ndarray:
    """int64 [max_profile_tokens] hashed profile tokens (0 = none)."""
    return hashed_row(
        profile_tokens(tokens), PROFILE_SALT, cfg.profile_buckets, cfg.max_profile_tokens
    )


def user_profile_matrix(
    users: pd.DataFrame, user_ids: Sequence[str] | np.ndarray, cfg: ZeroShotConfig
) -> np.ndarray:
    """int64 [len(user_ids), max_profile_tokens] hashed profiles in the order of ``user_ids``.

    Raises:
        DataValidationError: the user table has no profile column, or no user has a profile.
    """
    if users.empty or USER_ATTRIBUTES not in users.columns:
        raise DataValidationError("model.zero_shot needs user profiles, the dataset has none")
    table = dict(zip(users[USER_ID].astype(str), users[USER_ATTRIBUTES], strict=True))
    out = np.zeros((len(user_ids), cfg.max_profile_tokens), dtype=np.int64)
    for row, user in enumerate(user_ids):
        out[row] = profile_row(_as_list(table.get(str(user))), cfg)
    if len(out) and not out.any():
        raise DataValidationError("model.zero_shot needs user profiles, every profile is empty")
    return out


def _as_list(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]  # type: ignore[attr-defined]
