"""State the nodes of a cluster share: counters, greylist, connect verdicts, keys (issue 18).

Revision ID: 0004

`shared_counters`: one row per (scope, key, window bucket, node) with that node's own count, so a
write is idempotent (a node re-sends its absolute count after an outage) and the total is a sum.
`greylist`: one row per triplet; first_seen merges by min, passed_until by max.
`connect_verdicts`: the connect-stage DNSBL/rDNS verdict per client address, until its TTL.
`cluster_keys`: SRS secrets, DKIM and ARC signing keys with their rotation dates.
Spelled out here, not read from the code, so this revision stays what it was when it shipped.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shared_counters",
        sa.Column("scope", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("node", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_shared_counters_updated", "shared_counters", ["updated_at"])
    op.create_table(
        "greylist",
        sa.Column("key", sa.String(700), primary_key=True),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("passed_until", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_greylist_updated", "greylist", ["updated_at"])
    op.create_table(
        "connect_verdicts",
        sa.Column("ip", sa.String(64), primary_key=True),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_connect_verdicts_updated", "connect_verdicts", ["updated_at"])
    op.create_table(
        "cluster_keys",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("serial", sa.Integer, nullable=False),
        sa.Column("selector", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("material", sa.LargeBinary, nullable=False),
        sa.Column("public", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("retired_at", sa.Float, nullable=True),
        sa.Column("valid_until", sa.Float, nullable=True),
    )
    op.create_index("ix_cluster_keys_kind_name", "cluster_keys", ["kind", "name"])


def downgrade() -> None:
    op.drop_index("ix_cluster_keys_kind_name", table_name="cluster_keys")
    op.drop_table("cluster_keys")
    op.drop_index("ix_connect_verdicts_updated", table_name="connect_verdicts")
    op.drop_table("connect_verdicts")
    op.drop_index("ix_greylist_updated", table_name="greylist")
    op.drop_table("greylist")
    op.drop_index("ix_shared_counters_updated", table_name="shared_counters")
    op.drop_table("shared_counters")
