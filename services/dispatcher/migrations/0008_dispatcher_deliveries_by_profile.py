"""dispatcher: a person's deliveries are found by profile (erasure and export)

Revision ID: dispatcher_0008
Revises: dispatcher_0007

On a large table, create it CONCURRENTLY by hand before upgrading; the migration then finds it.
"""

from alembic import op

revision = "dispatcher_0008"
down_revision = "dispatcher_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS deliveries_person ON dispatcher.deliveries (workspace_id, profile_id)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS dispatcher.deliveries_person")
