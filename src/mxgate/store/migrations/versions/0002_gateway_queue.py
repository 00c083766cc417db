"""The gateway queue in the database (`[gateway] queue = "database"`), shared by gateway nodes.

Revision ID: 0002

One row per queued message with its bytes; `lease_owner`/`lease_until` say which node is
relaying it and until when (queue/dbspool.py). Spelled out here, not read from the code, so
this revision stays what it was when it shipped.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_queue",
        sa.Column("queue_id", sa.String(20), primary_key=True),
        sa.Column("queue", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("arrival", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
    )
    op.create_index("ix_gateway_queue_due", "gateway_queue", ["queue", "next_attempt"])


def downgrade() -> None:
    op.drop_index("ix_gateway_queue_due", table_name="gateway_queue")
    op.drop_table("gateway_queue")
