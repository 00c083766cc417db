"""The database tables, as SQLAlchemy Core metadata (one definition for SQLite and PostgreSQL).

Owns: table and column names. Migrations in migrations/versions create exactly these tables;
a test compares the two so they cannot drift.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# Every policy change is a new row; the highest version is in force (mail-flow.md §3.8).
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("summary", Text, nullable=False),
    Column("document", Text, nullable=False),
)

# One row per message per recipient, and one per refused attempt (mail-flow.md §6).
trace_messages = Table(
    "trace_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trace_id", String(40), nullable=False),
    Column("node", String(64), nullable=False, default=""),
    Column("role", String(16), nullable=False, default=""),
    Column("direction", String(16), nullable=False, default="inbound"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("sender", String(320), nullable=False, default=""),
    Column("recipient", String(320), nullable=False, default=""),
    Column("subject", String(256), nullable=False, default=""),
    Column("status", String(20), nullable=False),
    Column("message_id", String(998), nullable=False, default=""),
    Column("size", Integer, nullable=False, default=0),
    Column("from_ip", String(64), nullable=False, default=""),
    Column("original_ip", String(64), nullable=False, default=""),
    Column("connector", String(64), nullable=False, default=""),
    Column("policy_version", Integer, nullable=False, default=0),
    Column("reason", String(64), nullable=False, default=""),
    Column("detail", Text, nullable=False, default="{}"),
)
Index("ix_trace_created", trace_messages.c.created_at)
Index("ix_trace_trace_id", trace_messages.c.trace_id)
Index("ix_trace_sender", trace_messages.c.sender)
Index("ix_trace_recipient", trace_messages.c.recipient)
Index("ix_trace_status", trace_messages.c.status)
Index("ix_trace_message_id", trace_messages.c.message_id)
Index("ix_trace_from_ip", trace_messages.c.from_ip)

trace_events = Table(
    "trace_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trace_row", Integer, ForeignKey("trace_messages.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("event", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)
Index("ix_trace_events_row", trace_events.c.trace_row)

# Quarantined messages keep their bytes here so every node can preview and release them.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("trace_id", String(40), nullable=False, default=""),
    Column("node", String(64), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("sender", String(320), nullable=False, default=""),
    Column("recipients", Text, nullable=False),
    Column("subject", String(256), nullable=False, default=""),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("body", LargeBinary, nullable=False),
    Column("released_at", Float, nullable=True),
    Column("released_by", String(128), nullable=True),
    Column("deleted", Boolean, nullable=False, default=False),
)
Index("ix_quarantine_created", quarantine.c.created_at)

# Running nodes report here: roles, listeners, the policy version they enforce.
nodes = Table(
    "nodes",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("roles", Text, nullable=False, default="[]"),
    Column("listeners", Text, nullable=False, default="{}"),
    Column("policy_version", Integer, nullable=False, default=0),
    Column("started_at", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
    Column("pid", Integer, nullable=False, default=0),
)

# Submission credentials (per mailbox and per application); only argon2 hashes are stored.
credentials = Table(
    "credentials",
    metadata,
    Column("username", String(320), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("address", String(320), nullable=False),
    Column("secret_hash", String(256), nullable=False),
    Column("description", String(256), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

admin_users = Table(
    "admin_users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_used", Float, nullable=True),
)

# Admin centre sessions: the cookie carries only a signed session id; the row decides whether it
# is still valid, so logout, a password change or a removed user end it on every node and after a
# restart (issue 17).
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# --- shared by the nodes of a cluster (issue 18, migration 0004) -----------------------------
# Each node's own count per (scope, key, window bucket): writes are idempotent, the total is a sum
# (store/cluster.py).
shared_counters = Table(
    "shared_counters",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("node", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_shared_counters_updated", shared_counters.c.updated_at)

greylist = Table(
    "greylist",
    metadata,
    Column("key", String(700), primary_key=True),
    Column("first_seen", Float, nullable=False),
    Column("passed_until", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_greylist_updated", greylist.c.updated_at)

connect_verdicts = Table(
    "connect_verdicts",
    metadata,
    Column("ip", String(64), primary_key=True),
    Column("verdict", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_connect_verdicts_updated", connect_verdicts.c.updated_at)

# SRS secrets, DKIM and ARC keys (store/keys.py): per (kind, name) one "active" key signs,
# "pending" ones are published but do not sign yet, "retired" ones still verify until valid_until.
cluster_keys = Table(
    "cluster_keys",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    Column("serial", Integer, nullable=False),
    Column("selector", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("material", LargeBinary, nullable=False),
    Column("public", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("retired_at", Float, nullable=True),
    Column("valid_until", Float, nullable=True),
)
Index("ix_cluster_keys_kind_name", cluster_keys.c.kind, cluster_keys.c.name)
