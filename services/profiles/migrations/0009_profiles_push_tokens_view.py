"""profiles: `segment_devices` gains push_token, for the dispatcher to push to (columns are only ever added)

Revision ID: profiles_0009
Revises: profiles_0008

The dispatcher reads a user's push-enabled devices and their tokens through this published view,
never the devices table. A token a provider called dead is still shown, with push_enabled false.
"""

from alembic import op

revision = "profiles_0009"
down_revision = "profiles_0008"
branch_labels = None
depends_on = None
S = "profiles"
COLUMNS = "workspace_id, profile_id, device_id, platform, app, app_version, os_version, model, locale, time_zone, push_enabled, last_seen"


def upgrade() -> None:
    # CREATE OR REPLACE VIEW may append columns; the existing ones keep their names, order and types.
    op.execute(f"CREATE OR REPLACE VIEW {S}.segment_devices AS SELECT {COLUMNS}, push_token FROM {S}.devices")


def downgrade() -> None:
    op.execute(f"DROP VIEW {S}.segment_devices")
    op.execute(f"CREATE VIEW {S}.segment_devices AS SELECT {COLUMNS} FROM {S}.devices")
