"""segmenter: publish `segment_members`, the stored members of every segment, for other services' SQL

Revision ID: segmenter_0007
Revises: segmenter_0006

A read-only view (a contract: columns may be added, never renamed or removed; services/segmenter/views.py).
The scheduler reads it to decide a scheduled campaign's audience in one statement. It holds what
`memberships` holds: a computing segment's members stored so far, an archived segment's none.
"""

from alembic import op

revision = "segmenter_0007"
down_revision = "segmenter_0006"
branch_labels = None
depends_on = None
S = "segmenter"


def upgrade() -> None:
    op.execute(
        f"CREATE VIEW {S}.segment_members AS SELECT workspace_id, segment_id, profile_id, user_id, entered_at "
        f"FROM {S}.memberships"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {S}.segment_members")
