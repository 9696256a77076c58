"""profiles: erasure jobs and tombstones (the user's rights)

Revision ID: profiles_0013
Revises: profiles_0012

`erasures` tracks each erasure per service; `tombstones` keeps a hash of every user id, alias and
anonymous id of an erased person, which the event path looks up once per batch (its primary key).
"""

from alembic import op

revision = "profiles_0013"
down_revision = "profiles_0012"
branch_labels = None
depends_on = None
S = "profiles"


def upgrade() -> None:
    op.execute(
        f"CREATE TABLE {S}.erasures ("
        "workspace_id varchar(64) NOT NULL, erasure_id varchar(64) NOT NULL, profile_ids varchar(64)[] NOT NULL, "
        "progress jsonb NOT NULL DEFAULT '{}', requested_at timestamptz NOT NULL DEFAULT now(), done_at timestamptz, "
        "PRIMARY KEY (workspace_id, erasure_id))"
    )
    op.execute(
        f"CREATE TABLE {S}.tombstones ("
        "workspace_id varchar(64) NOT NULL, digest varchar(64) NOT NULL, erased_at timestamptz NOT NULL, "
        "erasure_id varchar(64) NOT NULL, PRIMARY KEY (workspace_id, digest))"
    )


def downgrade() -> None:
    op.execute(f"DROP TABLE IF EXISTS {S}.tombstones")
    op.execute(f"DROP TABLE IF EXISTS {S}.erasures")
