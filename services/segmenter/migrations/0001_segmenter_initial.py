"""segmenter: segments and memberships

Revision ID: segmenter_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "segmenter_0001"
down_revision = None
branch_labels = None
depends_on = None
S = "segmenter"


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("filter", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )
    op.create_table(
        "memberships",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("segment_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(512)),
        sa.Column("entered_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )
    op.create_index("memberships_profile", "memberships", ["workspace_id", "profile_id"], schema=S)


def downgrade() -> None:
    op.drop_table("memberships", schema=S)
    op.drop_table("segments", schema=S)
