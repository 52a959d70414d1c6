"""One real ``bentoml serve`` of the entry service on 127.0.0.1, its online store a private Redis.

recommend -> feedback -> the user's next recommendation changes -> /metrics counts it; every
bad request answered 4xx with a message; the Redis stopped in the middle, alone or under 8
concurrent clients -> degraded answers, never a 5xx; Redis back -> normal answers again.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from mirec.features import feast_io
from mirec.features.repo import StoreSettings, render_repo
from tests.serving.conftest import Deployment, unique
from tests.serving.servers import RedisServer, bentoml_serve, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.serving,
    pytest.mark.feast,
    pytest.mark.spark,
    pytest.mark.slow,
]
MAX_K = 50


@dataclass(frozen=True)
class Served:
    url: str
    redis: RedisServer
    repo: Path
    users: list[str]  # users with a history in the online store


@pytest.fixture(scope="module")
def served(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("server")
    redis = RedisServer(free_port(), base)
    redis.start()
    root = base / "redis_repo"
    shutil.copytree(deployment.feature_root, root)
    repo = render_repo(root, StoreSettings(project=unique("t_srv"), online_store="redis",
                                           redis_url=redis.url))  # fmt: skip
    feast_io.apply(repo)
    feast_io.materialize(repo)
    env = {
        "BENTOML_HOME": str(deployment.registry_root.parent / "bentoml"),
        "MIREC_REGISTRY": str(deployment.registry_root),
        "MIREC_FEATURE_REPO": str(repo),
        "MIREC_MAX_K": str(MAX_K),
        "OMP_NUM_THREADS": "1",
    }
    users = sorted(deployment.dataset.events["user_id"].astype(str).unique())
    try:
        with bentoml_serve(
            "serving.service:Recommender", free_port(), env, base / "serve.log"
        ) as url:
            yield Served(url, redis, repo, users)
    finally:
        redis.stop()


def _post(url: str, path: str, body: Any) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=10)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_health_readiness_and_swagger_ui(served: Served) -> None:
    assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{served.url}/readyz", timeout=5).status_code == 200
    page = requests.get(f"{served.url}/", timeout=5)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    schema = requests.get(f"{served.url}/schema.json", timeout=5).json()
    assert {"/recommend", "/feedback", "/feedback/batch", "/items"} <= set(schema["paths"])


def test_feedback_changes_the_next_recommendation_and_is_counted(served: Served) -> None:
    user = served.users[3]
    first = _post(served.url, "/recommend", {"user_id": user, "k": 10})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model_version"] == "v1" and re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert len(body["items"]) == 10 and not body["degraded"] and body["source"] == "model"
    clicked = body["items"][4]
    ack = _post(served.url, "/feedback", {"request_id": body["request_id"], "item_id": clicked})
    assert ack.status_code == 200, ack.text
    assert ack.json()["position"] == 4 and ack.json()["pushed"]
    again = _post(served.url, "/recommend", {"user_id": user, "k": 10}).json()
    assert clicked not in again["items"] and again["items"] != body["items"]
    metrics = requests.get(f"{served.url}/metrics", timeout=5).text
    ok = {"endpoint": "/recommend", "model_version": "v1", "status": "200"}
    assert _metric(metrics, "mirec_requests_total", **ok) >= 2
    assert _metric(metrics, "mirec_requests_total", endpoint="/feedback", status="200") >= 1
    assert _metric(metrics, "mirec_stage_seconds_count", stage="tower") >= 2
    assert _metric(metrics, "mirec_request_seconds_count", endpoint="/recommend") >= 2


def test_feedback_batch_records_every_event_in_order(served: Served) -> None:
    user = served.users[5]
    body = _post(served.url, "/recommend", {"user_id": user, "k": 10}).json()
    clicked = [body["items"][6], body["items"][1]]
    events = [{"request_id": body["request_id"], "item_id": item} for item in clicked]
    got = _post(served.url, "/feedback/batch", {"events": events})
    assert got.status_code == 200, got.text
    acks = got.json()["events"]
    assert [(a["item_id"], a["position"], a["pushed"]) for a in acks] == [
        (clicked[0], 6, True), (clicked[1], 1, True),
    ]  # fmt: skip
    again = _post(served.url, "/recommend", {"user_id": user, "k": 10}).json()
    assert not set(clicked) & set(again["items"])
    metrics = requests.get(f"{served.url}/metrics", timeout=5).text
    assert _metric(metrics, "mirec_requests_total", endpoint="/feedback/batch", status="200") >= 1


BAD_REQUESTS = [
    ("/recommend", {"k": 5}, 400, "user_id"),
    ("/recommend", {"user_id": "1", "k": "five"}, 400, "k"),
    ("/recommend", {"user_id": 12, "k": 5}, 400, "user_id"),
    ("/recommend", {"user_id": "1", "k": 5, "exclude": "1"}, 400, "exclude"),
    ("/recommend", {"user_id": "1", "k": 5, "surprise": 1}, 400, "surprise"),
    ("/recommend", {"user_id": "1", "k": 0}, 400, "k must be a positive integer"),
    ("/recommend", {"user_id": "1", "k": -2}, 400, "k must be a positive integer"),
    ("/recommend", {"user_id": "1", "k": MAX_K + 1}, 400, f"at most {MAX_K}"),
    ("/recommend", {"user_id": "1", "k": 5, "exclude": ["nope"]}, 400, "unknown item ids"),
    ("/recommend", {"user_id": "1", "k": 5, "exclude": ["x"] * 70_000}, 413, "over the limit"),
    ("/feedback", {"item_id": "1"}, 400, "request_id"),
    ("/feedback", {"request_id": "0" * 32, "item_id": "1"}, 404, "unknown request_id"),
    ("/feedback", {"request_id": "0" * 32, "item_id": "1", "event": "hug"}, 400, "event"),
    ("/feedback/batch", {"events": []}, 400, "events"),
    ("/feedback/batch", {"events": [{"item_id": "1"}]}, 400, "request_id"),
    ("/feedback/batch", {"events": [{"request_id": "0" * 32, "item_id": "1"}]}, 404, "events[0]"),
    ("/items", {"items": [{"item_id": "new-1"}]}, 400, "similar_to"),
    ("/items", {"items": [{"item_id": "n", "similar_to": ["zz"]}]}, 400, "unknown item ids"),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_naming_the_problem(
    served: Served, path: str, body: dict[str, Any], status: int, needle: str
) -> None:
    got = _post(served.url, path, body)
    assert got.status_code == status, got.text
    assert needle in got.text


def test_invalid_json_is_a_400(served: Served) -> None:
    got = requests.post(
        f"{served.url}/recommend", data=b"{not json", timeout=5,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert 400 <= got.status_code < 500


def test_redis_stopped_mid_run_degrades_then_recovers(served: Served) -> None:
    warm, cold = served.users[7], "never-seen-user"
    assert _post(served.url, "/recommend", {"user_id": warm, "k": 5}).json()["source"] == "model"
    served.redis.stop()
    answers = [_post(served.url, "/recommend", {"user_id": u, "k": 5}) for u in [warm, cold] * 10]
    assert {a.status_code for a in answers} == {200}
    bodies = [a.json() for a in answers]
    assert all(b["degraded"] for b in bodies)
    assert {b["source"] for b in bodies[0::2]} == {"cached_sequence"}
    assert {b["source"] for b in bodies[1::2]} == {"popularity"}
    assert all(len(b["items"]) == 5 for b in bodies)
    served.redis.start()
    feast_io.materialize(served.repo)
    deadline, back = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        back = _post(served.url, "/recommend", {"user_id": warm, "k": 5}).json()
        if not back["degraded"]:
            break
        time.sleep(0.3)
    assert back is not None and not back["degraded"] and back["source"] == "model"
    metrics = requests.get(f"{served.url}/metrics", timeout=5).text
    assert _metric(metrics, "mirec_degraded_total", source="popularity") >= 10


def _closed_loop(url: str, users: list[str], done: threading.Event, out: list[tuple]) -> None:
    """One client: /recommend for each user in turn until ``done``; (sent, returned, status,
    body)."""
    i = 0
    while not done.is_set():
        sent = time.monotonic()
        got = _post(url, "/recommend", {"user_id": users[i % len(users)], "k": 5})
        out.append((sent, time.monotonic(), got.status_code, got.json() if got.ok else got.text))
        i += 1


def test_redis_stopped_under_concurrent_load_never_fails_a_request(served: Served) -> None:
    clients, out = 8, []  # type: ignore[var-annotated]
    users = [*served.users[:40], *(f"new-user-{i}" for i in range(8))]
    done = threading.Event()
    threads = [
        threading.Thread(target=_closed_loop, args=(served.url, users[c::clients], done, out))
        for c in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(3)
    stopping = time.monotonic()
    served.redis.stop()
    stopped = time.monotonic()  # once Redis is down: a loaded machine can take a while to stop it
    time.sleep(4)
    restarted = time.monotonic()
    served.redis.start()
    feast_io.materialize(served.repo)
    back = time.monotonic()
    time.sleep(4)
    done.set()
    for thread in threads:
        thread.join(30)
    assert {status for *_, status, _ in out} == {200}, [b for *_, s, b in out if s != 200][:3]
    before = [b for _, returned, _, b in out if returned < stopping]  # answered while Redis was up
    during = [b for sent, _, _, b in out if stopped + 0.5 < sent < restarted]
    after = [b for sent, _, _, b in out if sent > back + 2]
    assert before and not any(b["degraded"] for b in before)
    assert len(during) >= clients and all(b["degraded"] for b in during)
    assert {b["source"] for b in during} == {"cached_sequence", "popularity"}
    assert all(len(b["items"]) == 5 for b in during)
    assert after and not any(b["degraded"] for b in after)
