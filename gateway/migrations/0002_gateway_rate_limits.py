"""gateway: per-workspace rate limits and the per-second counts replicas share

Revision ID: gateway_0002
Revises: gateway_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "gateway_0002"
down_revision = "gateway_0001"
branch_labels = None
depends_on = None
S = "gateway"


def upgrade() -> None:
    op.add_column("workspaces", sa.Column("rate_limits", JSONB), schema=S)
    # Rows live a few seconds; UNLOGGED skips the WAL (a crash only forgets who sent what this second).
    op.create_table(
        "rate_counts",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("window", sa.BigInteger, primary_key=True),
        sa.Column("replica", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        schema=S,
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("rate_counts", schema=S)
    op.drop_column("workspaces", "rate_limits", schema=S)
