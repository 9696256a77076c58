"""profiles: devices (id, platform, app, versions, model, locale, time zone, push token) and whose they are

Revision ID: profiles_0005
Revises: profiles_0004

A push token is unique per workspace, checked at commit (deferred): one batch may take a token from
one device and give it to another in a single multi-row upsert, in any row order.
`segment_devices` is the read-only view segment SQL will read devices through.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "profiles_0005"
down_revision = "profiles_0004"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(512), primary_key=True),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(16)),
        sa.Column("app", sa.String(256)),
        sa.Column("app_version", sa.String(256)),
        sa.Column("os_version", sa.String(256)),
        sa.Column("model", sa.String(256)),
        sa.Column("locale", sa.String(256)),
        sa.Column("time_zone", sa.String(256)),
        sa.Column("push_token", sa.String(4096)),
        sa.Column("dead_token", sa.String(4096)),
        sa.Column("push_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("times", JSONB, nullable=False, server_default="{}"),
        sa.UniqueConstraint("workspace_id", "push_token", name="devices_push_token_key", deferrable=True,
                            initially="DEFERRED"),
        schema=S,
    )
    op.create_index("devices_profile", "devices", ["workspace_id", "profile_id"], schema=S)
    op.execute(
        f"CREATE VIEW {S}.segment_devices AS SELECT workspace_id, profile_id, device_id, platform, app, app_version, "
        f"os_version, model, locale, time_zone, push_enabled, last_seen FROM {S}.devices"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {S}.segment_devices")
    op.drop_table("devices", schema=S)
