"""segmenter: segments are listed page by page, edited and archived

Revision ID: segmenter_0006
Revises: segmenter_0005

`archived_at` is when a segment was archived (NULL: live): an archived segment is left out of lists
unless asked for, matches nobody and has no stored members. `updated_at` is when it last changed.
Lists page newest first by (created_at, id) within a workspace.
"""

import sqlalchemy as sa
from alembic import op

revision = "segmenter_0006"
down_revision = "segmenter_0005"
branch_labels = None
depends_on = None
S = "segmenter"


def upgrade() -> None:
    op.add_column("segments", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column(
        "segments", sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=S,
    )
    op.execute(f"UPDATE {S}.segments SET updated_at = created_at")
    op.create_index("segments_listing", "segments", ["workspace_id", "created_at", "id"], schema=S)


def downgrade() -> None:
    op.drop_index("segments_listing", table_name="segments", schema=S)
    op.drop_column("segments", "updated_at", schema=S)
    op.drop_column("segments", "archived_at", schema=S)
