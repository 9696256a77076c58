"""profiles: purchases (count, lifetime revenue in the workspace currency, first and last)

Revision ID: profiles_0007
Revises: profiles_0006

Revenue is NUMERIC(20, 4), exact: sums do not depend on the order purchases arrive in.
`segment_profiles` gains the purchase columns at its end.
"""

import sqlalchemy as sa
from alembic import op

revision = "profiles_0007"
down_revision = "profiles_0006"
branch_labels = None
depends_on = None
S = "profiles"
BEFORE = ("workspace_id, profile_id, user_id, traits, first_seen, last_seen, attributes, session_count, first_session, "
          "last_session, session_hours")


def upgrade() -> None:
    op.add_column("profiles", sa.Column("purchase_count", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.add_column("profiles", sa.Column("revenue", sa.Numeric(20, 4), nullable=False, server_default="0"), schema=S)
    op.add_column("profiles", sa.Column("first_purchase", sa.DateTime(timezone=True)), schema=S)
    op.add_column("profiles", sa.Column("last_purchase", sa.DateTime(timezone=True)), schema=S)
    op.execute(
        f"CREATE OR REPLACE VIEW {S}.segment_profiles AS SELECT {BEFORE}, purchase_count, revenue, first_purchase, "
        f"last_purchase FROM {S}.profiles"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {S}.segment_profiles")
    op.execute(f"CREATE VIEW {S}.segment_profiles AS SELECT {BEFORE} FROM {S}.profiles")
    for column in ("last_purchase", "first_purchase", "revenue", "purchase_count"):
        op.drop_column("profiles", column, schema=S)
