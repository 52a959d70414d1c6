"""Feast objects of mirec: entities, file sources over the Spark outputs, views and services.

Declarations only; every name comes from ``mirec.schema``. Source paths are relative to the
rendered repository (``mirec features apply`` renders it next to the Spark outputs in
``FEATURE_DATA_DIR``). Entity keys are the external ids (strings); the arrays hold indices of the
append-only item vocabulary. ``ttl=timedelta(0)`` means "no age limit": a user's history stays
valid however old, and point-in-time joins only require ``event_timestamp <= t``.

Timestamps: a ``user_history`` row at time t holds the events strictly before t (see
``mirec.features.sequences``); the "as of build" row of each user is stamped with the build time
and is what ``materialize`` loads online. Item and user-profile rows are static tables valid from
``MIN_EVENT_TS``; item popularity is counted as of the build (a serving feature, not a
point-in-time one).
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Int64, String

from mirec.schema import (
    FEAST_CREATED_TS,
    FEAST_TS,
    FEATURE_DATA_DIR,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_ATTRIBUTES,
    ITEM_ENTITY,
    ITEM_FEATURES_FV,
    ITEM_ID,
    ITEM_IDX,
    ITEM_POPULARITY,
    ITEM_TOWER_FS,
    NUM_EVENTS,
    USER_ATTRIBUTES,
    USER_ENTITY,
    USER_HISTORY_FV,
    USER_HISTORY_PUSH,
    USER_ID,
    USER_PROFILE_FV,
    USER_TOWER_FS,
)

NO_TTL = timedelta(0)


def _source(table: str) -> FileSource:
    """The Spark output folder of one table (parquet part files, UTC TIMESTAMP_MICROS)."""
    return FileSource(
        name=f"{table}_source",
        path=f"{FEATURE_DATA_DIR}/{table}",
        timestamp_field=FEAST_TS,
        created_timestamp_column=FEAST_CREATED_TS,
    )


user = Entity(
    name=USER_ENTITY,
    join_keys=[USER_ID],
    value_type=ValueType.STRING,
    description="a user, keyed by the external user id",
)
item = Entity(
    name=ITEM_ENTITY,
    join_keys=[ITEM_ID],
    value_type=ValueType.STRING,
    description="an item, keyed by the external item id",
)

# Fresh clicks are pushed into the same online rows (mirec.features.push); the batch source
# behind the push source stays what point-in-time joins and materialization read.
user_history_push = PushSource(name=USER_HISTORY_PUSH, batch_source=_source(USER_HISTORY_FV))
user_history = FeatureView(
    name=USER_HISTORY_FV,
    entities=[user],
    ttl=NO_TTL,
    online=True,
    source=user_history_push,
    schema=[
        Field(name=HIST_ITEM_IDS, dtype=Array(Int64)),
        Field(name=HIST_TS, dtype=Array(Int64)),
        Field(name=HIST_LEN, dtype=Int64),
        Field(name=NUM_EVENTS, dtype=Int64),
    ],
    description="last-N item indices (oldest first), their UTC microsecond timestamps, "
    "their count and the untruncated number of earlier events",
)
user_profile = FeatureView(
    name=USER_PROFILE_FV,
    entities=[user],
    ttl=NO_TTL,
    online=True,
    source=_source(USER_PROFILE_FV),
    schema=[Field(name=USER_ATTRIBUTES, dtype=Array(String))],
    description="categorical user attributes as key=value tokens",
)
item_features = FeatureView(
    name=ITEM_FEATURES_FV,
    entities=[item],
    ttl=NO_TTL,
    online=True,
    source=_source(ITEM_FEATURES_FV),
    schema=[
        Field(name=ITEM_IDX, dtype=Int64),
        Field(name=ITEM_ATTRIBUTES, dtype=Array(String)),
        Field(name=ITEM_POPULARITY, dtype=Int64),
    ],
    description="vocabulary index, attribute tokens and behaviour-event count of an item",
)

user_tower_v1 = FeatureService(
    name=USER_TOWER_FS,
    features=[user_history, user_profile],
    description="inputs of the user tower, version 1",
    tags={"version": "1"},
)
item_tower_v1 = FeatureService(
    name=ITEM_TOWER_FS,
    features=[item_features],
    description="inputs of the item tower, version 1",
    tags={"version": "1"},
)
