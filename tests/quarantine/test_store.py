"""QuarantineStore over the real store (SQLite in a temporary home): add, list, preview,
release into Maildir with the trace event, delete, and the refusals."""

from __future__ import annotations

import pytest

from mxgate.errors import NotFoundError
from mxgate.quarantine.store import QuarantineStateError, QuarantineStore
from mxgate.store.db import open_engine
from mxgate.trace.store import TraceRecord, TraceStore
from rig import maildir_messages

MESSAGE = (b"Received: from gw ([127.0.0.10]) by mx; Fri, 27 Nov 2026 12:00:00 +0000\r\n"
           b"Authentication-Results: mx.contoso.test; spf=fail; dmarc=fail action=reject\r\n"
           b"From: ceo@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: wire \x1b[31mtransfer\r\n"
           b"\r\nPlease pay \x00 today.\r\n" + b"x" * 5000 + b"\r\n")


@pytest.fixture
def stores(home):
    engine = open_engine(home.database_url)
    return QuarantineStore(engine, node="n1"), TraceStore(engine)


def _add(store, recipients=("Alice@contoso.test",), trace_id="t1") -> str:
    return store.add(trace_id=trace_id, sender="x@fabrikam.test", recipients=list(recipients), subject="wire transfer",
                     reason="dmarc-policy", body=MESSAGE, detail={"action": {"detail": "DMARC reject"}})


def test_add_list_get(stores):
    q, _ = stores
    first, second = _add(q, trace_id="t1"), _add(q, trace_id="t2")
    listed = q.list()
    assert [i["id"] for i in listed] == [second, first]  # newest first
    assert listed[0]["recipients"] == ["alice@contoso.test"] and "body" not in listed[0]
    item = q.get(first)
    assert (item["body"], item["reason"], item["node"], item["detail"]["action"]["detail"]) == (
        MESSAGE, "dmarc-policy", "n1", "DMARC reject")
    with pytest.raises(NotFoundError):
        q.get("nope")


def test_preview_shows_key_headers_and_safe_text(stores):
    q, _ = stores
    p = q.preview(_add(q), body_chars=100)
    names = [h[0] for h in p["headers"]]
    assert names == ["Authentication-Results", "From", "To", "Subject"]  # Received is not a judging header
    assert dict(p["headers"])["Subject"] == "wire \ufffd[31mtransfer"  # no terminal escapes
    assert p["body_preview"].startswith("Please pay \ufffd today.") and len(p["body_preview"]) == 100
    assert p["size"] == len(MESSAGE)


def test_release_delivers_marks_and_traces(stores, home):
    q, trace = stores
    trace.record(TraceRecord(trace_id="t1", status="Quarantined", recipient="alice@contoso.test"))
    qid = _add(q, recipients=["alice@contoso.test", "bob@contoso.test"])
    paths = q.release(qid, home.maildir, actor="cli:admin", trace=trace)
    assert len(paths) == 2 and all(p.parent.name == "new" for p in paths)
    assert maildir_messages(home, "alice@contoso.test") == [MESSAGE]
    assert maildir_messages(home, "bob@contoso.test") == [MESSAGE]
    assert q.list() == [] and q.list(include_released=True)[0]["released_by"] == "cli:admin"
    [row] = trace.search(trace_id="t1")
    assert row["status"] == "Delivered"
    assert [e["event"] for e in trace.show(row["id"])["events"]] == ["Release"]
    with pytest.raises(QuarantineStateError, match="already released by cli:admin"):
        q.release(qid, home.maildir, actor="cli:other")
    assert len(maildir_messages(home, "alice@contoso.test")) == 1  # no second copy


def test_release_without_local_recipients_is_refused(stores, home):
    q, _ = stores
    qid = _add(q, recipients=())
    with pytest.raises(QuarantineStateError, match="no local recipient"):
        q.release(qid, home.maildir, actor="cli:admin")
    assert q.list()[0]["released_at"] is None


def test_failed_delivery_leaves_it_quarantined(stores, home):
    q, _ = stores
    qid = _add(q)
    blocked = home.root / "not-a-directory"
    blocked.write_text("a file where the Maildir root should be")
    with pytest.raises(QuarantineStateError, match="release of .* failed for alice@contoso.test"):
        q.release(qid, blocked, actor="cli:admin")
    assert q.list()[0]["id"] == qid and q.list()[0]["released_at"] is None


def test_delete_drops_the_body(stores):
    q, _ = stores
    qid = _add(q)
    q.delete(qid)
    assert q.list(include_released=True) == []
    with pytest.raises(NotFoundError):
        q.get(qid)
    with pytest.raises(NotFoundError):
        q.delete(qid)
