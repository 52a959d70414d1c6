"""The closed loop at library level: served impressions and clicks -> event store -> export ->
the retraining pipeline's data steps -> the clicks are in the next training set.

(The serve -> feedback -> retrain version over a real ``bentoml serve`` is
``test_server_closed_loop.py``; this one starts from the event store the services write to.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mirec.cli import main
from mirec.config import TrainConfig
from mirec.data.synthetic import generate
from mirec.data.vocab import Vocabulary
from mirec.features.repo import Layout
from mirec.pipeline import data as steps
from mirec.pipeline.io import read_dataset_dir, write_dataset_dir
from mirec.schema import (
    EVENT_CLICK,
    EVENT_ID,
    EVENT_IMPRESSION,
    EVENT_TS,
    EVENT_TYPE,
    FEAST_TS,
    HIST_ITEM_IDS,
    ITEM_ID,
    MODEL_VERSION,
    REQUEST_ID,
    TARGET_ITEM_IDS,
    USER_ID,
)
from mirec.serving.events import FeedbackEvent, GroupCommitWriter, open_event_store

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.feast, pytest.mark.slow]


def _serve_and_click(
    store_url: str, users: list[str], items: list[str], at: datetime
) -> dict[str, list[FeedbackEvent]]:
    """Each user gets 3 responses of 3 items (impressions) and clicks the second of each."""
    writer = GroupCommitWriter(open_event_store(store_url))
    clicks: dict[str, list[FeedbackEvent]] = {}
    for n, user in enumerate(users):
        for r in range(3):
            request, served_at = f"req-{n}-{r}", at + timedelta(seconds=n, milliseconds=100 * r)
            shown = [items[(n + r + k) % len(items)] for k in range(3)]
            writer.write(
                [
                    FeedbackEvent(
                        f"{request}:imp:{pos}",
                        user,
                        item,
                        EVENT_IMPRESSION,
                        served_at,
                        request_id=request,
                        model_version="1",
                        position=pos,
                    )
                    for pos, item in enumerate(shown)
                ]
            )
            clicked = FeedbackEvent(
                f"{request}:click",
                user,
                shown[1],
                EVENT_CLICK,
                served_at + timedelta(milliseconds=20),
                request_id=request,
                position=1,
            )
            writer.write([clicked])
            clicks.setdefault(user, []).append(clicked)
    writer.close()
    return clicks


def test_clicks_reach_the_next_training_set(tmp_path: Path) -> None:
    dataset = generate(num_users=60, num_items=40, num_clusters=3, mean_len=10, seed=5)
    base = write_dataset_dir(dataset.events, dataset.items, dataset.users, tmp_path / "batch")
    store_url = f"sqlite:///{tmp_path / 'feedback.db'}"
    now = datetime.now(UTC) - timedelta(hours=1)
    users = sorted(dataset.events[USER_ID].unique())[:10]
    clicks = _serve_and_click(store_url, users, sorted(dataset.items[ITEM_ID])[:7], now)

    exported = tmp_path / "exported"
    args = ["events", "export", "--store", store_url, "--base", str(base), "--out", str(exported)]
    assert main(args) == 0
    log = read_dataset_dir(exported).events
    assert len(log) == len(dataset.events) + 120  # 90 impressions + 30 clicks
    feedback = log[log[EVENT_ID].notna()]
    assert set(feedback[EVENT_TYPE]) == {EVENT_IMPRESSION, EVENT_CLICK}
    assert feedback[REQUEST_ID].notna().all()
    assert (feedback.loc[feedback[EVENT_TYPE] == EVENT_IMPRESSION, MODEL_VERSION] == "1").all()
    assert main(args + ["--out", str(tmp_path / "again")]) == 0  # re-export: nothing doubled

    events_dir, work = tmp_path / "events", tmp_path / "steps"
    checked = steps.validate_events(
        str(exported), events_dir, work / "quarantine", work / "docs", max_bad_fraction=0.0
    )
    assert checked.metrics["rows_quarantined"] == 0
    config = TrainConfig().model_dump()
    features = tmp_path / "features"
    steps.build_features(events_dir, config, tmp_path / "registry", features)
    steps.make_training_set(features, events_dir, tmp_path / "training", config)
    frame = pd.read_parquet(tmp_path / "training" / steps.TRAINING_SET_FILE)

    vocab = Vocabulary.load(Layout(features).vocab)
    stamps = frame[FEAST_TS].map(lambda t: pd.Timestamp(t).value // 1000)
    rows = {
        (str(u), int(t)): [int(x) for x in targets]
        for u, t, targets in zip(frame[USER_ID], stamps, frame[TARGET_ITEM_IDS], strict=True)
    }

    def row_of(click: FeedbackEvent) -> list[int] | None:
        """The training row at the click (its stamp may add a tie rank of a few µs)."""
        t = pd.Timestamp(click.event_ts).value // 1000
        return next(
            (rows[(click.user_id, t + d)] for d in range(5) if (click.user_id, t + d) in rows), None
        )

    for user, (first, valid, test) in clicks.items():
        # Protocol B holds out each user's last two events: the first click is trained on.
        assert row_of(first) == [int(vocab.encode([first.item_id])[0])], first.event_id
        assert row_of(valid) is None and row_of(test) is None, user
    # Impressions are not behaviour: no training row is an impression's (user, time).
    impression_keys = {
        (u, pd.Timestamp(t).value // 1000)
        for u, t in zip(
            feedback.loc[feedback[EVENT_TYPE] == EVENT_IMPRESSION, USER_ID],
            feedback.loc[feedback[EVENT_TYPE] == EVENT_IMPRESSION, EVENT_TS],
            strict=True,
        )
    }
    assert not impression_keys & set(rows)
    # The online history of a clicking user ends with the clicked item after the rebuild.
    from mirec.features import feast_io

    user = users[0]
    got = feast_io.get_online_histories(feast_io.open_store(features), [user])[user]
    assert got is not None
    assert vocab.decode(got[HIST_ITEM_IDS][-3:]).tolist() == [c.item_id for c in clicks[user]]
    feast_io.teardown(features)
