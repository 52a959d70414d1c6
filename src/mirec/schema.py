"""Column, feature-view and feature-service names and the PAD id: the single source of truth.

Spark jobs, the Feast repo, the data layer, training and serving import these names; no column
name appears as a string literal anywhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

# --- canonical event log -------------------------------------------------------------------
USER_ID: Final = "user_id"  # external user id (string)
ITEM_ID: Final = "item_id"  # external item id (string)
EVENT_TS: Final = "event_ts"  # UTC timestamp
EVENT_TYPE: Final = "event_type"
SEQ_POS: Final = "seq_pos"  # position of the event in its source; order is (EVENT_TS, SEQ_POS)
EVENT_ID: Final = "event_id"  # optional dedupe key for events delivered twice
# Serving feedback (mirec.serving.events): who served the event, in which response, where.
MODEL_VERSION: Final = "model_version"
VARIANT: Final = "variant"  # "production" | "canary"
REQUEST_ID: Final = "request_id"
POSITION: Final = "position"  # 0-based rank of the item in the response
EVENT_COLUMNS: Final = (USER_ID, ITEM_ID, EVENT_TS, EVENT_TYPE, SEQ_POS)
EVENT_ORDER: Final = (EVENT_TS, SEQ_POS)

EVENT_INTERACTION: Final = "interaction"
EVENT_CLICK: Final = "click"
EVENT_IMPRESSION: Final = "impression"
EVENT_TYPES: Final = (EVENT_INTERACTION, EVENT_CLICK, EVENT_IMPRESSION)
# Event types that count as positive behaviour in sequences (impressions do not).
BEHAVIOUR_EVENT_TYPES: Final = (EVENT_INTERACTION, EVENT_CLICK)

# Files without timestamps (Yelp.txt) get EVENT_TS = NO_TIME_BASE + seq_pos seconds.
NO_TIME_BASE: Final = datetime(2000, 1, 1, tzinfo=UTC)

# --- item catalog and user profile ----------------------------------------------------------
ITEM_ATTRIBUTES: Final = "attributes"  # list[str] of categorical attribute tokens
ITEM_TEXT: Final = "text"
USER_ATTRIBUTES: Final = "attributes"  # dict-like columns are flattened to "attr=value" tokens

# --- vocabulary ----------------------------------------------------------------------------
PAD_ITEM_ID: Final = 0  # dense index 0 is padding; real items are 1..N
ITEM_IDX: Final = "item_idx"  # dense index of ITEM_ID in the append-only vocabulary

# --- sequence features / training examples --------------------------------------------------
HIST_ITEM_IDS: Final = "hist_item_ids"  # last-N item indices, oldest first, unpadded
HIST_TS: Final = "hist_ts"  # their timestamps (UTC, microseconds)
HIST_LEN: Final = "hist_len"
TARGET_ITEM_IDS: Final = "target_item_ids"  # list of target indices (1 for protocol B)
SPLIT: Final = "split"  # "train" | "valid" | "test"
SPLITS: Final = ("train", "valid", "test")
REASON: Final = "reason"  # why a row was quarantined
DEFAULT_MAX_LEN: Final = 50

# --- Feast ---------------------------------------------------------------------------------
FEAST_TS: Final = "event_timestamp"
FEAST_CREATED_TS: Final = "created"
USER_ENTITY: Final = "user"
ITEM_ENTITY: Final = "item"
USER_HISTORY_FV: Final = "user_history"
USER_HISTORY_PUSH: Final = "user_history_push"  # push source of USER_HISTORY_FV (fresh clicks)
USER_PROFILE_FV: Final = "user_profile"
ITEM_FEATURES_FV: Final = "item_features"
USER_TOWER_FS: Final = "user_tower_v1"
ITEM_TOWER_FS: Final = "item_tower_v1"
ITEM_POPULARITY: Final = "popularity"

# --- data quality (mirec.data.quality; mirrored by the Spark / GX validation) ---------------
SOURCE_LINE: Final = "source_line"  # 1-based line (or row) of a quarantined row in its source
MIN_EVENT_TS: Final = datetime(1990, 1, 1, tzinfo=UTC)  # earlier events are "before_epoch"

# --- feature pipeline (mirec.features) ------------------------------------------------------
NUM_EVENTS: Final = "num_events"  # behaviour events before the snapshot (untruncated count)
FEATURE_DATA_DIR: Final = "data"  # Spark outputs inside a rendered Feast repo, one folder a table
TRAINING_EXAMPLES: Final = "training_examples"  # folder prefix of the protocol A / B examples
ROW_KIND: Final = "row_kind"  # user-history partition: "event" snapshots, "latest" (as of build)
