"""Two serving processes behind one port: feedback reaches whichever worker answers it.

Each worker remembers only the answers it gave; a click on another worker's answer is tied to
its impression through the event store, so no click is refused with a 404.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from mirec.features import feast_io
from mirec.features.repo import StoreSettings, render_repo
from mirec.serving.events import open_event_store
from tests.serving.conftest import Deployment, unique
from tests.serving.servers import bentoml_serve, free_port

pytestmark = [pytest.mark.integration, pytest.mark.serving, pytest.mark.feast, pytest.mark.slow]
ROUNDS = 24  # a click misses its worker with probability 1/2 each: all 24 fail ~never by chance


def test_feedback_finds_its_request_on_either_worker(
    deployment: Deployment, tmp_path: Path
) -> None:
    root = tmp_path / "features"
    shutil.copytree(deployment.feature_root, root)
    repo = render_repo(root, StoreSettings(project=unique("t_workers")))
    feast_io.apply(repo)
    feast_io.materialize(repo)
    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    env = {
        "BENTOML_HOME": str(deployment.registry_root.parent / "bentoml"),
        "MIREC_REGISTRY": str(deployment.registry_root),
        "MIREC_FEATURE_REPO": str(repo),
        "MIREC_EVENT_STORE": store_url,
        "MIREC_WORKERS": "2",
        "OMP_NUM_THREADS": "1",
    }
    users = sorted(deployment.dataset.events["user_id"].astype(str).unique())
    statuses = []
    try:
        with bentoml_serve(
            "serving.service:Recommender", free_port(), env, tmp_path / "serve.log"
        ) as url:
            for n in range(ROUNDS):
                with requests.Session() as session:  # a new connection each time
                    answer = session.post(
                        f"{url}/recommend", json={"user_id": users[n], "k": 5}, timeout=30
                    ).json()
                with requests.Session() as session:
                    ack = session.post(
                        f"{url}/feedback",
                        json={"request_id": answer["request_id"], "item_id": answer["items"][2]},
                        timeout=30,
                    )
                statuses.append((ack.status_code, ack.text))
    finally:
        feast_io.teardown(repo)
    assert all(code == 200 for code, _ in statuses), statuses
    counts = open_event_store(store_url).counts()
    assert counts.arm("production", "v1").clicks == ROUNDS and counts.unmatched_clicks == 0
