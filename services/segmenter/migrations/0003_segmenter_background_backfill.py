"""segmenter: a new segment's members are stored in the background, in chunks that resume after a restart

Revision ID: segmenter_0003
Revises: segmenter_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "segmenter_0003"
down_revision = "segmenter_0002"
branch_labels = None
depends_on = None
S = "segmenter"


def upgrade() -> None:
    op.add_column("segments", sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("segments", sa.Column("backfilled_through", sa.Text(), nullable=True), schema=S)
    # Segments made before this revision had their members stored when they were created.
    op.execute(f"UPDATE {S}.segments SET ready_at = created_at")
    op.create_index("segments_computing", "segments", ["created_at"], schema=S, postgresql_where=sa.text("ready_at IS NULL"))


def downgrade() -> None:
    op.drop_index("segments_computing", table_name="segments", schema=S)
    op.drop_column("segments", "backfilled_through", schema=S)
    op.drop_column("segments", "ready_at", schema=S)
