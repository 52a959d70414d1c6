"""Rendering of the per-run Feast repository (no Feast or Spark import needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mirec.errors import ConfigError
from mirec.features.repo import (
    TEMPLATES,
    Layout,
    StoreSettings,
    redis_connection_string,
    registry_url,
    render_repo,
)
from mirec.schema import FEATURE_DATA_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_default_render_is_sqlite_with_absolute_paths(tmp_path: Path) -> None:
    root = render_repo(tmp_path / "wd", StoreSettings(project="p1"))
    config = yaml.safe_load((root / "feature_store.yaml").read_text())
    assert config["project"] == "p1"
    assert config["registry"]["registry_type"] == "sql"
    assert config["registry"]["path"] == f"sqlite:///{root / FEATURE_DATA_DIR / 'registry.db'}"
    assert config["online_store"] == {"type": "sqlite", "path": str(root / "data/online_store.db")}
    assert config["offline_store"] == {"type": "file"}
    assert (root / "feature_definitions.py").read_text() == (
        TEMPLATES / "feature_definitions.py"
    ).read_text()
    assert "data/" in (root / ".feastignore").read_text()


def test_redis_and_postgresql_variants(tmp_path: Path) -> None:
    settings = StoreSettings(
        project="p2",
        online_store="redis",
        redis_url="redis://:s3cret@cache.local:6380/2",
        registry="postgresql://postgres@127.0.0.1:5432/feast",
    )
    config = yaml.safe_load((render_repo(tmp_path, settings) / "feature_store.yaml").read_text())
    assert config["online_store"]["type"] == "redis"
    assert config["online_store"]["connection_string"] == "cache.local:6380,db=2,password=s3cret"
    assert config["registry"]["path"] == "postgresql+psycopg://postgres@127.0.0.1:5432/feast"


@pytest.mark.parametrize(
    "url,expected",
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://localhost", "localhost:6379,db=0"),
        ("rediss://h:1/3", "h:1,db=3,ssl=true"),
    ],
)
def test_redis_connection_strings(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


@pytest.mark.parametrize("bad", ["http://x:1/0", "redis://:1/0", "redis://h:1/zero"])
def test_bad_redis_urls_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="Redis URL"):
        redis_connection_string(bad)


def test_bad_project_and_registry_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="project"):
        render_repo(tmp_path, StoreSettings(project="bad-name!"))
    with pytest.raises(ConfigError, match="registry"):
        registry_url("mysql://x", tmp_path)


def test_layout_paths(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.latest_history == tmp_path / "data/user_history/row_kind=latest"
    assert layout.training_examples("B") == tmp_path / "data/training_examples_b"


def test_committed_feature_repo_points_at_the_templates() -> None:
    repo = REPO_ROOT / "feature_repo"
    for name, template in [
        ("feature_definitions.py", "feature_definitions.py"),
        (".feastignore", "feastignore"),
        ("feature_store.yaml.tmpl", "feature_store.yaml.tmpl"),
        ("feature_store.redis.yaml.tmpl", "feature_store.redis.yaml.tmpl"),
    ]:
        assert (repo / name).read_text() == (TEMPLATES / template).read_text(), name
