"""Seeded synthetic data: a small dataset with planted multi-interest structure, and a fast
long-tailed event generator for scaling benchmarks (10^5..10^8 events, written in chunks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.data.events import (
    TS_DTYPE,
    Dataset,
    LoadReport,
    bad_rows_frame,
    empty_events,
    to_utc_timestamps,
)
from mirec.errors import ConfigError
from mirec.schema import (
    EVENT_INTERACTION,
    EVENT_TS,
    EVENT_TYPE,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    SEQ_POS,
    USER_ATTRIBUTES,
    USER_ID,
)

logger = logging.getLogger(__name__)

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
MIN_LEN = 5
SWITCH_P = 0.2  # chance that the next event moves to another of the user's clusters
FRESH_P = 0.5  # chance of a fresh popularity draw instead of a step to a neighbouring item
NOISE_P = 0.05  # chance of an item from anywhere in the catalog
ZIPF_A = 1.1  # popularity exponent inside a cluster (and over the catalog in generate_events)
DAY_S = 86_400


@dataclass(frozen=True)
class _Plan:
    """Planted structure: item clusters (items in popularity order) and each user's clusters."""

    item_cluster: np.ndarray  # int64 [N+1]; -1 at PAD
    members: np.ndarray  # int64 [C, S_max]: item numbers of cluster c, most popular first
    sizes: np.ndarray  # int64 [C]
    user_clusters: np.ndarray  # int64 [U, max_k]; -1 past the user's count
    num_interests: np.ndarray  # int64 [U]


def _zipf_ranks(rng: np.random.Generator, sizes: np.ndarray, a: float = ZIPF_A) -> np.ndarray:
    """int64 ranks in [0, size) with P(r) ~ (r+1)^-a (continuous inverse-CDF approximation)."""
    u = rng.random(len(sizes))
    top = (sizes.astype(np.float64) + 1.0) ** (1.0 - a)
    ranks = np.floor(((top - 1.0) * u + 1.0) ** (1.0 / (1.0 - a))).astype(np.int64) - 1
    return np.clip(ranks, 0, np.maximum(sizes - 1, 0))


def _plan(
    rng: np.random.Generator, num_users: int, num_items: int, num_clusters: int, k: tuple[int, int]
) -> _Plan:
    item_cluster = np.concatenate([[-1], rng.permutation(np.arange(num_items) % num_clusters)])
    sizes = np.bincount(item_cluster[1:], minlength=num_clusters).astype(np.int64)
    members = np.zeros((num_clusters, int(sizes.max())), dtype=np.int64)
    for c in range(num_clusters):
        items = rng.permutation(np.flatnonzero(item_cluster == c))
        members[c, : len(items)] = items
    lo, hi = k
    num_interests = rng.integers(lo, hi + 1, size=num_users)
    user_clusters = np.argsort(rng.random((num_users, num_clusters)), axis=1)[:, :hi]
    user_clusters[np.arange(hi)[None, :] >= num_interests[:, None]] = -1
    return _Plan(item_cluster.astype(np.int64), members, sizes, user_clusters, num_interests)


def _segment_starts(rng: np.random.Generator, user: np.ndarray, p: float) -> np.ndarray:
    """bool [E]: True at each user's first event and with probability ``p`` elsewhere."""
    starts = rng.random(len(user)) < p
    starts[np.r_[0, np.flatnonzero(np.diff(user)) + 1]] = True
    return starts


def _sequences(rng: np.random.Generator, plan: _Plan, lengths: np.ndarray) -> np.ndarray:
    """int64 [E] item numbers, user-major: sticky cluster choice, neighbour steps, noise."""
    user = np.repeat(np.arange(len(lengths)), lengths)
    switch = _segment_starts(rng, user, SWITCH_P)
    segment = np.cumsum(switch) - 1
    seg_user = user[switch]
    choice = np.floor(rng.random(len(seg_user)) * plan.num_interests[seg_user]).astype(np.int64)
    cluster = plan.user_clusters[seg_user, choice][segment]
    size = plan.sizes[cluster]
    fresh = switch | (rng.random(len(user)) < FRESH_P)
    steps = np.cumsum(rng.integers(1, 3, size=len(user)))
    start_at = np.flatnonzero(fresh)[np.cumsum(fresh) - 1]  # [E] index of the walk's start
    ranks = _zipf_ranks(rng, size)[start_at] + steps - steps[start_at]
    items = plan.members[cluster, ranks % size]
    noise = rng.random(len(user)) < NOISE_P
    items[noise] = rng.integers(1, len(plan.item_cluster), size=int(noise.sum()))
    return items


def _user_profiles(rng: np.random.Generator, plan: _Plan, num_clusters: int) -> list[list[str]]:
    """Profile tokens that correlate with the user's planted clusters (plus noise)."""
    profiles = []
    for row, count in zip(plan.user_clusters, plan.num_interests, strict=True):
        primary = int(row[0]) if rng.random() < 0.8 else int(rng.integers(num_clusters))
        tokens = [f"segment=s{primary}"]
        tokens += [f"likes=c{int(c)}" for c in row[1:count] if rng.random() < 0.6]
        tokens += [f"device=d{int(rng.integers(3))}", f"age=a{int(rng.integers(5))}"]
        profiles.append(tokens)
    return profiles


def _item_attributes(rng: np.random.Generator, item_cluster: np.ndarray) -> list[list[str]]:
    """``cluster=<c>`` plus a cluster-correlated brand and a random price bucket per item."""
    n, c = len(item_cluster) - 1, int(item_cluster.max()) + 1
    brand = item_cluster[1:] * 3 + rng.integers(3, size=n)
    random_brand = rng.random(n) < 0.3
    brand[random_brand] = rng.integers(3 * c, size=int(random_brand.sum()))
    price = rng.integers(5, size=n)
    return [
        [f"cluster={cl}", f"brand=b{b}", f"price=p{p}"]
        for cl, b, p in zip(item_cluster[1:], brand, price, strict=True)
    ]


def _timestamps_s(
    rng: np.random.Generator, lengths: np.ndarray, start_s: int, mean_gap_s: float
) -> np.ndarray:
    """int64 [E] unix seconds, strictly increasing within each user."""
    user = np.repeat(np.arange(len(lengths)), lengths)
    gaps = 1 + rng.exponential(mean_gap_s, size=len(user)).astype(np.int64)
    total = np.cumsum(gaps)
    before = np.concatenate([[0], total])[np.cumsum(lengths) - lengths]  # [U] sum before user
    offsets = rng.integers(0, 180 * DAY_S, size=len(lengths))
    return start_s + offsets[user] + total - before[user]


def generate(
    num_users: int = 2000,
    num_items: int = 1000,
    num_clusters: int = 10,
    interests_per_user: tuple[int, int] = (1, 3),
    mean_len: int = 20,
    seed: int = 0,
    start: datetime = DEFAULT_START,
) -> Dataset:
    """A deterministic dataset with planted multi-interest structure.

    Items (ids ``"1".."N"``) belong to clusters (attribute ``cluster=<c>`` plus noisy ``brand``
    and ``price``). Each user (ids ``"1".."U"``) has 1..3 planted clusters (profile token
    ``segment=s<c>`` names the first one 80% of the time). Lengths are long-tailed (min 5, mean
    ~``mean_len``). Sequences stay in the user's clusters (sticky, switching with p=0.2), step
    to a neighbouring item in the cluster's popularity order half of the time and draw a
    Zipf-popular cluster item otherwise; 5% of events are catalog-wide noise.

    Returns:
        Dataset named ``"synthetic"`` with ``planted = {"item_cluster": int64 [N+1] (cluster of
        item number i, -1 at PAD 0), "user_clusters": {user_id: [c, ...]}}``.
    """
    lo, hi = interests_per_user
    if not 1 <= lo <= hi <= num_clusters <= num_items or num_users < 1:
        raise ConfigError(
            f"need num_users >= 1 and 1 <= interests {lo}..{hi} <= num_clusters={num_clusters} "
            f"<= num_items={num_items}, got num_users={num_users}"
        )
    rng = np.random.default_rng(seed)
    plan = _plan(rng, num_users, num_items, num_clusters, (lo, hi))
    mu = np.log(max(mean_len - MIN_LEN, 0.5)) - 0.5
    extra = np.floor(rng.lognormal(mu, 1.0, size=num_users)).astype(np.int64)
    lengths = MIN_LEN + np.minimum(extra, 20 * mean_len)
    items = _sequences(rng, plan, lengths)
    seconds = _timestamps_s(rng, lengths, int(start.timestamp()), DAY_S / 2)
    user_ids = np.arange(1, num_users + 1).astype(str).astype(object)
    events = pd.DataFrame(
        {
            USER_ID: np.repeat(user_ids, lengths),
            ITEM_ID: items.astype(str).astype(object),
            EVENT_TS: to_utc_timestamps(pd.Series(seconds)),
            EVENT_TYPE: EVENT_INTERACTION,
            SEQ_POS: np.arange(len(items), dtype=np.int64),
        }
    )
    item_table = pd.DataFrame(
        {
            ITEM_ID: np.arange(1, num_items + 1).astype(str).astype(object),
            ITEM_ATTRIBUTES: _item_attributes(rng, plan.item_cluster),
        }
    )
    users = pd.DataFrame(
        {USER_ID: user_ids, USER_ATTRIBUTES: _user_profiles(rng, plan, num_clusters)}
    )
    planted = {
        "item_cluster": plan.item_cluster,
        "user_clusters": {
            uid: [int(c) for c in row[:k]]
            for uid, row, k in zip(user_ids, plan.user_clusters, plan.num_interests, strict=True)
        },
    }
    report = LoadReport("synthetic", len(events), len(events), {}, bad_rows_frame(events))
    return Dataset("synthetic", events, item_table, users, report, planted)


# --- long-tailed events for scaling benchmarks ----------------------------------------------------
def _long_tail_lengths(rng: np.random.Generator, num_events: int) -> np.ndarray:
    """User lengths (1 + 4.25 * Lomax(1.5), mean ~9, capped at 10^5) summing to ``num_events``."""
    lengths = np.zeros(0, dtype=np.int64)
    while lengths.sum() < num_events:
        draw = 1 + np.floor(4.25 * rng.pareto(1.5, size=num_events // 8 + 16)).astype(np.int64)
        lengths = np.concatenate([lengths, np.minimum(draw, 100_000)])
    total = np.cumsum(lengths)
    last = int(np.searchsorted(total, num_events))
    lengths = lengths[: last + 1].copy()
    lengths[-1] -= int(total[last]) - num_events
    return lengths


def _event_chunk(
    seed: int,
    index: int,
    num_events: int,
    first_user: int,
    first_pos: int,
    rank_to_item: np.ndarray,
) -> tuple[pa.Table, int]:
    """One chunk of complete users as an Arrow table; returns (table, number of users)."""
    rng = np.random.default_rng([seed, index + 1])
    lengths = _long_tail_lengths(rng, num_events)
    users = first_user + np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    sizes = np.full(num_events, len(rank_to_item), dtype=np.int64)
    items = rank_to_item[_zipf_ranks(rng, sizes, a=1.05)]
    start_s = int(DEFAULT_START.timestamp()) - 365 * DAY_S
    seconds = _timestamps_s(rng, lengths, start_s, 3600.0)
    table = pa.table(
        {
            USER_ID: pa.array(users).cast(pa.string()),
            ITEM_ID: pa.array(items).cast(pa.string()),
            EVENT_TS: pa.array(seconds * 1_000_000, type=pa.timestamp("us", tz="UTC")),
            EVENT_TYPE: pa.array([EVENT_INTERACTION]).take(np.zeros(num_events, dtype=np.int64)),
            SEQ_POS: pa.array(first_pos + np.arange(num_events, dtype=np.int64)),
        }
    )
    return table, len(lengths)


def iter_event_chunks(
    num_events: int, seed: int = 0, chunk_rows: int = 5_000_000, num_items: int | None = None
) -> Iterator[pa.Table]:
    """Arrow tables of at most ``chunk_rows`` canonical events; users never straddle chunks.

    Users are long-tailed (mean ~9 events, up to 10^5); items (``max(1000, num_events // 100)``
    by default) follow a global Zipf popularity; ids are integer strings.
    """
    if num_events < 0 or chunk_rows < 1:
        raise ConfigError(
            f"need num_events >= 0 and chunk_rows >= 1, got {num_events}, {chunk_rows}"
        )
    n_items = num_items or max(1000, num_events // 100)
    rank_to_item = np.random.default_rng(seed).permutation(n_items).astype(np.int64) + 1
    first_user, done, index = 1, 0, 0
    while done < num_events:
        rows = min(chunk_rows, num_events - done)
        table, num_users = _event_chunk(seed, index, rows, first_user, done, rank_to_item)
        yield table
        first_user, done, index = first_user + num_users, done + rows, index + 1


def generate_events(
    num_events: int, seed: int = 0, chunk_rows: int = 5_000_000, num_items: int | None = None
) -> pd.DataFrame:
    """In-memory canonical events from ``iter_event_chunks`` (same rows as the parquet writer)."""
    tables = list(iter_event_chunks(num_events, seed, chunk_rows, num_items))
    if not tables:
        return empty_events()
    frame = pa.concat_tables(tables).to_pandas()
    frame[EVENT_TS] = frame[EVENT_TS].astype(TS_DTYPE)
    return frame


def write_synthetic_events(
    path: str | Path,
    num_events: int,
    seed: int = 0,
    chunk_rows: int = 5_000_000,
    num_items: int | None = None,
) -> Path:
    """Write ``iter_event_chunks`` as a parquet directory ``part-00000.parquet``, ... (UTC µs).

    Returns:
        The directory (readable by ``read_events_parquet``, ``load_table`` and Spark).
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    for index, table in enumerate(iter_event_chunks(num_events, seed, chunk_rows, num_items)):
        pq.write_table(table, str(out / f"part-{index:05d}.parquet"), coerce_timestamps="us")
    logger.info("wrote %d synthetic events to %s", num_events, out)
    return out
