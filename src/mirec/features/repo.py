"""The per-run Feast repository: workdir layout and ``feature_store.yaml`` rendered from templates.

A feature workdir IS a Feast repository: ``feature_store.yaml`` (rendered with absolute paths),
``feature_definitions.py`` and ``.feastignore`` (copied from the packaged templates) and the Spark
outputs under ``FEATURE_DATA_DIR``. Nothing with a machine path is committed: the committed
``feature_repo/`` holds the templates only.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from string import Template
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from mirec.errors import ConfigError, DataFormatError
from mirec.schema import FEATURE_DATA_DIR, ROW_KIND, TRAINING_EXAMPLES, USER_HISTORY_FV

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFINITIONS = "feature_definitions.py"
STORE_YAML = "feature_store.yaml"
SQLITE_TEMPLATE = "feature_store.yaml.tmpl"
REDIS_TEMPLATE = "feature_store.redis.yaml.tmpl"
FEASTIGNORE_TEMPLATE = "feastignore"
DEFAULT_WORKDIR = ".mirec/features"
DEFAULT_PROJECT = "mirec"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
# Values of ROW_KIND: the user-history table is written in two hive partitions.
ROW_EVENT = "event"  # one snapshot per (user, behaviour event)
ROW_LATEST = "latest"  # one "as of build" row per user (what is materialized online)
STORE_SETTINGS_FILE = "store_settings.json"  # written by the build, read by later steps
ONLINE_STORES = ("sqlite", "redis")
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Layout:
    """Where everything of one feature workdir lives.

    Attributes:
        root: the workdir (the Feast repository).
    """

    root: Path

    @property
    def data(self) -> Path:
        """Spark outputs and local stores."""
        return self.root / FEATURE_DATA_DIR

    @property
    def events(self) -> Path:
        """The canonical event log written from a loaded dataset."""
        return self.data / "events.parquet"

    @property
    def catalog_items(self) -> Path:
        """Item catalog (``ITEM_ID``, ``ITEM_ATTRIBUTES``) written from a loaded dataset."""
        return self.data / "catalog_items.parquet"

    @property
    def catalog_users(self) -> Path:
        """User profiles (``USER_ID``, ``USER_ATTRIBUTES``) written from a loaded dataset."""
        return self.data / "catalog_users.parquet"

    @property
    def vocab(self) -> Path:
        """The append-only item vocabulary (JSON, ``mirec.data.vocab``)."""
        return self.root / "vocab.json"

    @property
    def manifest(self) -> Path:
        """What the last build wrote (counts, build time, timings)."""
        return self.root / "build_manifest.json"

    @property
    def store_yaml(self) -> Path:
        """The rendered ``feature_store.yaml``."""
        return self.root / STORE_YAML

    def table(self, name: str) -> Path:
        """The parquet folder of one output table (a feature view name)."""
        return self.data / name

    @property
    def latest_history(self) -> Path:
        """The "as of build" partition of the user-history table."""
        return self.table(USER_HISTORY_FV) / f"{ROW_KIND}={ROW_LATEST}"

    @property
    def event_history(self) -> Path:
        """The per-event snapshot partition of the user-history table."""
        return self.table(USER_HISTORY_FV) / f"{ROW_KIND}={ROW_EVENT}"

    def training_examples(self, protocol: str) -> Path:
        """The parquet folder of the training examples of protocol ``"A"`` or ``"B"``."""
        return self.data / f"{TRAINING_EXAMPLES}_{protocol.lower()}"


@dataclass(frozen=True)
class StoreSettings:
    """How ``feature_store.yaml`` is rendered: the one typed form of the feature-store settings.

    Written once per feature build into the repository (``write``) and read back by every later
    step (``read``), which re-renders the yaml for its own machine's paths. The pipeline's
    ``feature_store`` parameter (a partial mapping) becomes one through ``from_parameter``.

    Attributes:
        project: Feast project name (letters, digits, underscores); Redis keys carry it.
        online_store: ``"sqlite"`` (default, a file in the workdir) or ``"redis"``.
        redis_url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
        registry: ``"sqlite"`` (a file in the workdir) or a ``postgresql://`` URL.

    Raises:
        ConfigError: a bad project name or online store (named).
    """

    project: str = DEFAULT_PROJECT
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = DEFAULT_REDIS
    registry: str = "sqlite"

    def __post_init__(self) -> None:
        check_project(self.project)
        if self.online_store not in ONLINE_STORES:
            raise ConfigError(
                f"feature_store.online_store must be one of {ONLINE_STORES}, "
                f"got {self.online_store!r}"
            )

    @classmethod
    def from_parameter(cls, values: Mapping[str, Any] | None) -> StoreSettings:
        """Settings from a partial mapping (missing fields take their defaults).

        Raises:
            ConfigError: an unknown field (named, with the known ones) or a bad value.
        """
        given = {k: str(v) for k, v in (values or {}).items()}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(f"feature_store has unknown keys {unknown}; use {known}")
        return cls(**given)  # type: ignore[arg-type]

    def write(self, root: Path) -> Path:
        """Record these settings in the repository at ``root`` (``STORE_SETTINGS_FILE``)."""
        path = Path(root) / STORE_SETTINGS_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return path

    @classmethod
    def read(cls, root: Path) -> StoreSettings:
        """The settings a build recorded in ``root``; every field must be there.

        Raises:
            ConfigError: no settings file, or a missing or unknown field (named).
        """
        path = Path(root) / STORE_SETTINGS_FILE
        if not path.is_file():
            raise ConfigError(f"{path} not found: the feature build did not record its store")
        data = json.loads(path.read_text())
        missing = sorted({f.name for f in fields(cls)} - set(data))
        if missing:
            raise ConfigError(f"{path} has no field {missing}")
        return cls.from_parameter(data)


def check_project(name: str) -> str:
    """A valid Feast project name, or ConfigError naming it."""
    if not _PROJECT_NAME.match(name):
        raise ConfigError(
            f"Feast project {name!r} must be letters, digits and underscores (not first)"
        )
    return name


def registry_url(registry: str, root: Path) -> str:
    """SQLAlchemy URL of the SQL registry: a SQLite file in ``root`` or a PostgreSQL database.

    Args:
        registry: ``"sqlite"`` or ``postgresql://user[:password]@host:port/database``
            (``postgresql+psycopg://`` is accepted as is).
        root: the workdir (absolute paths are rendered).
    """
    if registry == "sqlite":
        return f"sqlite:///{(root / FEATURE_DATA_DIR / 'registry.db').resolve()}"
    scheme = urlsplit(registry).scheme
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + registry.split("://", 1)[1]
    if scheme == "postgresql+psycopg":
        return registry
    raise ConfigError(f"registry must be 'sqlite' or a postgresql:// URL, got {registry!r}")


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N[,password=..][,ssl=true]``) of a URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(f"Redis URL must look like redis://host:port/db, got {url!r}")
    db = parts.path.lstrip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"Redis URL {url!r}: database {db!r} is not a number")
    options = [f"{parts.hostname}:{parts.port or 6379}", f"db={db}"]
    if parts.password:
        options.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def render_store_yaml(root: Path, settings: StoreSettings) -> str:
    """The text of ``feature_store.yaml`` for ``settings`` with absolute paths under ``root``."""
    root = root.resolve()
    values = {
        "project": check_project(settings.project),
        "registry_path": registry_url(settings.registry, root),
        "online_path": str(root / FEATURE_DATA_DIR / "online_store.db"),
        "redis_connection": "",
    }
    name = SQLITE_TEMPLATE
    if settings.online_store == "redis":
        values["redis_connection"] = redis_connection_string(settings.redis_url)
        name = REDIS_TEMPLATE
    elif settings.online_store != "sqlite":
        raise ConfigError(
            f"online store must be 'sqlite' or 'redis', got {settings.online_store!r}"
        )
    return Template((TEMPLATES / name).read_text()).substitute(values)


def render_repo(root: str | Path, settings: StoreSettings | None = None) -> Path:
    """Make ``root`` a Feast repository: rendered yaml, definitions and ``.feastignore``.

    Args:
        root: the feature workdir (created if missing).
        settings: store choices; default SQLite registry and online store, project ``mirec``.

    Returns:
        The repository path (absolute).
    """
    root = Path(root).resolve()
    (root / FEATURE_DATA_DIR).mkdir(parents=True, exist_ok=True)
    text = render_store_yaml(root, settings or StoreSettings())
    (root / STORE_YAML).write_text(text)
    shutil.copyfile(TEMPLATES / DEFINITIONS, root / DEFINITIONS)
    shutil.copyfile(TEMPLATES / FEASTIGNORE_TEMPLATE, root / ".feastignore")
    return root


def require_repo(root: str | Path) -> Path:
    """The rendered repository at ``root``, or ConfigError telling to run ``apply`` first."""
    root = Path(root).resolve()
    if not (root / STORE_YAML).is_file():
        raise ConfigError(
            f"{root} has no {STORE_YAML}: run `mirec features apply --workdir {root}` first"
        )
    return root


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The build manifest of a workdir (``Layout.manifest``).

    Raises:
        ConfigError: no build has run there.
        DataFormatError: the file is not valid JSON.
    """
    path = Layout(Path(root)).manifest
    if not path.is_file():
        raise ConfigError(f"{path} not found: run `mirec features build` first")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(str(path), exc.lineno, f"broken JSON: {exc.msg}") from exc
    return data
