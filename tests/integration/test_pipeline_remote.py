"""submit / schedule against a stub KFP API server on 127.0.0.1: the requests kfp.Client sends.

No real cluster runs here; the stub answers the v2beta1 REST calls the client makes and records
them, so the test checks what a real KFP endpoint would receive: the compiled pipeline spec with
our image, the parameters, the 6-field cron, no overlapping runs, no catch-up, no cache.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mirec.cli import main
from mirec.cli.pipeline import compile_package
from mirec.errors import ConfigError
from mirec.pipeline.arguments import pipeline_arguments
from mirec.pipeline.remote import schedule, submit

pytestmark = [pytest.mark.integration, pytest.mark.kfp]

IMAGE = "registry.example.com/mirec-pipeline@sha256:" + "0" * 64


class _KfpStub(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # keep the test output quiet
        pass

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: dict[str, Any] | None) -> str:
        parts = urlsplit(self.path)
        self.requests.append(
            {
                "method": self.command,
                "path": parts.path,
                "query": parse_qs(parts.query),
                "body": body,
            }
        )
        return parts.path

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self._record(None)
        if path.endswith("/healthz"):
            self._reply({"multi_user": False})
        else:  # list experiments: none yet
            self._reply({"experiments": [], "total_size": 0})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self._record(body)
        if path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        elif path.endswith("/recurringruns"):
            self._reply({"recurring_run_id": "rr-1", "display_name": body.get("display_name")})
        elif path.endswith("/runs"):
            self._reply({"run_id": "run-1", "display_name": body.get("display_name")})
        else:
            self.send_error(404)


@pytest.fixture()
def kfp_host() -> Iterator[str]:
    _KfpStub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KfpStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kfp") / "retraining.yaml"
    return compile_package(out, IMAGE, pvc="mirec-data", mount_path="/mnt/mirec")


def _arguments() -> dict[str, Any]:
    return pipeline_arguments(
        "/mnt/mirec/events", "/mnt/mirec/registry", {"optim": {"max_epochs": 3}}, num_workers=2
    )


def _posts(suffix: str) -> list[dict[str, Any]]:
    return [r for r in _KfpStub.requests if r["method"] == "POST" and r["path"].endswith(suffix)]


def _images(sent: dict[str, Any]) -> set[str]:
    spec = sent["pipeline_spec"]  # with a platform section, the client nests both docs
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


def _mounts(sent: dict[str, Any]) -> list[Any]:
    executors = sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return [executor["pvcMount"] for executor in executors.values()]


def test_submit_sends_the_compiled_spec_and_parameters(kfp_host: str, package: Path) -> None:
    run_id = submit(package, kfp_host, _arguments(), experiment="mirec-ci", run_name="nightly")
    assert run_id == "run-1"
    (experiment,) = _posts("/apis/v2beta1/experiments")
    assert experiment["body"]["display_name"] == "mirec-ci"
    (run,) = _posts("/apis/v2beta1/runs")
    body = run["body"]
    assert body["experiment_id"] == "exp-1" and body["display_name"] == "nightly"
    assert _images(body["pipeline_spec"]) == {IMAGE}
    params = body["runtime_config"]["parameters"]
    assert params["source"] == "/mnt/mirec/events"
    assert params["registry_root"] == "/mnt/mirec/registry"
    assert params["num_workers"] == 2
    assert params["train_config"]["optim"]["max_epochs"] == 3
    assert (
        _mounts(body["pipeline_spec"])
        == [[{"mountPath": "/mnt/mirec", "constant": "mirec-data"}]] * 8
    )  # every step sees the shared volume
    tasks = body["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks["train"]["cachingOptions"] == {}  # submission switched caching off everywhere


def test_schedule_sends_a_six_field_cron_without_overlap(kfp_host: str, package: Path) -> None:
    recurring = schedule(package, kfp_host, _arguments(), cron="0 3 * * *", name="nightly")
    assert recurring == "rr-1"
    (request,) = _posts("/apis/v2beta1/recurringruns")
    body = request["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "nightly" and body["experiment_id"] == "exp-1"
    assert _images(body["pipeline_spec"]) == {IMAGE}
    assert body["runtime_config"]["parameters"]["source"] == "/mnt/mirec/events"


def test_schedule_rejects_a_bad_cron_before_calling_the_server(
    kfp_host: str, package: Path
) -> None:
    with pytest.raises(ConfigError, match="expected the usual 5"):
        schedule(package, kfp_host, _arguments(), cron="0 0 3 * * *")
    assert _KfpStub.requests == []


def test_cli_schedule_reads_the_recurring_run_spec(
    kfp_host: str, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = Path(__file__).resolve().parents[2] / "infra" / "kfp" / "recurring-run.yaml"
    code = main(
        [
            "pipeline",
            "schedule",
            "--host",
            kfp_host,
            "--package",
            str(package),
            "--spec",
            str(spec),
            "--cron",
            "30 2 * * MON-FRI",
        ]
    )
    assert code == 0
    assert "recurring run rr-1 created" in capsys.readouterr().out
    (request,) = _posts("/apis/v2beta1/recurringruns")
    body = request["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * MON-FRI"  # flag beats spec
    params = body["runtime_config"]["parameters"]
    assert params["registry_root"] and params["source"]
    assert params["train_config"]["model"]["name"]  # the spec's config file, resolved
