"""gateway: API key scopes and when each key was last used

Revision ID: gateway_0003
Revises: gateway_0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "gateway_0003"
down_revision = "gateway_0002"
branch_labels = None
depends_on = None
S = "gateway"


def upgrade() -> None:
    # Keys made before scopes could do everything: they keep doing so.
    op.add_column(
        "api_keys", sa.Column("scopes", JSONB, nullable=False, server_default=sa.text("""'["admin"]'::jsonb""")), schema=S
    )
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True)), schema=S)


def downgrade() -> None:
    op.drop_column("api_keys", "last_used_at", schema=S)
    op.drop_column("api_keys", "scopes", schema=S)
