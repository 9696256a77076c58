"""dispatcher: in-app messages and content cards, each user's feed

Revision ID: dispatcher_0007
Revises: dispatcher_0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "dispatcher_0007"
down_revision = "dispatcher_0006"
branch_labels = None
depends_on = None
S = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "inbox_messages",
        sa.Column("send_id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(512)),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("variant", sa.String(64)),
        sa.Column("content", JSONB, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True)),
        sa.Column("clicked_at", sa.DateTime(timezone=True)),
        sa.Column("dismissed_at", sa.DateTime(timezone=True)),
        schema=S,
    )
    op.create_index("inbox_messages_feed", "inbox_messages", ["workspace_id", "profile_id", "sent_at"], schema=S)


def downgrade() -> None:
    op.drop_table("inbox_messages", schema=S)
