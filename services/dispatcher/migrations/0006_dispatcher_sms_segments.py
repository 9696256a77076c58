"""dispatcher: an SMS send's segment count and encoding

Revision ID: dispatcher_0006
Revises: dispatcher_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "dispatcher_0006"
down_revision = "dispatcher_0005"
branch_labels = None
depends_on = None
S = "dispatcher"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("segments", sa.Integer), schema=S)
    op.add_column("deliveries", sa.Column("encoding", sa.String(8)), schema=S)


def downgrade() -> None:
    op.drop_column("deliveries", "encoding", schema=S)
    op.drop_column("deliveries", "segments", schema=S)
