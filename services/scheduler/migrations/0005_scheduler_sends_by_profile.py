"""scheduler: a person's sends are found by profile (erasure and export)

Revision ID: scheduler_0005
Revises: scheduler_0004

Erasing or exporting a person reads their sends across every campaign; `sends_profile` leads with the
campaign. On a large table, create it CONCURRENTLY by hand before upgrading; the migration then finds it.
"""

from alembic import op

revision = "scheduler_0005"
down_revision = "scheduler_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS sends_person ON scheduler.sends (workspace_id, profile_id)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS scheduler.sends_person")
