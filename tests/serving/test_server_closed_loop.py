"""serve -> feedback -> retrain over a real ``bentoml serve``: the clicks a running server
acknowledged are in the next training set, and the impressions it logged are not.

The entry service writes every impression and click to its event store (SQLite here);
``mirec events export`` turns the store into canonical events beside the batch log; the
retraining pipeline's data steps (validate, feature build, training set) then train on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from mirec.cli import main
from mirec.config import TrainConfig
from mirec.data.vocab import Vocabulary
from mirec.features import feast_io
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
    ITEM_ID,
    MODEL_VERSION,
    REQUEST_ID,
    TARGET_ITEM_IDS,
    USER_ID,
)
from tests.serving.conftest import Deployment, serve_copy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.serving,
    pytest.mark.feast,
    pytest.mark.spark,
    pytest.mark.slow,
]
CLICKS_PER_USER = 3  # protocol B holds out the last two: the first click is a training example
K = 5


def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{url}{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _serve_and_click(url: str, users: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each user gets ``CLICKS_PER_USER`` answers and clicks the second item of each."""
    acks: dict[str, list[dict[str, Any]]] = {}
    for user in users:
        for _ in range(CLICKS_PER_USER):
            answer = _post(url, "/recommend", {"user_id": user, "k": K})
            assert len(answer["items"]) == K and answer["source"] == "model"
            ack = _post(
                url,
                "/feedback",
                {"request_id": answer["request_id"], "item_id": answer["items"][1]},
            )
            assert ack["user_id"] == user and ack["position"] == 1
            acks.setdefault(user, []).append(ack)
    return acks


def test_served_clicks_are_in_the_next_training_set(deployment: Deployment, tmp_path: Path) -> None:
    users = sorted(deployment.dataset.events[USER_ID].astype(str).unique())[:6]
    with serve_copy(deployment, tmp_path, "t_loop") as (url, store_url):
        acks = _serve_and_click(url, users)

    data = deployment.dataset
    base = write_dataset_dir(data.events, data.items, data.users, tmp_path / "batch")
    exported = tmp_path / "exported"
    args = ["events", "export", "--store", store_url, "--base", str(base), "--out", str(exported)]
    assert main(args) == 0
    log = read_dataset_dir(exported).events
    served = len(users) * CLICKS_PER_USER
    assert len(log) == len(data.events) + served * (K + 1)  # K impressions + 1 click per answer
    feedback = log[log[EVENT_ID].notna()]
    assert feedback[REQUEST_ID].notna().all()
    impressions = feedback[feedback[EVENT_TYPE] == EVENT_IMPRESSION]
    assert (impressions[MODEL_VERSION] == "v1").all() and len(impressions) == served * K
    clicks = feedback[feedback[EVENT_TYPE] == EVENT_CLICK]
    assert len(clicks) == served

    events_dir, work = tmp_path / "events", tmp_path / "steps"
    checked = steps.validate_events(
        str(exported), events_dir, work / "quarantine", work / "docs", max_bad_fraction=0.0
    )
    assert checked.metrics["rows_quarantined"] == 0
    config = TrainConfig().model_dump()
    rebuilt = tmp_path / "rebuilt"
    steps.build_features(events_dir, config, deployment.registry_root, rebuilt)
    steps.make_training_set(rebuilt, events_dir, tmp_path / "training", config)
    frame = pd.read_parquet(tmp_path / "training" / steps.TRAINING_SET_FILE)
    feast_io.teardown(rebuilt)

    vocab = Vocabulary.load(Layout(rebuilt).vocab)
    targets = {
        (str(u), pd.Timestamp(t).value // 1000): [int(x) for x in items]
        for u, t, items in zip(frame[USER_ID], frame[FEAST_TS], frame[TARGET_ITEM_IDS], strict=True)
    }

    def row_at(user: str, ts: pd.Timestamp) -> list[int] | None:
        """The training row at a click (its stamp may add a tie rank of a few µs)."""
        t = ts.value // 1000
        return next((targets[(user, t + d)] for d in range(5) if (user, t + d) in targets), None)

    for user in users:
        mine = clicks[clicks[USER_ID] == user].sort_values(EVENT_TS)
        assert mine[ITEM_ID].tolist() == [a["item_id"] for a in acks[user]]
        first, *held_out = mine.itertuples(index=False)
        encoded = int(vocab.encode([getattr(first, ITEM_ID)])[0])
        assert row_at(user, pd.Timestamp(getattr(first, EVENT_TS))) == [encoded]
        for click in held_out:  # the user's validation and test targets
            assert row_at(user, pd.Timestamp(getattr(click, EVENT_TS))) is None
    impression_keys = {
        (str(u), pd.Timestamp(t).value // 1000)
        for u, t in zip(impressions[USER_ID], impressions[EVENT_TS], strict=True)
    }
    assert not impression_keys & set(targets)
