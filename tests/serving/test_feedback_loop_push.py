"""Fresh features from feedback: clicks pushed into the online histories, on SQLite and Redis.

Each store gets a real Spark build of a small synthetic log, applied and materialized into a
unique Feast project that is torn down afterwards.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mirec.data.events import Dataset, make_events, write_events_parquet
from mirec.data.synthetic import generate
from mirec.data.vocab import Vocabulary
from mirec.features import feast_io
from mirec.features.build import FeatureBuildConfig, build_features, write_catalog
from mirec.features.push import FreshHistories, clicks_missing_from_build
from mirec.features.repo import Layout, StoreSettings, render_repo
from mirec.schema import (
    EVENT_CLICK,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    NUM_EVENTS,
    USER_ATTRIBUTES,
    USER_ID,
)

pytestmark = [pytest.mark.integration, pytest.mark.feast, pytest.mark.spark]
BUILD_1 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
USER = "3"


@dataclass(frozen=True)
class Built:
    """A Spark build of the synthetic log (not applied anywhere)."""

    root: Path
    events: pd.DataFrame
    vocab: Vocabulary


def _build(root: Path, events: pd.DataFrame, data: Dataset, now: datetime) -> Path:
    from mirec.features.spark_session import get_spark

    spark = get_spark("local[2]", driver_memory="2g", conf={"spark.sql.shuffle.partitions": "4"})
    layout = Layout(root)
    write_events_parquet(events, layout.events)
    items_path = write_catalog(data.items, ITEM_ID, ITEM_ATTRIBUTES, layout.catalog_items)
    users_path = write_catalog(data.users, USER_ID, USER_ATTRIBUTES, layout.catalog_users)
    build_features(
        layout.events,
        root,
        items_path=items_path,
        users_path=users_path,
        cfg=FeatureBuildConfig(hist_len=8),
        spark=spark,
        now=now,
    )
    return root


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    data = generate(num_users=30, num_items=40, num_clusters=3, mean_len=10, seed=3)
    events = data.events.copy()
    events["event_ts"] = BUILD_1 - timedelta(days=30) + pd.to_timedelta(events.index, unit="m")
    return dataclasses.replace(data, events=events)


@pytest.fixture(scope="module")
def first_build(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Built:
    root = _build(tmp_path_factory.mktemp("push") / "build1", dataset.events, dataset, BUILD_1)
    return Built(root, dataset.events, Vocabulary.load(Layout(root).vocab))


def _clicks(*rows: tuple[str, datetime, str]) -> pd.DataFrame:
    items, stamps, ids = zip(*rows, strict=True)
    return make_events(
        [USER] * len(rows), list(items), list(stamps), event_type=EVENT_CLICK, event_id=list(ids)
    )


def _publish(src: Path, dst: Path, settings: StoreSettings) -> Path:
    shutil.copytree(src, dst)
    repo = render_repo(dst, settings)
    feast_io.apply(repo)
    feast_io.materialize(repo, datetime.fromisoformat(_build_ts(repo)) + timedelta(minutes=1))
    return repo


def _build_ts(repo: Path) -> str:
    from mirec.features.repo import read_manifest

    return str(read_manifest(repo)["build_ts"])


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def settings(request: pytest.FixtureRequest) -> StoreSettings:
    project = f"t_push_{request.param}_{uuid.uuid4().hex[:8]}"
    return StoreSettings(project=project, online_store=request.param)


@pytest.fixture
def repo(first_build: Built, settings: StoreSettings, tmp_path: Path) -> Iterator[Path]:
    repo = _publish(first_build.root, tmp_path / "repo", settings)
    yield repo
    feast_io.teardown(repo)


def _online(repo: Path) -> dict[str, object]:
    got = feast_io.get_online_histories(feast_io.open_store(repo), [USER])[USER]
    assert got is not None
    return got


def test_a_click_is_in_the_next_lookup_from_a_fresh_store(repo: Path, first_build: Built) -> None:
    before = _online(repo)
    fresh = FreshHistories.from_repo(repo)
    at = BUILD_1 + HOUR + timedelta(microseconds=7)
    report = fresh.push_clicks(_clicks(("5", at, "c1")))
    assert (report.users, report.clicks, report.already_held) == (1, 1, 0)
    after = _online(repo)  # a new FeatureStore, as another process would open
    expected = [*before[HIST_ITEM_IDS], int(first_build.vocab.encode(["5"])[0])][-8:]
    assert list(after[HIST_ITEM_IDS]) == expected
    assert list(after[HIST_TS])[-1] == (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    assert after[NUM_EVENTS] == before[NUM_EVENTS] + 1
    assert after[HIST_LEN] == len(expected)


def test_push_ordering_same_second_same_microsecond_and_late_clicks(
    repo: Path, first_build: Built
) -> None:
    fresh = FreshHistories.from_repo(repo)
    base = BUILD_1 + 2 * HOUR
    vocab = first_build.vocab
    # Separate pushes within one second (Redis once compared whole seconds), then a click
    # with the very same microsecond, then a late click older than the stored row's time.
    fresh.push_clicks(_clicks(("1", base, "a")))
    fresh.push_clicks(_clicks(("2", base + timedelta(microseconds=1), "b")))
    fresh.push_clicks(_clicks(("3", base + timedelta(microseconds=1), "c")))
    late = BUILD_1 - timedelta(minutes=1)  # after every batch event, before the build time
    fresh.push_clicks(_clicks(("4", late, "d")))
    got = _online(repo)
    tail = vocab.decode(list(got[HIST_ITEM_IDS])[-4:]).tolist()
    assert tail == ["4", "1", "2", "3"]  # time order; the same-µs pair keeps arrival order
    stamps = list(got[HIST_TS])
    assert stamps == sorted(stamps)
    # A re-delivered click changes nothing.
    again = fresh.push_clicks(_clicks(("2", base + timedelta(microseconds=1), "b")))
    assert (again.users, again.clicks, again.already_held) == (0, 0, 1)
    assert _online(repo) == got


def test_bad_clicks_are_refused_and_unknown_items_reported(repo: Path) -> None:
    from mirec.errors import DataValidationError

    fresh = FreshHistories.from_repo(repo)
    before = _online(repo)
    impressions = _clicks(("1", BUILD_1 + HOUR, "i")).assign(event_type="impression")
    with pytest.raises(DataValidationError, match="impression"):
        fresh.push_clicks(impressions)
    with pytest.raises(DataValidationError, match="item_id"):
        fresh.push_clicks(_clicks(("1", BUILD_1 + HOUR, "i")).drop(columns=[ITEM_ID]))
    report = fresh.push_clicks(_clicks(("no-such-item", BUILD_1 + HOUR, "x")))
    assert report.unknown_items == ["no-such-item"] and report.users == 0
    assert _online(repo) == before


def test_a_later_materialization_does_not_lose_pushed_clicks(
    repo: Path,
    first_build: Built,
    settings: StoreSettings,
    dataset: Dataset,
    tmp_path: Path,
) -> None:
    fresh = FreshHistories.from_repo(repo)
    seen = _clicks(("6", BUILD_1 + HOUR, "seen"))  # exported before the next build
    unseen = _clicks(("7", BUILD_1 + 2 * HOUR, "unseen"))  # stored after the export
    fresh.push_clicks(seen)
    fresh.push_clicks(unseen)
    # The next batch build reads the log with the exported click, later than both clicks.
    log = pd.concat([dataset.events, seen], ignore_index=True)
    log["seq_pos"] = range(len(log))
    build_2 = _build(tmp_path / "build2", log, dataset, BUILD_1 + 3 * HOUR)
    repo_2 = _publish(build_2, tmp_path / "repo2", settings)
    try:
        vocab = first_build.vocab
        batch_only = vocab.decode(list(_online(repo_2)[HIST_ITEM_IDS])[-2:]).tolist()
        assert batch_only[-1] == "6" and "7" not in batch_only  # the build replaced the row
        stored = pd.concat([seen, unseen], ignore_index=True)
        missing = clicks_missing_from_build(repo_2, stored)
        assert missing["event_id"].tolist() == ["unseen"]
        report = FreshHistories.from_repo(repo_2).push_clicks(stored)  # all of them: idempotent
        assert (report.clicks, report.already_held) == (1, 1)
        got = _online(repo_2)
        assert vocab.decode(list(got[HIST_ITEM_IDS])[-2:]).tolist() == ["6", "7"]
    finally:
        if settings.online_store == "sqlite":
            feast_io.teardown(repo_2)


def test_concurrent_click_pushes_share_pushes_and_land_once_each(
    repo: Path, first_build: Built
) -> None:
    import threading

    from mirec.serving.feedback import FeastClickPush

    before = _online(repo)
    push = FeastClickPush(repo)
    calls: list[int] = []
    inner = push.fresh.push_click_rows

    def counted(clicks: list[tuple[str, str, datetime]]) -> object:
        calls.append(len(clicks))
        return inner(clicks)

    push.fresh.push_click_rows = counted  # type: ignore[method-assign]
    base = BUILD_1 + 4 * HOUR
    items = [str(i) for i in range(1, 9)]
    start = threading.Barrier(len(items))

    def click(n: int) -> None:
        start.wait()
        push.push_click(USER, items[n], base + timedelta(microseconds=n))

    threads = [threading.Thread(target=click, args=(n,)) for n in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    push.close()
    got = _online(repo)
    assert sum(calls) == len(items) and len(calls) < len(items)  # some clicks shared a push
    assert first_build.vocab.decode(list(got[HIST_ITEM_IDS])).tolist() == items  # time order
    assert got[NUM_EVENTS] == before[NUM_EVENTS] + len(items)
    with pytest.raises(Exception, match="no index"):
        FeastClickPush(repo).push_click(USER, "no-such-item", base)
