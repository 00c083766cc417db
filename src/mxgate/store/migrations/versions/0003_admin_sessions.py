"""Admin centre sessions in the shared store, so ending one ends it on every node.

Revision ID: 0003

One row per logged-in browser: the signed cookie names `sid`; logout, a password change and
removing the user delete the rows (admin/auth.py). Spelled out here, not read from the code.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_admin_sessions_username", "admin_sessions", ["username"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_username", table_name="admin_sessions")
    op.drop_table("admin_sessions")
