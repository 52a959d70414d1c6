"""The only module that talks to Feast: apply, materialize, online lookups, point-in-time frames.

Pitfalls handled here (see the feature pipeline notes): the file offline store drops entity rows
without a valid feature row and collapses rows sharing (key, timestamp), so training frames are
re-joined to the caller's entity frame and their row count is checked; a FeatureService is
resolved once per reader and warmed, because the first lookup in a process costs 100+ ms.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import weakref
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mirec.errors import ConfigError, FeatureLookupError
from mirec.features.repo import DEFINITIONS, STORE_YAML, Layout, read_manifest, require_repo
from mirec.schema import (
    FEAST_CREATED_TS,
    FEAST_TS,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_FEATURES_FV,
    NUM_EVENTS,
    USER_ATTRIBUTES,
    USER_HISTORY_FV,
    USER_ID,
    USER_PROFILE_FV,
    USER_TOWER_FS,
)

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

logger = logging.getLogger(__name__)

_KEY = "_entity_row"
MATERIALIZE_BATCH_ROWS = 20_000
ONLINE_TIMEOUT_S = 1.0  # a request path's connect and read limit on a Redis online store
_WARMUP_ID = "__mirec_warmup__"
# What a user without any earlier event gets in a training frame.
_EMPTY_USER_FEATURES: dict[str, Any] = {
    HIST_ITEM_IDS: [],
    HIST_TS: [],
    HIST_LEN: 0,
    NUM_EVENTS: 0,
    USER_ATTRIBUTES: [],
}


def open_store(repo: str | Path) -> FeatureStore:
    """A FeatureStore over a rendered repository (see ``mirec.features.repo.render_repo``)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(require_repo(repo)))


def open_serving_store(repo: str | Path, timeout_s: float = ONLINE_TIMEOUT_S) -> FeatureStore:
    """``open_store`` for request paths: a Redis online store fails fast instead of stalling.

    redis-py's default client retries a refused or timed-out command 3 times with exponential
    backoff (about 8-11 s before it raises), and waits forever on a server that stops
    answering. A request path needs the error at once, to fall back (``ResilientHistories``).
    Here the client retries once, immediately (a pooled connection the server closed), and
    each connect and read gives up after ``timeout_s``. A SQLite online store is unchanged.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore

    store = open_store(repo)
    online = store.provider.online_store
    if isinstance(online, RedisOnlineStore):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = online._get_client(store.config.online_store)  # Feast's own, cached client
        client.connection_pool.connection_kwargs.update(
            socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        client.set_retry(Retry(NoBackoff(), 1))
    return store


@contextlib.contextmanager
def _inside(repo: Path) -> Iterator[io.StringIO]:
    """Run like the ``feast`` CLI does (cwd = repo, repo on sys.path), then restore everything.

    Yields the captured stdout (Feast prints its plan), which is logged afterwards.
    """
    cwd, bytecode, module = os.getcwd(), sys.dont_write_bytecode, Path(DEFINITIONS).stem
    sys.modules.pop(module, None)  # another repo's definitions may be cached under this name
    sys.path.insert(0, str(repo))
    captured = io.StringIO()
    try:
        os.chdir(repo)
        with contextlib.redirect_stdout(captured):
            yield captured
    finally:
        os.chdir(cwd)
        sys.path.remove(str(repo))
        sys.modules.pop(module, None)
        sys.dont_write_bytecode = bytecode
        for line in captured.getvalue().splitlines():
            if line.strip():
                logger.info("feast: %s", line.strip())


def apply(repo: str | Path) -> None:
    """``feast apply`` for the rendered repository (only files not in ``.feastignore``).

    Registers the entities, sources, views and services and creates the online tables.
    """
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    root = require_repo(repo)
    config = load_repo_config(root, root / STORE_YAML)
    with _inside(root):
        apply_total(config, root, skip_source_validation=False)
    logger.info("applied Feast repo %s (project %s)", root, config.project)


def materialize(repo: str | Path, end: datetime | None = None) -> dict[str, int]:
    """Load the rows of the last build that serving reads into the online store.

    That is the "as of build" partition of ``user_history`` (one row per user) and the static
    ``user_profile`` and ``item_features`` tables, each row with ``event_timestamp <= end``,
    written through ``FeatureStore.write_to_online_store`` in batches. Feast's own
    ``materialize`` over the file offline store is not used: it reads and sorts every per-event
    snapshot and dask hashes (pickles) the array columns, which took ~45 s for 10^4 users.

    Args:
        repo: the rendered repository (with a build manifest).
        end: rows stamped later are skipped (default: now). Never pass a future time.

    Returns:
        Rows written per feature view.

    Raises:
        ConfigError: ``end`` is before the build time (nothing would be loaded).
    """
    root = require_repo(repo)
    build_ts = datetime.fromisoformat(read_manifest(root)["build_ts"])
    end = end or datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    if end < build_ts:
        raise ConfigError(f"materialize end {end.isoformat()} is before the build {build_ts}")
    store = open_store(root)
    layout = Layout(root)
    sources = {
        USER_HISTORY_FV: layout.latest_history,
        USER_PROFILE_FV: layout.table(USER_PROFILE_FV),
        ITEM_FEATURES_FV: layout.table(ITEM_FEATURES_FV),
    }
    written = {view: _load_online(store, view, path, end) for view, path in sources.items()}
    logger.info("materialized %s up to %s: %s", root, end.isoformat(), written)
    return written


def _load_online(store: FeatureStore, view: str, path: Path, end: datetime) -> int:
    """Write one table's rows stamped at or before ``end`` to the online store, in batches."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    feature_view = store.get_feature_view(view)
    columns = [c.name for c in feature_view.entity_columns]
    columns += [f.name for f in feature_view.features] + [FEAST_TS, FEAST_CREATED_TS]
    if not path.is_dir():
        raise ConfigError(f"{path} not found: run `mirec features build` first")
    limit = pa.scalar(end, type=pa.timestamp("us", tz="UTC"))
    scanner = ds.dataset(str(path), format="parquet").scanner(
        columns=columns, filter=ds.field(FEAST_TS) <= limit, batch_size=MATERIALIZE_BATCH_ROWS
    )
    rows = 0
    for batch in scanner.to_batches():
        if batch.num_rows:
            store.write_to_online_store(view, batch.to_pandas())
            rows += batch.num_rows
    return rows


def teardown(repo: str | Path) -> None:
    """Remove the project's online tables or keys and its registry entries."""
    store = open_store(repo)
    with contextlib.redirect_stdout(io.StringIO()):
        store.teardown()
    logger.info("tore down Feast project %s", store.project)


class OnlineFeatures:
    """Online lookups through one FeatureService, resolved once and warmed at construction.

    Args:
        store: the feature store.
        service: FeatureService name (default ``USER_TOWER_FS``).
        join_key: the entity key column of the service's views (default ``USER_ID``).
        warm: do one throw-away lookup now (the first call in a process is slow).
    """

    def __init__(
        self,
        store: FeatureStore,
        service: str = USER_TOWER_FS,
        join_key: str = USER_ID,
        warm: bool = True,
    ) -> None:
        self.store = store
        self.join_key = join_key
        self.service: FeatureService = store.get_feature_service(service)
        self.feature_names = [
            field.name
            for projection in self.service.feature_view_projections
            for field in projection.features
        ]
        if warm:
            self.lookup([_WARMUP_ID])

    def lookup(self, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Feature values of each id; None for an id the online store does not hold.

        Args:
            ids: [B] external ids (str).

        Returns:
            id -> {feature name: value} (lists for array features), in request order.
        """
        keys = [str(i) for i in ids]
        try:
            response = self.store.get_online_features(
                features=self.service, entity_rows={self.join_key: keys}
            ).to_dict()
        except Exception as exc:  # Feast raises many types; the caller gets one
            raise FeatureLookupError(
                f"online lookup of {len(keys)} ids through {self.service.name!r} failed: {exc}"
            ) from exc
        out: dict[str, dict[str, Any] | None] = {}
        for row, key in enumerate(keys):
            values = {name: response[name][row] for name in self.feature_names}
            found = any(value is not None for value in values.values())
            out[key] = values if found else None
        return out


_READERS: weakref.WeakKeyDictionary[Any, OnlineFeatures] = weakref.WeakKeyDictionary()


def get_online_histories(
    store: FeatureStore, user_ids: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """The user-tower features of each user from the online store (None = unknown user).

    The FeatureService is resolved and warmed once per store and reused.
    """
    reader = _READERS.get(store)
    if reader is None:
        reader = _READERS[store] = OnlineFeatures(store)
    return reader.lookup(user_ids)


def _entity_keys(entity_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the entity frame with UTC timestamps and str ids, its unique (user, time) keys)."""
    missing = [c for c in (USER_ID, FEAST_TS) if c not in entity_df.columns]
    if missing:
        raise ConfigError(f"entity_df needs columns {missing}; it has {list(entity_df.columns)}")
    frame = entity_df.copy()
    frame[USER_ID] = frame[USER_ID].astype(str)
    frame[FEAST_TS] = pd.to_datetime(frame[FEAST_TS], utc=True, format="ISO8601")
    keys = frame[[USER_ID, FEAST_TS]].drop_duplicates().reset_index(drop=True)
    keys[_KEY] = np.arange(len(keys), dtype=np.int64)
    return frame, keys


def get_training_frame(
    store: FeatureStore, entity_df: pd.DataFrame, service: str = USER_TOWER_FS
) -> pd.DataFrame:
    """Point-in-time correct user features for each (``USER_ID``, ``FEAST_TS``) row.

    The value for time t comes from the latest feature row at or before t: a history of the
    events strictly before t. Entity rows for which the offline store has no valid row get the
    empty history (``[]``, length 0). The result has exactly the rows of ``entity_df``, in its
    order, with its other columns kept.

    Args:
        store: the feature store.
        entity_df: [R] rows with ``USER_ID`` and ``FEAST_TS`` (tz-aware, or naive = UTC).
        service: the FeatureService to read (default ``USER_TOWER_FS``).

    Raises:
        FeatureLookupError: the store returned duplicate or foreign rows.
    """
    frame, keys = _entity_keys(entity_df)
    joined = keys
    for projection in store.get_feature_service(service).feature_view_projections:
        refs = [f"{projection.name_to_use()}:{field.name}" for field in projection.features]
        got = store.get_historical_features(entity_df=keys, features=refs).to_df()
        joined = joined.merge(_checked(got, keys, projection.name), on=_KEY, how="left")
    joined = joined.drop(columns=_KEY)
    out = frame.merge(joined, on=[USER_ID, FEAST_TS], how="left", validate="many_to_one")
    if len(out) != len(entity_df):
        raise FeatureLookupError(f"training frame has {len(out)} rows, expected {len(entity_df)}")
    return _fill_missing(out)


def _checked(got: pd.DataFrame, keys: pd.DataFrame, view: str) -> pd.DataFrame:
    """One view's retrieval, checked: no duplicate or foreign rows; dropped rows are counted.

    Views are read one at a time because the file store drops an entity row for EVERY view as
    soon as one view has no valid row for it.
    """
    if got[_KEY].duplicated().any() or not got[_KEY].isin(keys[_KEY]).all():
        raise FeatureLookupError(f"offline store returned duplicate or unknown rows for {view}")
    if len(got) < len(keys):
        logger.info(
            "%s: %d of %d entity rows had no feature row", view, len(keys) - len(got), len(keys)
        )
    return got.drop(columns=[USER_ID, FEAST_TS])


def _fill_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows without a feature row get the empty history; counts become int64 again."""
    for name, empty in _EMPTY_USER_FEATURES.items():
        if name not in frame.columns:
            continue
        missing = frame[name].isna()
        if isinstance(empty, list):
            frame.loc[missing, name] = pd.Series(
                [[] for _ in range(missing.sum())], index=frame.index[missing], dtype=object
            )
        else:
            frame[name] = frame[name].fillna(empty).astype(np.int64)
    return frame
