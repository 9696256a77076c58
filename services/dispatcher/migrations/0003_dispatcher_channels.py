"""dispatcher: channel credentials (APNs, FCM) per workspace and app, their secrets sealed

Revision ID: dispatcher_0003
Revises: dispatcher_0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "dispatcher_0003"
down_revision = "dispatcher_0002"
branch_labels = None
depends_on = None
S = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("app_id", sa.String(64), primary_key=True, server_default=""),
        sa.Column("settings", JSONB, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("channels", schema=S)
