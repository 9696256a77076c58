"""The read-only views the segmenter publishes for other services' SQL (a contract).

Created by the segmenter migrations. Columns may be added, never renamed or removed. The scheduler
reads `segment_members` to decide a scheduled or API-triggered campaign's audience set-based.
"""

from sqlalchemy import Column, DateTime, MetaData, String, Table

views = MetaData(schema="segmenter")
segment_members = Table(
    "segment_members",
    views,
    Column("workspace_id", String),
    Column("segment_id", String),
    Column("profile_id", String),
    Column("user_id", String),
    Column("entered_at", DateTime(timezone=True)),
)
