"""Feast declarations for recops: the single source of entities, sources, views, services.

The Parquet sources are written by ``components.features.store.write_feature_tables``
(user and item snapshots as daily partitions) from an accepted dataset version (tables computed in ``components.features.tables``).
Source paths are relative: Feast resolves them against the repo path, which recops sets
to the workspace's features folder.

Point-in-time semantics: a row stamped ``t`` holds the entity's state after its events
at ``t``. ``ttl=0`` (no expiry) because sequence datasets often carry old clocks
(MovieLens 1998): a user's history does not go stale for training.

The event-count windows are declared here (``WINDOWS_DAYS``); ``features.windows_days``
in the recops config must match them (apply refuses a mismatch with a clear message).
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Float64, Int64, String

WINDOWS_DAYS = (1, 7, 30)
# Day partitions (``day=YYYY-MM-DD/part-0.parquet``, the UTC day of event_timestamp): a new
# dataset version rewrites only the days from its first changed one, and materialization
# reads only the days of its interval (components/features/partitions.py).
USER_SOURCE_PATH = "sources/user_features/day=*/*.parquet"
ITEM_SOURCE_PATH = "sources/item_features/day=*/*.parquet"
ITEM_CONTENT_SOURCE_PATH = "sources/item_content.parquet"

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A user (raw id string).",
)
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="An item (raw id string).",
)

user_source = FileSource(
    name="user_snapshots",
    path=USER_SOURCE_PATH,
    timestamp_field="event_timestamp",
    description="One row per (user, event time): history and activity after that time.",
)
item_source = FileSource(
    name="item_snapshots",
    path=ITEM_SOURCE_PATH,
    timestamp_field="event_timestamp",
    description="One row per (item, event time): popularity and metadata at that time.",
)

item_content_source = FileSource(
    name="item_content_rows",
    path=ITEM_CONTENT_SOURCE_PATH,
    timestamp_field="event_timestamp",
    description="One row per catalogue item (with or without events), stamped when published.",
)

user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="user_id", dtype=String),
        Field(
            name="recent_items",
            dtype=Array(String),
            description="last N raw item ids, oldest -> newest",
        ),
        Field(
            name="recent_event_types",
            dtype=Array(String),
            description="event type of each of recent_items (aligned); empty without types",
        ),
        Field(name="n_events", dtype=Int64),
        *[Field(name=f"events_{w}d", dtype=Int64) for w in WINDOWS_DAYS],
        Field(name="distinct_items", dtype=Int64),
        Field(name="last_event_unix", dtype=Int64, description="recency = now - this"),
        Field(name="seconds_since_prev", dtype=Float64, description="-1 on the first event"),
    ],
    source=user_source,
    online=True,
)

item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="item_id", dtype=String),
        Field(name="n_events", dtype=Int64),
        *[Field(name=f"pop_{w}d", dtype=Int64) for w in WINDOWS_DAYS],
        Field(name="trend", dtype=Float64, description="short-window rate / long-window rate"),
        Field(name="first_seen_unix", dtype=Int64),
        Field(name="category", dtype=String),
        Field(name="title", dtype=String),
    ],
    source=item_source,
    online=True,
)

# What an item *is*: the language-model vector of its text and its category tokens, one
# row per catalogue item (cold items included). Models read this view (the training path
# through the offline store) instead of the catalogue; the vectors then travel inside the
# model bundle, so the bento needs no encoder.
item_content = FeatureView(
    name="item_content",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="item_id", dtype=String),
        Field(
            name="text_vector",
            dtype=Array(Float32),
            description="L2-normalised sentence-encoder vector of the text; empty without text",
        ),
        Field(name="category", dtype=String, description="space-separated category tokens"),
        Field(name="text", dtype=String),
    ],
    source=item_content_source,
    online=True,
)

# Serving: what the bento reads per request (the user's recent history and activity).
serving_features = FeatureService(
    name="recommender_serving",
    features=[user_features],
    description="Online lookups for /recommend: recent history and activity counts.",
)

# Training: user history at the label time plus the label item's popularity/metadata.
training_features = FeatureService(
    name="recommender_training",
    features=[user_features, item_features],
    description="Point-in-time training frames over (user_id, item_id, event_timestamp).",
)

# Models: every vocabulary item's content as of the training run.
item_content_features = FeatureService(
    name="recommender_item_content",
    features=[item_content],
    description="Item text vectors and categories for the models' shared item input layer.",
)
