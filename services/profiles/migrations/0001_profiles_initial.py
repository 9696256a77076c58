"""profiles: profiles, identities, events, event counts, and the segmentation views

Revision ID: profiles_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "profiles_0001"
down_revision = None
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(512)),
        sa.Column("traits", JSONB, nullable=False, server_default="{}"),
        sa.Column("trait_times", JSONB, nullable=False, server_default="{}"),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )
    op.create_index(
        "profiles_user_id_key", "profiles", ["workspace_id", "user_id"], unique=True,
        schema=S, postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_table(
        "identities",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(512), primary_key=True),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )
    op.create_index("identities_profile", "identities", ["workspace_id", "profile_id"], schema=S)
    op.create_table(
        "events",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.String(256), primary_key=True),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("name", sa.String(600), nullable=False),
        sa.Column("user_id", sa.String(512)),
        sa.Column("anonymous_id", sa.String(512)),
        sa.Column("properties", JSONB, nullable=False, server_default="{}"),
        sa.Column("traits", JSONB, nullable=False, server_default="{}"),
        sa.Column("context", JSONB, nullable=False, server_default="{}"),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index(
        "events_profile_name_time", "events", ["workspace_id", "profile_id", "name", "timestamp"],
        schema=S,
    )
    op.create_index("events_anonymous", "events", ["workspace_id", "anonymous_id"], schema=S)
    op.create_table(
        "event_counts",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(600), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
        schema=S,
    )
    # The published, read-only contract for segment SQL. Columns may be added, never renamed.
    op.execute(
        f"CREATE VIEW {S}.segment_profiles AS SELECT workspace_id, profile_id, user_id, traits, "
        f"first_seen, last_seen FROM {S}.profiles"
    )
    op.execute(
        f"CREATE VIEW {S}.segment_events AS SELECT workspace_id, profile_id, name, properties, "
        f"timestamp FROM {S}.events"
    )
    op.execute(
        f"CREATE VIEW {S}.segment_event_counts AS SELECT workspace_id, profile_id, name, day, "
        f"count FROM {S}.event_counts"
    )


def downgrade() -> None:
    for view in ("segment_event_counts", "segment_events", "segment_profiles"):
        op.execute(f"DROP VIEW IF EXISTS {S}.{view}")
    for table in ("event_counts", "events", "identities", "profiles"):
        op.drop_table(table, schema=S)
