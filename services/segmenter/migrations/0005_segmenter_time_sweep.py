"""segmenter: segments whose conditions read the clock are re-evaluated for everyone as time passes

Revision ID: segmenter_0005
Revises: segmenter_0004

`sweep_due_at` is when a segment's next sweep is due (NULL: its filter does not read the clock, or
the segment has not been looked at); `swept_through` is the last profile id of a sweep in progress,
so that a sweep resumes where it stopped, on any replica.
"""

import sqlalchemy as sa
from alembic import op

revision = "segmenter_0005"
down_revision = "segmenter_0004"
branch_labels = None
depends_on = None
S = "segmenter"


def upgrade() -> None:
    op.add_column("segments", sa.Column("sweep_due_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("segments", sa.Column("swept_through", sa.Text(), nullable=True), schema=S)
    # Before this revision a filter read the clock only through an event condition's window; the sweep
    # parses each one it claims and lets go of any that does not read the clock after all.
    op.execute(f"UPDATE {S}.segments SET sweep_due_at = now() WHERE filter::text LIKE '%\"within_days\"%'")
    op.create_index("segments_sweep_due", "segments", ["sweep_due_at"], schema=S,
                    postgresql_where=sa.text("sweep_due_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("segments_sweep_due", table_name="segments", schema=S)
    op.drop_column("segments", "swept_through", schema=S)
    op.drop_column("segments", "sweep_due_at", schema=S)
