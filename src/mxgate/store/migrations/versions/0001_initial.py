"""Initial schema: policy versions, message trace, quarantine, nodes, credentials, admin.

Revision ID: 0001
"""

from alembic import op

from mxgate.store.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The first revision creates the tables exactly as schema.py defines them at this revision.
# Later revisions must spell out their own changes (op.add_column ...), never re-read schema.py.
TABLES = ["policy_versions", "trace_messages", "trace_events", "quarantine", "nodes", "credentials", "admin_users", "api_tokens"]


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])


def downgrade() -> None:
    bind = op.get_bind()
    metadata.drop_all(bind, tables=[metadata.tables[name] for name in TABLES])
