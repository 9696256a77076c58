"""scheduler: campaigns are listed page by page, newest first, within a workspace

Revision ID: scheduler_0002
Revises: scheduler_0001

Lists page by (created_at, id) within a workspace. A campaign's status gains `archived` (the column
is text: no change), and an archived campaign sends nothing more.
"""

from alembic import op

revision = "scheduler_0002"
down_revision = "scheduler_0001"
branch_labels = None
depends_on = None
S = "scheduler"


def upgrade() -> None:
    op.create_index("campaigns_listing", "campaigns", ["workspace_id", "created_at", "id"], schema=S)


def downgrade() -> None:
    op.drop_index("campaigns_listing", table_name="campaigns", schema=S)
