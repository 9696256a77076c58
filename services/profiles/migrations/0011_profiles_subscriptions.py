"""profiles: subscription states, subscription groups, consent records, an outbox, and `segment_subscriptions`

Revision ID: profiles_0011
Revises: profiles_0010

A profile's state per channel (email, push, sms) or subscription group is one row keyed by the channel's
name or the group's id. Consent records are a history (the newest per purpose is in force). The outbox
holds the `$subscription_changed` / `$consent_changed` events a change announces, written in the same
transaction. `segment_subscriptions` is the read-only view other services read states through (a contract:
columns are only ever added).
"""

import sqlalchemy as sa
from alembic import op

from kernel.outbox import outbox_table

revision = "profiles_0011"
down_revision = "profiles_0010"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        schema=S,
    )
    op.create_index("subscriptions_key", "subscriptions", ["workspace_id", "key", "state"], schema=S)
    op.create_table(
        "subscription_groups",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("group_id", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.String(2048)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True)),
        schema=S,
    )
    op.create_index(
        "subscription_groups_listing", "subscription_groups", ["workspace_id", "created_at", "group_id"], schema=S
    )
    op.create_table(
        "consents",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("consent_id", sa.String(64), nullable=False, unique=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("workspace_id", "profile_id", "purpose", "status", "policy_version", "source", "at",
                            name="consents_record"),
        schema=S,
    )
    op.create_index("consents_profile", "consents", ["workspace_id", "profile_id", "purpose", "at"], schema=S)
    outbox_table(S, sa.MetaData()).create(op.get_bind())
    # channel: the channel's name, or the group's channel; group_id: null for a channel's own state.
    op.execute(
        f"CREATE VIEW {S}.segment_subscriptions AS "
        f"SELECT s.workspace_id, s.profile_id, COALESCE(g.channel, s.key) AS channel, "
        f"CASE WHEN s.key IN ('email', 'push', 'sms') THEN NULL ELSE s.key END AS group_id, "
        f"s.state, s.at, s.source "
        f"FROM {S}.subscriptions s LEFT JOIN {S}.subscription_groups g "
        f"ON g.workspace_id = s.workspace_id AND g.group_id = s.key"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {S}.segment_subscriptions")
    op.drop_table("outbox", schema=S)
    op.drop_table("consents", schema=S)
    op.drop_table("subscription_groups", schema=S)
    op.drop_table("subscriptions", schema=S)
