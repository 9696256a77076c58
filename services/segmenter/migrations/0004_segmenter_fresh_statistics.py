"""segmenter: memberships are analyzed after 2 % of new rows, not 10 % (see profiles_0003 for why)

Revision ID: segmenter_0004
Revises: segmenter_0003
"""

from alembic import op

revision = "segmenter_0004"
down_revision = "segmenter_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE segmenter.memberships SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 10000)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE segmenter.memberships RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)")
