"""mxgate.store"""

# The widest integer key either database stores (SQLite's INTEGER, PostgreSQL's BIGINT). An id
# outside names no row, and SQLite cannot even bind it (OverflowError), so a lookup by a caller's
# id checks this first and answers "does not exist". Here rather than in schema.py: the policy
# CLI must not import SQLAlchemy (issue 19).
MAX_ROW_ID = 2**63 - 1


def row_id_in_range(n: int) -> bool:
    return -MAX_ROW_ID - 1 <= n <= MAX_ROW_ID
