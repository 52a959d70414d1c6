"""``bentoml build`` of the towers and the entry service: offline, referencing the bundle by tag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mirec.registry import PRODUCTION, Registry
from tests.serving.conftest import Deployment
from tests.serving.servers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.serving, pytest.mark.spark]
OFFLINE = {  # any attempt to reach a package index or the internet fails at once
    "PIP_NO_INDEX": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


@pytest.mark.parametrize(
    ("bentofile", "name"),
    [
        ("bentofile.user_tower.yaml", "mirec_user_tower"),
        ("bentofile.item_tower.yaml", "mirec_item_tower"),
        ("bentofile.recommender.yaml", "mirec_recommender"),
    ],
)
def test_bento_references_the_production_bundle(
    deployment: Deployment, tmp_path: Path, bentofile: str, name: str
) -> None:
    home = Path(os.environ["BENTOML_HOME"])
    production = Registry(deployment.registry_root).stage(PRODUCTION)
    assert production is not None
    env = {
        **os.environ,
        **OFFLINE,
        "BENTOML_HOME": str(home),
        "MIREC_REGISTRY": str(deployment.registry_root),
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_ENABLE_FEATURES": "no_image",  # the image path installs uv from the network
    }
    env.pop("MIREC_MODEL_TAG", None)
    cmd = [sys.executable, "-m", "bentoml", "build", "-f", f"serving/{bentofile}", "."]
    cmd += ["--output", "tag"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    tag = done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith(f"{name}:")
    bento = home / "bentos" / name / tag.split(":", 1)[1]
    spec = yaml.safe_load((bento / "bento.yaml").read_text())
    service = next(entry for entry in spec["services"] if entry["name"] == spec["entry_service"])
    assert {m["tag"] for m in service["models"]} == {production.tag}  # by tag, not copied
    assert (bento / "src" / "serving" / "service.py").is_file()
    assert (bento / "src" / "src" / "mirec" / "serving" / "recommender.py").is_file()
    assert not list((bento / "src").rglob("*.parquet"))  # no data travels with the code
