"""profiles: sessions and purchases per day, and `segment_activity_days` (windowed counts and revenue)

Revision ID: profiles_0015
Revises: profiles_0014

One row per profile and UTC day with activity: the sessions that started that day (a late event that joins
two sessions into one takes one back from the day the later one started), the purchases and their revenue
in the workspace currency (converted as the profile's lifetime revenue is). Segments read it through the
view `segment_activity_days` (a contract: columns are only ever added) for "sessions in the last N days"
and "spent over X in the last N days". Written only by events that start a session or complete an order.
Profiles that had sessions or purchases before this revision have no rows for them: their windows count
from the upgrade on.
"""

import sqlalchemy as sa
from alembic import op

revision = "profiles_0015"
down_revision = "profiles_0014"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.create_table(
        "activity_days",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("sessions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("purchases", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revenue", sa.Numeric(20, 4), nullable=False, server_default="0"),
        schema=S,
    )
    op.execute(
        f"CREATE VIEW {S}.segment_activity_days AS "
        f"SELECT workspace_id, profile_id, day, sessions, purchases, revenue FROM {S}.activity_days"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {S}.segment_activity_days")
    op.drop_table("activity_days", schema=S)
