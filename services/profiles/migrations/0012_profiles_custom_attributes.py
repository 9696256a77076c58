"""profiles: operations on custom attributes (trait_ops) and the per-workspace attribute catalogue

Revision ID: profiles_0012
Revises: profiles_0011

`trait_ops` keeps, per trait that has operations ({"inc"}, {"add"}, {"remove"}) since its last set,
the set's value and those operations (services/profiles/attributes/domain.py), so a late event lands
where it belongs. A constant default: added without rewriting the table. `attribute_catalogue` lists
each custom attribute a workspace's users have, with its inferred type, when it was first and last
seen and a few example values (upserted on first sight, on a type change and on a bounded refresh,
never once per event).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "profiles_0012"
down_revision = "profiles_0011"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.add_column("profiles", sa.Column("trait_ops", JSONB, nullable=False, server_default="{}"), schema=S)
    op.create_table(
        "attribute_catalogue",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(512), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("examples", JSONB, nullable=False, server_default="[]"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("attribute_catalogue", schema=S)
    op.drop_column("profiles", "trait_ops", schema=S)
