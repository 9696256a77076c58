"""dispatcher: suppressed addresses (hard bounces, SMS opt-outs)

Revision ID: dispatcher_0005
Revises: dispatcher_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "dispatcher_0005"
down_revision = "dispatcher_0004"
branch_labels = None
depends_on = None
S = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(1000)),
        sa.Column("send_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("suppressions", schema=S)
