"""profiles: whether a profile's user has been seen, apart from Herald's own events

Revision ID: profiles_0008
Revises: profiles_0007

Herald's events ($message_sent, ...) no longer move first/last seen, except on a profile that has no
event of its user yet (`user_seen` false), so that the profile converges whatever order events come in.
Every existing profile has been seen by its user (true by default, no table rewrite).
"""

import sqlalchemy as sa
from alembic import op

revision = "profiles_0008"
down_revision = "profiles_0007"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.add_column("profiles", sa.Column("user_seen", sa.Boolean, nullable=False, server_default=sa.true()), schema=S)


def downgrade() -> None:
    op.drop_column("profiles", "user_seen", schema=S)
