"""profiles: the profiles an event merged away, kept on the event so a redelivery announces them again

Revision ID: profiles_0002
Revises: profiles_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "profiles_0002"
down_revision = "profiles_0001"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    # Nullable with no default: adding it rewrites nothing, and only merging events carry a value.
    op.add_column("events", sa.Column("merged_profile_ids", JSONB), schema=S)


def downgrade() -> None:
    op.drop_column("events", "merged_profile_ids", schema=S)
