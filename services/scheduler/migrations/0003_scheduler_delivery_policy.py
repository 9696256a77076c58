"""scheduler: one ordered delivery policy at release (issue 15)

Revision ID: scheduler_0003
Revises: scheduler_0002

A send gains `variant` (the experiment arm: a variant's name, "control", "global_control") and `rule`
(the policy rule that stopped or held it); status "suppressed" is text (no change). A campaign gains
`transactional`, `delivery` (window, rate), `variants`, `control_percent` and `locales`. New tables:
the workspace's delivery rules, the frequency-cap ledger (one row per send that went out and counts
toward caps) and per-campaign minute slots for rate limits.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "scheduler_0003"
down_revision = "scheduler_0002"
branch_labels = None
depends_on = None
S = "scheduler"


def upgrade() -> None:
    op.add_column("sends", sa.Column("variant", sa.String(64)), schema=S)
    op.add_column("sends", sa.Column("rule", sa.String(32)), schema=S)
    op.add_column("campaigns", sa.Column("transactional", sa.Boolean, nullable=False, server_default=sa.false()), schema=S)
    op.add_column("campaigns", sa.Column("delivery", JSONB), schema=S)
    op.add_column("campaigns", sa.Column("variants", JSONB), schema=S)
    op.add_column("campaigns", sa.Column("control_percent", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.add_column("campaigns", sa.Column("locales", JSONB), schema=S)
    op.create_table(
        "delivery_settings",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("frequency_caps", JSONB, nullable=False),
        sa.Column("global_control_percent", sa.Integer, nullable=False),
        sa.Column("default_time_zone", sa.String(64), nullable=False),
        sa.Column("quiet_hours_attribute", sa.String(200)),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=S,
    )
    op.create_table(
        "cap_ledger",
        sa.Column("send_id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index("cap_ledger_profile", "cap_ledger", ["workspace_id", "profile_id", "sent_at"], schema=S)
    op.create_table(
        "rate_slots",
        sa.Column("campaign_id", sa.String(64), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("rate_slots", schema=S)
    op.drop_table("cap_ledger", schema=S)
    op.drop_table("delivery_settings", schema=S)
    for column in ("locales", "control_percent", "variants", "delivery", "transactional"):
        op.drop_column("campaigns", column, schema=S)
    op.drop_column("sends", "rule", schema=S)
    op.drop_column("sends", "variant", schema=S)
