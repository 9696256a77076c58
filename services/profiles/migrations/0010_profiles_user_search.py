"""profiles: users are listed newest first and searched by user id, alias, anonymous id or email

Revision ID: profiles_0010
Revises: profiles_0009

A page of users is read newest first by (created_at, profile_id) within a workspace. A search is a
prefix of an identity's value (user ids, aliases, anonymous ids) or of the `email` trait in lower
case, each compared byte-wise (text_pattern_ops: the same in any collation), so both are index range
scans. On a large existing table, create these indexes CONCURRENTLY by hand before upgrading; the
migration then finds them (IF NOT EXISTS).
"""

from alembic import op

revision = "profiles_0010"
down_revision = "profiles_0009"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.execute(f"CREATE INDEX IF NOT EXISTS profiles_listing ON {S}.profiles (workspace_id, created_at, profile_id)")
    op.execute(
        f"CREATE INDEX IF NOT EXISTS profiles_email_search ON {S}.profiles "
        "(workspace_id, lower(traits ->> 'email') text_pattern_ops)"
    )
    op.execute(f"CREATE INDEX IF NOT EXISTS identities_search ON {S}.identities (workspace_id, value text_pattern_ops)")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {S}.identities_search")
    op.execute(f"DROP INDEX IF EXISTS {S}.profiles_email_search")
    op.execute(f"DROP INDEX IF EXISTS {S}.profiles_listing")
