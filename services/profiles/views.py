"""The read-only views the profiles service publishes for other services' SQL (a contract).

Created by the profiles migrations. Columns may be added, never renamed or removed. The
segmenter compiles segment filters against them (windowed session and purchase counts against
`segment_activity_days`); the scheduler reads `segment_events` to find exception events; the
dispatcher reads push-enabled devices and their tokens from `segment_devices`.
`segment_subscriptions` holds each profile's subscription states (a channel's own: `group_id` null; a
group's: its id, `channel` the group's channel), `segment_subscription_groups` the workspace's subscription
groups; the scheduler checks a campaign's group there (docs/subscriptions.md).
"""

from sqlalchemy import Boolean, Column, Date, DateTime, Integer, MetaData, Numeric, String, Table
from sqlalchemy.dialects.postgresql import JSONB

views = MetaData(schema="profiles")
segment_profiles = Table(
    "segment_profiles",
    views,
    Column("workspace_id", String),
    Column("profile_id", String),
    Column("user_id", String),
    Column("traits", JSONB),
    Column("first_seen", DateTime(timezone=True)),
    Column("last_seen", DateTime(timezone=True)),
    Column("attributes", JSONB),
    Column("session_count", Integer),
    Column("first_session", DateTime(timezone=True)),
    Column("last_session", DateTime(timezone=True)),
    Column("session_hours", JSONB),
    Column("purchase_count", Integer),
    Column("revenue", Numeric(20, 4)),
    Column("first_purchase", DateTime(timezone=True)),
    Column("last_purchase", DateTime(timezone=True)),
)
segment_events = Table(
    "segment_events",
    views,
    Column("workspace_id", String),
    Column("profile_id", String),
    Column("name", String),
    Column("properties", JSONB),
    Column("timestamp", DateTime(timezone=True)),
)
segment_event_counts = Table(
    "segment_event_counts",
    views,
    Column("workspace_id", String),
    Column("profile_id", String),
    Column("name", String),
    Column("day", Date),
    Column("count", Integer),
)
segment_devices = Table(
    "segment_devices",
    views,
    Column("workspace_id", String),
    Column("profile_id", String),
    Column("device_id", String),
    Column("platform", String),
    Column("app", String),
    Column("app_version", String),
    Column("os_version", String),
    Column("model", String),
    Column("locale", String),
    Column("time_zone", String),
    Column("push_enabled", Boolean),
    Column("last_seen", DateTime(timezone=True)),
    Column("push_token", String),  # for the dispatcher alone: no segment condition reads it
)
# Sessions started and purchases per profile and UTC day (windowed counts and revenue: "3 sessions in the last
# 7 days", "spent over 100 in the last 30 days"); revenue in the workspace currency.
segment_activity_days = Table(
    "segment_activity_days",
    views,
    Column("workspace_id", String),
    Column("profile_id", String),
    Column("day", Date),
    Column("sessions", Integer),
    Column("purchases", Integer),
    Column("revenue", Numeric(20, 4)),
)
segment_subscriptions = Table(
    "segment_subscriptions",
    views,
    Column("workspace_id", String),
    Column("profile_id", String),
    Column("channel", String),  # email, push or sms: the channel's own state, or the group's channel
    Column("group_id", String),  # null: the channel's own state
    Column("state", String),  # opted_in, subscribed, unsubscribed
    Column("at", DateTime(timezone=True)),
    Column("source", String),
)
segment_subscription_groups = Table(
    "segment_subscription_groups",
    views,
    Column("workspace_id", String),
    Column("group_id", String),
    Column("channel", String),
    Column("name", String),
    Column("archived_at", DateTime(timezone=True)),
)
