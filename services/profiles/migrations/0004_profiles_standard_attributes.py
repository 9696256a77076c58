"""profiles: standard attributes (language, time zone, country, city, location, app, OS, device model)

Revision ID: profiles_0004
Revises: profiles_0003

Two JSONB columns beside the traits: the attributes and, per attribute, when and by whom it was
written (services/profiles/context.py `stamp`). A constant default adds a column without rewriting
the table. `segment_profiles` gains `attributes` at its end (a view's columns may be added, never
renamed or removed).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "profiles_0004"
down_revision = "profiles_0003"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.add_column("profiles", sa.Column("attributes", JSONB, nullable=False, server_default="{}"), schema=S)
    op.add_column("profiles", sa.Column("attribute_times", JSONB, nullable=False, server_default="{}"), schema=S)
    op.execute(
        f"CREATE OR REPLACE VIEW {S}.segment_profiles AS SELECT workspace_id, profile_id, user_id, traits, "
        f"first_seen, last_seen, attributes FROM {S}.profiles"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {S}.segment_profiles")
    op.execute(
        f"CREATE VIEW {S}.segment_profiles AS SELECT workspace_id, profile_id, user_id, traits, "
        f"first_seen, last_seen FROM {S}.profiles"
    )
    op.drop_column("profiles", "attribute_times", schema=S)
    op.drop_column("profiles", "attributes", schema=S)
