"""profiles: sessions (count, first and newest start, starts by hour of the week, recent intervals)

Revision ID: profiles_0006
Revises: profiles_0005

Columns with a constant default or none are added without rewriting the table. `segment_profiles`
gains the session columns at its end.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "profiles_0006"
down_revision = "profiles_0005"
branch_labels = None
depends_on = None
S = "profiles"
BEFORE = "workspace_id, profile_id, user_id, traits, first_seen, last_seen, attributes"


def upgrade() -> None:
    op.add_column("profiles", sa.Column("session_count", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.add_column("profiles", sa.Column("first_session", sa.DateTime(timezone=True)), schema=S)
    op.add_column("profiles", sa.Column("last_session", sa.DateTime(timezone=True)), schema=S)
    op.add_column("profiles", sa.Column("session_hours", JSONB), schema=S)
    op.add_column("profiles", sa.Column("session_state", JSONB), schema=S)
    op.execute(
        f"CREATE OR REPLACE VIEW {S}.segment_profiles AS SELECT {BEFORE}, session_count, first_session, last_session, "
        f"session_hours FROM {S}.profiles"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {S}.segment_profiles")
    op.execute(f"CREATE VIEW {S}.segment_profiles AS SELECT {BEFORE} FROM {S}.profiles")
    for column in ("session_state", "session_hours", "last_session", "first_session", "session_count"):
        op.drop_column("profiles", column, schema=S)
