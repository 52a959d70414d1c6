"""Two serving processes behind one port: feedback reaches whichever worker answers it.

Each worker remembers only the answers it gave; a click on another worker's answer is tied to
its impression through the event store, so no click is refused with a 404.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from mirec.serving.events import open_event_store
from tests.serving.conftest import Deployment, serve_copy

pytestmark = [pytest.mark.integration, pytest.mark.serving, pytest.mark.feast, pytest.mark.slow]
ROUNDS = 24  # a click misses its worker with probability 1/2 each: all 24 fail ~never by chance


def test_feedback_finds_its_request_on_either_worker(
    deployment: Deployment, tmp_path: Path
) -> None:
    users = sorted(deployment.dataset.events["user_id"].astype(str).unique())
    statuses = []
    with serve_copy(deployment, tmp_path, "t_workers", MIREC_WORKERS="2") as (url, store_url):
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
    assert all(code == 200 for code, _ in statuses), statuses
    counts = open_event_store(store_url).counts()
    assert counts.arm("production", "v1").clicks == ROUNDS and counts.unmatched_clicks == 0
