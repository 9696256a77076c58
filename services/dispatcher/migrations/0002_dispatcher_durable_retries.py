"""dispatcher: durable retries (the request kept, the next attempt and the give-up time), reason codes, outbox

Revision ID: dispatcher_0002
Revises: dispatcher_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from kernel.outbox import outbox_table

revision = "dispatcher_0002"
down_revision = "dispatcher_0001"
branch_labels = None
depends_on = None
S = "dispatcher"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("request", JSONB), schema=S)
    op.add_column("deliveries", sa.Column("reason_code", sa.String(32)), schema=S)
    op.add_column("deliveries", sa.Column("next_attempt_at", sa.DateTime(timezone=True)), schema=S)
    op.add_column("deliveries", sa.Column("give_up_at", sa.DateTime(timezone=True)), schema=S)
    op.create_index(
        "deliveries_retry_due", "deliveries", ["next_attempt_at"], schema=S,
        postgresql_where=sa.text("status = 'retrying'"),
    )
    op.create_index(
        "deliveries_in_attempt", "deliveries", ["updated_at"], schema=S,
        postgresql_where=sa.text("status = 'sending'"),
    )
    outbox_table(S, sa.MetaData()).create(op.get_bind())


def downgrade() -> None:
    op.drop_table("outbox", schema=S)
    op.drop_index("deliveries_in_attempt", "deliveries", schema=S)
    op.drop_index("deliveries_retry_due", "deliveries", schema=S)
    for column in ("give_up_at", "next_attempt_at", "reason_code", "request"):
        op.drop_column("deliveries", column, schema=S)
