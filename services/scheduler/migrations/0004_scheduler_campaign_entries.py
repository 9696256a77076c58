"""scheduler: every kind of entry — scheduled, segment entry, API-triggered — and re-eligibility (issue 15)

Revision ID: scheduler_0004
Revises: scheduler_0003

A campaign's `trigger` becomes optional (a campaign enters users by a trigger, a `schedule`, a
`segment_entry`, or only when called), and it gains `reeligible_after_days` and `max_sends_per_user`.
`occurrences` are a scheduled campaign's durable timers: one row per occurrence, claimed when due.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "scheduler_0004"
down_revision = "scheduler_0003"
branch_labels = None
depends_on = None
S = "scheduler"


def upgrade() -> None:
    op.alter_column("campaigns", "trigger", nullable=True, schema=S)
    op.add_column("campaigns", sa.Column("schedule", JSONB), schema=S)
    op.add_column("campaigns", sa.Column("segment_entry", JSONB), schema=S)
    op.add_column("campaigns", sa.Column("reeligible_after_days", sa.Integer), schema=S)
    op.add_column("campaigns", sa.Column("max_sends_per_user", sa.Integer), schema=S)
    op.create_table(
        "occurrences",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("wall_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("entered", sa.Integer),
        sa.Column("suppressed", sa.Integer),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        schema=S,
    )
    op.create_index("occurrences_due", "occurrences", ["due_at"], schema=S, postgresql_where=sa.text("status = 'pending'"))
    op.create_index("occurrences_campaign", "occurrences", ["campaign_id", "status"], schema=S)


def downgrade() -> None:
    op.drop_table("occurrences", schema=S)
    for column in ("max_sends_per_user", "reeligible_after_days", "segment_entry", "schedule"):
        op.drop_column("campaigns", column, schema=S)
    op.execute(f"DELETE FROM {S}.campaigns WHERE trigger IS NULL")
    op.alter_column("campaigns", "trigger", nullable=False, schema=S)
