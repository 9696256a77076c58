"""dispatcher: delivery log

Revision ID: dispatcher_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "dispatcher_0001"
down_revision = None
branch_labels = None
depends_on = None
S = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("send_id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(512)),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recipient", sa.String(2000)),
        sa.Column("subject", sa.String(1000)),
        sa.Column("provider_response", sa.String(1000)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        schema=S,
    )
    op.create_index("deliveries_user", "deliveries", ["workspace_id", "user_id"], schema=S)


def downgrade() -> None:
    op.drop_table("deliveries", schema=S)
