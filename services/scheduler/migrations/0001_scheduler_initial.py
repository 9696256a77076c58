"""scheduler: campaigns and sends

Revision ID: scheduler_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "scheduler_0001"
down_revision = None
branch_labels = None
depends_on = None
S = "scheduler"


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("trigger", JSONB, nullable=False),
        sa.Column("audience", JSONB),
        sa.Column("delay_seconds", sa.Integer, nullable=False),
        sa.Column("cancel_on", JSONB, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True)),
        sa.Column("ends_at", sa.DateTime(timezone=True)),
        sa.Column("message", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )
    op.create_index("campaigns_active", "campaigns", ["workspace_id", "status"], schema=S)
    op.create_table(
        "sends",
        sa.Column("send_id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(512)),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("trigger", JSONB, nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )
    op.create_index(
        "sends_due", "sends", ["due_at"], schema=S, postgresql_where=sa.text("status = 'scheduled'")
    )
    op.create_index(
        "sends_profile", "sends", ["workspace_id", "campaign_id", "profile_id", "status"], schema=S
    )
    op.create_index("sends_user", "sends", ["workspace_id", "user_id"], schema=S)


def downgrade() -> None:
    op.drop_table("sends", schema=S)
    op.drop_table("campaigns", schema=S)
