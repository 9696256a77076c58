"""segmenter: an outbox for membership changes (published after commit; a lost publish is drained later)

Revision ID: segmenter_0002
Revises: segmenter_0001
"""

import sqlalchemy as sa
from alembic import op

from kernel.outbox import outbox_table

revision = "segmenter_0002"
down_revision = "segmenter_0001"
branch_labels = None
depends_on = None
S = "segmenter"


def upgrade() -> None:
    outbox_table(S, sa.MetaData()).create(op.get_bind())


def downgrade() -> None:
    op.drop_table("outbox", schema=S)
