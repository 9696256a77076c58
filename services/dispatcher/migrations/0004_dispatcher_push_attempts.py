"""dispatcher: each device's attempts of a push send

Revision ID: dispatcher_0004
Revises: dispatcher_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "dispatcher_0004"
down_revision = "dispatcher_0003"
branch_labels = None
depends_on = None
S = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "push_attempts",
        sa.Column("send_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(512), primary_key=True),
        sa.Column("service", sa.String(8)),
        sa.Column("platform", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.String(32)),
        sa.Column("reason", sa.String(1000)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("provider_response", sa.String(1000)),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("push_attempts", schema=S)
