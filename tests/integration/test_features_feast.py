"""Feast over the Spark outputs: online lookups (SQLite, Redis), PIT frames, PostgreSQL registry."""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mirec.config import TrainConfig
from mirec.data.events import Dataset, write_events_parquet
from mirec.data.splits import Split, split_to_frame
from mirec.data.synthetic import generate
from mirec.data.vocab import Vocabulary
from mirec.errors import DataValidationError
from mirec.features import feast_io
from mirec.features.build import FeatureBuildConfig, build_dataset, build_features, write_catalog
from mirec.features.repo import Layout, StoreSettings, render_repo
from mirec.features.training_set import build_training_set
from mirec.schema import (
    EVENT_IMPRESSION,
    EVENT_TS,
    EVENT_TYPE,
    FEAST_TS,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    NUM_EVENTS,
    SEQ_POS,
    SPLIT,
    TARGET_ITEM_IDS,
    USER_ATTRIBUTES,
    USER_HISTORY_FV,
    USER_ID,
)
from mirec.training import num_examples, prepare, prepare_from_training_set
from tests.integration.features_helpers import (
    example_counter,
    reference_as_of,
    reference_history,
    tied_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.feast, pytest.mark.spark]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
HIST_KEYS = (HIST_ITEM_IDS, HIST_TS, HIST_LEN, NUM_EVENTS)


@dataclass(frozen=True)
class FeastBuild:
    """A built, applied and materialized SQLite repo plus what it was built from."""

    layout: Layout
    events: pd.DataFrame
    vocab: Vocabulary
    profiles: dict[str, list[str]]
    store: Any
    dataset: Dataset


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastBuild]:
    """Synthetic users + a tied-timestamp log, built by Spark, applied and materialized."""
    from mirec.features.spark_session import get_spark

    spark = get_spark("local[2]", driver_memory="2g", conf={"spark.sql.shuffle.partitions": "4"})
    dataset = generate(num_users=60, num_items=40, num_clusters=3, mean_len=10, seed=1)
    events = pd.concat([dataset.events, tied_events()], ignore_index=True)
    root = tmp_path_factory.mktemp("feast") / "wd"
    layout = Layout(root)
    write_events_parquet(events, layout.events)
    items = write_catalog(dataset.items, ITEM_ID, ITEM_ATTRIBUTES, layout.catalog_items)
    users = write_catalog(dataset.users, USER_ID, USER_ATTRIBUTES, layout.catalog_users)
    cfg = FeatureBuildConfig()
    build_features(
        layout.events, root, items_path=items, users_path=users, cfg=cfg, spark=spark, now=NOW
    )
    repo = render_repo(root, StoreSettings(project=_unique("t_sqlite")))
    feast_io.apply(repo)
    feast_io.materialize(repo, NOW + timedelta(minutes=1))
    users_table = dataset.users
    profiles = {
        str(u): list(a)
        for u, a in zip(users_table[USER_ID], users_table[USER_ATTRIBUTES], strict=True)
    }
    store = feast_io.open_store(repo)
    vocab = Vocabulary.load(layout.vocab)
    both = dataclasses.replace(dataset, events=events)
    yield FeastBuild(layout, events, vocab, profiles, store, both)
    feast_io.teardown(repo)


BEAUTY_USERS = 400  # ~5,000 events, 57% of them tied with another of their user


@pytest.fixture(scope="module")
def beauty_build(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Dataset, Vocabulary]]:
    """The first users of Beauty (day-level timestamps, many ties), built and applied."""
    from mirec.data.loaders import load_dataset
    from mirec.features.spark_session import get_spark

    full = load_dataset(shared_data / "Beauty")
    users = full.events[USER_ID].drop_duplicates().iloc[:BEAUTY_USERS]
    dataset = dataclasses.replace(full, events=full.events[full.events[USER_ID].isin(users)])
    spark = get_spark("local[2]", driver_memory="2g", conf={"spark.sql.shuffle.partitions": "4"})
    root = tmp_path_factory.mktemp("beauty") / "wd"
    build_dataset(dataset, root, cfg=FeatureBuildConfig(), spark=spark, now=NOW)
    repo = render_repo(root, StoreSettings(project=_unique("t_beauty")))
    feast_io.apply(repo)
    yield repo, dataset, Vocabulary.load(Layout(root).vocab)
    feast_io.teardown(repo)


def _latest_rows(layout: Layout) -> pd.DataFrame:
    rows = pd.read_parquet(layout.table(USER_HISTORY_FV))
    return rows[rows[SEQ_POS].isna()].set_index(USER_ID)


def _plain(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {
        k: [int(x) for x in v] if k in (HIST_ITEM_IDS, HIST_TS) else v for k, v in values.items()
    }


def test_online_lookup_serves_the_as_of_build_rows(built: FeastBuild) -> None:
    latest = _latest_rows(built.layout)
    users = sorted(latest.index)
    found = feast_io.get_online_histories(built.store, [*users, "nobody"])
    assert found["nobody"] is None
    for user in users:
        got = found[user]
        assert got is not None
        for key in HIST_KEYS:
            assert np.array_equal(np.asarray(got[key]), np.asarray(latest.loc[user, key])), key
        assert got[USER_ATTRIBUTES] == built.profiles.get(user, [])
    # The online row of u1 is its full history (N = 50 > 6 events), oldest first.
    assert built.vocab.decode(found["u1"][HIST_ITEM_IDS]).tolist() == ["c", "b", "d", "a", "e", "a"]


def _expected_at(events: pd.DataFrame, vocab: Vocabulary, user: str, at: pd.Timestamp) -> list[int]:
    """What a point-in-time lookup at ``at`` must return: the snapshot of the latest event
    stamped at or before ``at`` (everything once ``at`` passes the build time)."""
    if at >= pd.Timestamp(NOW):
        return reference_history(events, vocab, user, at, 50)[0]
    return reference_as_of(events, vocab, user, at, 50)


def test_training_frame_is_point_in_time_correct(built: FeastBuild) -> None:
    events = built.events
    rng = np.random.default_rng(0)
    behaviour = events[events[EVENT_TYPE] != EVENT_IMPRESSION]
    picked = behaviour.sample(120, random_state=1)
    times = [
        picked[EVENT_TS],  # exactly at events (ties included)
        picked[EVENT_TS] + pd.to_timedelta(rng.integers(1, 86_400, len(picked)), unit="s"),
        picked[EVENT_TS] - pd.Timedelta(days=3000),  # before anything
    ]
    entity = pd.concat(
        [pd.DataFrame({USER_ID: picked[USER_ID].to_numpy(), FEAST_TS: t.to_numpy()}) for t in times]
        + [
            pd.DataFrame(
                {USER_ID: ["u1", "u1", "nobody", "10"], FEAST_TS: [NOW + timedelta(seconds=30)] * 4}
            )
        ],
        ignore_index=True,
    )
    entity["label"] = np.arange(len(entity))
    entity = pd.concat([entity, entity.iloc[:5]], ignore_index=True)  # duplicate (user, t) rows
    frame = feast_io.get_training_frame(built.store, entity)
    assert len(frame) == len(entity)
    assert frame["label"].tolist() == entity["label"].tolist()  # order and extra columns kept
    for row in frame.itertuples(index=False):
        at = getattr(row, FEAST_TS)
        assert all(ts <= at.value // 1000 for ts in getattr(row, HIST_TS))  # never after t
        expected = _expected_at(events, built.vocab, getattr(row, USER_ID), at)
        assert [int(i) for i in getattr(row, HIST_ITEM_IDS)] == expected
        assert getattr(row, HIST_LEN) == len(expected)


def _training_set(repo: Path, events: Path, cfg: TrainConfig, out: Path) -> pd.DataFrame:
    from mirec.features.spark_session import get_spark

    spark = get_spark("local[2]", driver_memory="2g", conf={"spark.sql.shuffle.partitions": "4"})
    result = build_training_set(repo, events, out, cfg.data, spark=spark)
    frame = pd.read_parquet(result.path)
    assert result.rows == len(frame) and result.empty_histories == 0
    return frame


def _train_rows(split: Split) -> pd.DataFrame:
    rows = split_to_frame(split)
    return rows[rows[SPLIT] == "train"]


def _check_paths_agree(
    cfg: TrainConfig, dataset: Dataset, frame: pd.DataFrame, vocab: Vocabulary
) -> None:
    memory = prepare(cfg, dataset, vocab)
    feast = prepare_from_training_set(cfg, dataset, frame, vocab)
    expected = _train_rows(memory.split)
    assert len(frame) == len(expected) == num_examples(feast) > 100
    assert example_counter(_train_rows(feast.split)) == example_counter(expected)
    rows = frame.assign(**{SPLIT: "train"})  # the rows themselves are the examples
    assert example_counter(rows) == example_counter(expected)
    for name in ("valid", "test"):
        ours, theirs = getattr(feast.split, name), getattr(memory.split, name)
        assert list(ours.user_ids) == list(theirs.user_ids)
    assert np.array_equal(feast.split.item_counts, memory.split.item_counts)


@pytest.mark.parametrize("protocol", ["B", "A"])
def test_training_set_is_the_protocols_training_examples(
    built: FeastBuild, protocol: str, tmp_path: Path
) -> None:
    cfg = TrainConfig(data={"protocol": protocol})
    frame = _training_set(built.layout.root, built.layout.events, cfg, tmp_path / "ts")
    dataset = built.dataset
    _check_paths_agree(cfg, dataset, frame, built.vocab)


def test_training_set_reads_what_feast_serves(built: FeastBuild, tmp_path: Path) -> None:
    """The Spark point-in-time join returns Feast's own historical retrieval, row for row."""
    frame = _training_set(built.layout.root, built.layout.events, TrainConfig(), tmp_path / "ts")
    sample = frame.sample(300, random_state=0).reset_index(drop=True)
    served = feast_io.get_training_frame(built.store, sample[[USER_ID, FEAST_TS]])
    for key in (*HIST_KEYS, USER_ATTRIBUTES):
        got = [np.asarray(v).tolist() for v in sample[key]]
        assert got == [np.asarray(v).tolist() for v in served[key]], key
    saved = built.store.get_saved_dataset("training_set_b")
    assert saved.feature_service_name == "user_tower_v1"


@pytest.mark.parametrize("protocol", ["B", "A"])
def test_training_set_equals_in_memory_on_beauty(
    beauty_build: tuple[Path, Dataset, Vocabulary], protocol: str, tmp_path: Path
) -> None:
    root, dataset, vocab = beauty_build
    cfg = TrainConfig(data={"protocol": protocol})
    frame = _training_set(root, Layout(root).events, cfg, tmp_path / "ts")
    _check_paths_agree(cfg, dataset, frame, vocab)


def test_a_held_out_target_or_a_wrong_history_fails(built: FeastBuild, tmp_path: Path) -> None:
    cfg = TrainConfig()
    frame = _training_set(built.layout.root, built.layout.events, cfg, tmp_path / "ts")
    dataset = built.dataset
    last = frame.sort_values(NUM_EVENTS).groupby(USER_ID).tail(1)
    row = last[last[NUM_EVENTS] >= 2].iloc[[0]]
    leaked = row.assign(  # the user's validation target, as the next prefix
        **{
            NUM_EVENTS: row[NUM_EVENTS] + 1,
            HIST_ITEM_IDS: [[*row[HIST_ITEM_IDS].iloc[0], *row[TARGET_ITEM_IDS].iloc[0]][-50:]],
            TARGET_ITEM_IDS: [[1]],
        }
    )
    with pytest.raises(DataValidationError, match="examples, protocol B has"):
        prepare_from_training_set(cfg, dataset, pd.concat([frame, leaked]), built.vocab)
    wrong = frame.copy()
    first = wrong.index[wrong[NUM_EVENTS] >= 2][0]
    wrong.at[first, HIST_ITEM_IDS] = list(wrong.at[first, HIST_ITEM_IDS])[::-1]
    with pytest.raises(DataValidationError, match="not the prefix"):
        prepare_from_training_set(cfg, dataset, wrong, built.vocab)


@pytest.mark.redis
def test_redis_serves_the_same_features_as_sqlite(built: FeastBuild, tmp_path: Path) -> None:
    import redis

    root = tmp_path / "redis_repo"
    shutil.copytree(built.layout.root, root)
    project = _unique("t_redis")
    repo = render_repo(root, StoreSettings(project=project, online_store="redis"))
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        feast_io.apply(repo)
        feast_io.materialize(repo, NOW + timedelta(minutes=1))
        users = [*sorted(_latest_rows(built.layout).index), "nobody"]
        from_redis = feast_io.get_online_histories(feast_io.open_store(repo), users)
        from_sqlite = feast_io.get_online_histories(built.store, users)
        assert {u: _plain(v) for u, v in from_redis.items()} == {
            u: _plain(v) for u, v in from_sqlite.items()
        }
        assert any(project.encode() in key for key in client.scan_iter(count=1000))
    finally:
        feast_io.teardown(repo)
    assert not any(project.encode() in key for key in client.scan_iter(count=1000))


def test_serving_store_fails_fast_when_redis_is_gone(built: FeastBuild, tmp_path: Path) -> None:
    import socket

    from mirec.errors import FeatureLookupError
    from mirec.serving.lookup import FeastHistories

    with socket.socket() as sock:  # a port nothing listens on: a Redis that died
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    root = tmp_path / "dead_redis_repo"
    shutil.copytree(built.layout.root, root)
    settings = StoreSettings(project=built.store.project, online_store="redis", redis_url=dead)
    repo = render_repo(root, settings)
    client = feast_io.open_serving_store(repo).provider.online_store._client
    assert client.connection_pool.connection_kwargs["socket_timeout"] == feast_io.ONLINE_TIMEOUT_S
    histories = FeastHistories(repo, warm=False)
    started = time.monotonic()
    with pytest.raises(FeatureLookupError, match="Connection refused"):
        histories.histories(["u1"])
    assert time.monotonic() - started < 4  # redis-py's default retry backs off for 8-11 s


@pytest.mark.postgres
def test_postgresql_registry(built: FeastBuild, tmp_path: Path) -> None:
    import psycopg

    database = _unique("mirec_test")
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        root = tmp_path / "pg_repo"
        shutil.copytree(built.layout.root, root)
        url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        repo = render_repo(root, StoreSettings(project=_unique("t_pg"), registry=url))
        assert "postgresql+psycopg://" in (root / "feature_store.yaml").read_text()
        feast_io.apply(repo)
        feast_io.materialize(repo, NOW + timedelta(minutes=1))
        store = feast_io.open_store(repo)
        assert {fs.name for fs in store.list_feature_services()} == {
            "user_tower_v1",
            "item_tower_v1",
        }
        got = feast_io.get_online_histories(store, ["u1"])["u1"]
        assert got is not None and got[NUM_EVENTS] == 6
        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "select count(*) from information_schema.tables where table_schema = 'public'"
            ).fetchone()
        assert tables is not None and tables[0] > 0  # the registry lives in PostgreSQL
        feast_io.teardown(repo)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_cli_lookup_prints_the_sequence(
    built: FeastBuild, capsys: pytest.CaptureFixture[str]
) -> None:
    from mirec.cli import main

    assert main(["features", "lookup", "--workdir", str(built.layout.root), "--user", "u1"]) == 0
    out = capsys.readouterr().out
    assert "user u1" in out and "num_events" in out
    assert "2024-03-01T00:00:00+00:00" in out  # the tied events' time, UTC
