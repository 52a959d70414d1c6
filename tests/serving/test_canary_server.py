"""A real ``bentoml serve`` with a canary: arms on every answer, /metrics by arm, the admin
endpoints behind the token, and a SIGKILL in the middle of a simulation that loses no
acknowledged impression or click, after which the policy resumes from the stored counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import requests

from mirec.registry import CANARY, Registry
from mirec.schema import EVENT_CLICK, EVENT_IMPRESSION, EVENT_TYPE, ITEM_ID, REQUEST_ID
from mirec.serving.canary.simulate import Replay, SimulationResult, Simulator
from mirec.serving.events import open_event_store
from tests.serving.conftest import Deployment
from tests.serving.servers import REPO_ROOT, _wait_ready, free_port
from tests.serving.test_canary_router import registry  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.serving,
    pytest.mark.feast,
    pytest.mark.spark,
    pytest.mark.slow,
]
TOKEN = "test-admin-token"


@contextmanager
def serve(
    reg: Registry, events: Path, log: Path, policy: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    production = reg.stage("production")
    assert production is not None
    env = {
        **os.environ,
        "BENTOML_HOME": str(reg.bentoml_home),
        "MIREC_REGISTRY": str(reg.root),
        "MIREC_MODEL_TAG": production.tag,
        "MIREC_EVENT_STORE": str(events),
        "MIREC_ADMIN_TOKEN": TOKEN,
        "MIREC_CANARY_INTERVAL_S": "0.5",
        "MIREC_CANARY_POLICY": policy,
        "OMP_NUM_THREADS": "1",
    }
    port = free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:Recommender",
           "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(REPO_ROOT)]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log, 180)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_tree(proc)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and every process under it (BentoML's workers run in their own
    sessions, so killing the process group alone leaves them serving)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    for child in children:
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(children, timeout=30)


def _replays(deployment: Deployment) -> list[Replay]:
    """Every user, "next item" = an item the model tends to serve (so clicks happen)."""
    users = sorted(deployment.dataset.events["user_id"].astype(str).unique())
    return [Replay(u, "") for u in users]


def _post(url: str, path: str, token: str | None = None, **body: object) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.post(f"{url}{path}", json=body or None, headers=headers, timeout=30)


def test_server_serves_both_arms_with_metrics_and_guarded_admin(
    deployment: Deployment,
    registry: Registry,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    policy = '{"min_impressions": 1000000}'  # the policy holds: this test drives by hand
    with serve(registry, tmp_path / "events.db", tmp_path / "serve.log", policy) as (url, _):
        users = sorted(deployment.dataset.events["user_id"].astype(str).unique())
        answers = [_post(url, "/recommend", user_id=u, k=5).json() for u in users]
        canary = f"v{registry.stage(CANARY).version}"  # type: ignore[union-attr]
        arms = {(a["variant"], a["model_version"]) for a in answers}
        assert arms == {("production", "v1"), ("canary", canary)}
        clicked = next(a for a in answers if a["variant"] == "canary")
        assert _post(url, "/feedback", request_id=clicked["request_id"],
                     item_id=clicked["items"][0]).status_code == 200  # fmt: skip
        text = requests.get(f"{url}/metrics", timeout=10).text
        for name in ("mirec_canary_impressions_total", "mirec_canary_clicks_total",
                     "mirec_canary_request_seconds_bucket", "mirec_canary_weight"):  # fmt: skip
            assert name in text
        assert f'mirec_canary_clicks_total{{model_version="{canary}",variant="canary"}} 1.0' in text

        assert _post(url, "/admin/promote").status_code == 401
        assert _post(url, "/admin/promote", token="wrong").status_code == 403
        assert _post(url, "/admin/canary", token="wrong", weight=0.0).status_code == 403
        bad = _post(url, "/admin/canary", token=TOKEN, weight=3)
        assert bad.status_code == 400 and "weight" in bad.json()["error"]
        assert _post(url, "/admin/canary", token=TOKEN, weight=0.0).status_code == 200
        again = {_post(url, "/recommend", user_id=u, k=5).json()["variant"] for u in users}
        assert again == {"production"}
        status = requests.get(f"{url}/admin/status", timeout=10).json()["status"]
        assert status["weight"] == 0.0 and status["canary_version"] == canary
        assert status["series"]["canary"][-1]["clicks"] == 1
        promoted = _post(url, "/admin/promote", token=TOKEN)
        assert promoted.status_code == 200 and promoted.json()["result"] == canary
        assert registry.stage("production").version == int(canary[1:])  # type: ignore[union-attr]
        after = {_post(url, "/recommend", user_id=u, k=5).json()["model_version"] for u in users}
        assert after == {canary}
        page = requests.get(f"{url}/ui/", timeout=10)
        assert page.status_code == 200 and "mirec canary" in page.text


def test_sigkill_mid_simulation_loses_nothing_and_the_policy_resumes(
    deployment: Deployment,
    registry: Registry,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    policy = '{"min_impressions": 1000000}'
    db, log = tmp_path / "events.db", tmp_path / "serve.log"
    replays = _replays(deployment)
    result = SimulationResult()
    with serve(registry, db, log, policy) as (url, proc):
        sim = Simulator(url, replays, k=5, seed=1)
        hits = {r.user_id: r for r in replays}

        def drive() -> None:  # click the first item of every third answer
            for n in range(100_000):
                replay = replays[n % len(replays)]
                first = sim.session.post(
                    f"{url}/recommend", json={"user_id": replay.user_id, "k": 5}, timeout=10
                )
                if first.status_code != 200:
                    return
                result.requests += 1
                body = first.json()
                result.acked_request_ids.append(body["request_id"])
                result.acked_impressions += len(body["items"])
                if n % 3 == 0 and body["items"]:
                    fb = sim.session.post(
                        f"{url}/feedback",
                        json={"request_id": body["request_id"], "item_id": body["items"][0]},
                        timeout=10,
                    )
                    if fb.status_code == 200:
                        result.acked_click_ids.append((body["request_id"], body["items"][0]))
                        result.acked_clicks += 1

        thread = threading.Thread(target=lambda: _swallow(drive))
        thread.start()
        while result.requests < 150:
            thread.join(0.1)
        kill_tree(proc)
        thread.join()
    assert proc.returncode != 0 and hits
    stored = open_event_store(db).read_events()
    impressions = stored[stored[EVENT_TYPE] == EVENT_IMPRESSION]
    clicks = stored[stored[EVENT_TYPE] == EVENT_CLICK]
    assert set(result.acked_request_ids) <= set(impressions[REQUEST_ID])
    assert len(impressions) >= result.acked_impressions
    stored_clicks = set(zip(clicks[REQUEST_ID], clicks[ITEM_ID], strict=True))
    assert set(result.acked_click_ids) <= stored_clicks
    counts = open_event_store(db).counts()
    with serve(registry, db, log, policy) as (url, _):
        decided = _post(url, "/admin/evaluate", token=TOKEN).json()["result"]
    canary = f"v{registry.stage(CANARY).version}"  # type: ignore[union-attr]
    assert decided["canary"]["impressions"] == counts.arm("canary", canary).impressions
    assert decided["canary"]["clicks"] == counts.arm("canary", canary).clicks
    assert decided["decision"] == "hold"


def _swallow(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except requests.RequestException:
        pass  # the server was killed under it: the requests in flight are not acknowledged
