"""scheduler: a campaign's subscription group (issue 13)

Revision ID: scheduler_0007
Revises: scheduler_0006

`subscription_group_id`: the profiles service's subscription group a campaign sends to (null: none); the
dispatcher skips users who left it, or, for a marketing campaign, never joined it.
"""

import sqlalchemy as sa
from alembic import op

revision = "scheduler_0007"
down_revision = "scheduler_0006"
branch_labels = None
depends_on = None
S = "scheduler"


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("subscription_group_id", sa.String(64)), schema=S)


def downgrade() -> None:
    op.drop_column("campaigns", "subscription_group_id", schema=S)
