"""Trace ids (trace/records.py new_trace_id): random, unique, and never shared with a forked worker."""

from __future__ import annotations

import os
import re

from mxgate.trace.records import new_trace_id


def test_trace_ids_are_16_hex_digits_and_do_not_repeat():
    ids = [new_trace_id() for _ in range(5000)]  # crosses several 512-id refills
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_worker_does_not_hand_out_its_parents_buffered_ids():
    new_trace_id()  # the parent now holds buffered random bytes
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without running pytest's cleanup
        try:
            os.write(write_end, " ".join(new_trace_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_ids = set(os.read(read_end, 4096).decode().split())
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_ids = {new_trace_id() for _ in range(10)}
    assert len(child_ids) == 10
    assert not child_ids & parent_ids


def test_a_batch_gives_each_row_its_own_events_whatever_order_the_database_returns_ids(tmp_path):
    """The writer inserts a batch in one multi-row INSERT..RETURNING and matches the ids back by
    (trace id, recipient): rows of one message, repeated recipients and refusals keep their events."""
    from mxgate.store.db import migrate, open_engine
    from mxgate.trace.store import TraceRecord, TraceStore

    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    store = TraceStore(engine, node="n1")
    batch = []
    for m in range(30):
        for r in ("a@contoso.test", "b@contoso.test", "a@contoso.test"):  # a repeated recipient too
            batch.append(TraceRecord(trace_id=f"m{m:02d}", status="Delivered", recipient=r,
                                     events=[(1.0, "Receive", f"m{m:02d} {r}"), (2.0, "Deliver", f"m{m:02d} {r} done")]))
    store._write(batch)
    rows = store.search(limit=500)
    assert len(rows) == 90
    for row in rows:
        shown = store.show(row["id"])
        assert [e["detail"] for e in shown["events"]] == [f"{row['trace_id']} {row['recipient']}",
                                                           f"{row['trace_id']} {row['recipient']} done"]
    engine.dispose()
