"""scheduler: campaign results, experiments and send-time optimization (issue 15)

Revision ID: scheduler_0006
Revises: scheduler_0005

A campaign gains `conversion` (its goal: an event with conditions, within hours) and `experiment` (pick
a winning variant after some hours). New tables: `engagement` (one row per send and outcome, from
Herald's `$message_*` events), `conversions` (one row per campaign and converted user), `experiments`
(the winner's durable timer and decision) and `workspace_hours` (each workspace's hour-of-week
engagement, cached for send-time optimization).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "scheduler_0006"
down_revision = "scheduler_0005"
branch_labels = None
depends_on = None
S = "scheduler"


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("conversion", JSONB), schema=S)
    op.add_column("campaigns", sa.Column("experiment", JSONB), schema=S)
    op.create_table(
        "engagement",
        sa.Column("send_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("variant", sa.String(64)),
        sa.Column("channel", sa.String(16)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index("engagement_campaign", "engagement", ["workspace_id", "campaign_id"], schema=S)
    op.create_table(
        "conversions",
        sa.Column("campaign_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(512)),
        sa.Column("variant", sa.String(64)),
        sa.Column("send_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index("conversions_campaign", "conversions", ["workspace_id", "campaign_id"], schema=S)
    op.create_table(
        "experiments",
        sa.Column("campaign_id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("winner", sa.String(64)),
        sa.Column("p_value", sa.Float),
        sa.Column("reason", sa.String(500)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        schema=S,
    )
    op.create_index("experiments_due", "experiments", ["due_at"], postgresql_where=sa.text("status = 'pending'"), schema=S)
    op.create_table(
        "workspace_hours",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("hours", ARRAY(sa.Integer), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )


def downgrade() -> None:
    for table in ("workspace_hours", "experiments", "conversions", "engagement"):
        op.drop_table(table, schema=S)
    op.drop_column("campaigns", "experiment", schema=S)
    op.drop_column("campaigns", "conversion", schema=S)
