"""profiles: `segment_subscription_groups`, the workspace's subscription groups for other services' SQL

Revision ID: profiles_0016
Revises: profiles_0015

The scheduler checks that a campaign's `subscription_group_id` is a live group of the campaign's channel
through this read-only view (a contract: columns are only ever added).
"""

from alembic import op

revision = "profiles_0016"
down_revision = "profiles_0015"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.execute(
        f"CREATE VIEW {S}.segment_subscription_groups AS "
        f"SELECT workspace_id, group_id, channel, name, archived_at FROM {S}.subscription_groups"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {S}.segment_subscription_groups")
