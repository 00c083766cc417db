"""Issue 10, must-show 5: a message quarantined on mailbox node A is listed, previewed and released
from node B. Both mailbox nodes mount one Maildir root (here a symlink stands in for the shared
mount, docs/deployment.md), the quarantine row and its body live in PostgreSQL, and the release
lands in the recipient's mailbox with the `Release` event in the shared trace. A node that holds
no mailboxes refuses to release and names the nodes that can."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import insert

import rig
from clusterkit import mxgate
from rig import maildir_messages
from mxgate.quarantine.store import QuarantineStateError, QuarantineStore
from mxgate.store.schema import nodes

EF_POLICY = rig.GUIDE_POLICY + "ef_skip_last_ip = true\n"
SPOOF = (b"Received: from spoofer.example (spoofer.example [198.51.100.9])\r\n\tby gw.contoso.test; "
         b"Fri, 27 Nov 2026 12:00:01 +0000\r\n") + rig.simple_message(subject="urgent wire", sender="ceo@fabrikam.test")


def test_quarantined_on_a_released_from_b(node_factory, pg_url, monkeypatch, dns, tmp_path):
    monkeypatch.setenv("MXGATE_STORE_URL", pg_url)
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.7 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
    dns_settings = {"servers": [dns.address], "timeout": 0.5}
    a = node_factory(EF_POLICY, node={"name": "mbx-a"}, dns=dns_settings)
    b_root = tmp_path / "mbx-b"
    b_root.mkdir()
    (b_root / "maildir").symlink_to(a.home.maildir)  # the shared Maildir mount
    b = node_factory(None, home_dir=b_root, node={"name": "mbx-b"}, dns=dns_settings)

    r = rig.send_message("127.0.0.1", a.port(), source=rig.GATEWAY, sender="ceo@fabrikam.test",
                         rcpts=["alice@contoso.test"], data=SPOOF)
    assert r["end"][0] == 250 and maildir_messages(a.home, "alice@contoso.test") == []

    listed = mxgate("quarantine", "list", "--json", home=b.home.root)  # node B's CLI
    assert listed.returncode == 0, listed.stderr
    [item] = json.loads(listed.stdout)
    assert (item["node"], item["reason"], item["subject"]) == ("mbx-a", "dmarc-policy", "urgent wire")
    shown = mxgate("quarantine", "show", item["id"], "--json", home=b.home.root)
    assert "dmarc=fail" in json.dumps(json.loads(shown.stdout)["headers"])

    # A node without the mailbox role has no Maildir to release into: refused, nothing marked.
    with a.node.engine.begin() as conn:
        conn.execute(insert(nodes).values(name="gw-only", roles='["gateway"]', listeners="{}", policy_version=1,
                                          started_at=time.time(), heartbeat=time.time(), pid=1))
    with pytest.raises(QuarantineStateError, match=r"gw-only holds no mailboxes; .*\(mbx-a, mbx-b\)"):
        QuarantineStore(a.node.engine, node="gw-only").release(item["id"], tmp_path / "nowhere", actor="admin")

    released = mxgate("quarantine", "release", item["id"], home=b.home.root)
    assert released.returncode == 0 and "delivered 1 copy" in released.stdout, released.stderr
    [stored] = maildir_messages(a.home, "alice@contoso.test")  # in A's view of the mailbox
    assert b"urgent wire" in stored and stored.startswith(b"Received: from client.test ([127.0.0.10])")
    a.trace.flush()
    [row] = a.trace.search(recipient="alice@contoso.test")
    assert row["status"] == "Delivered" and row["node"] == "mbx-a"
    assert [e["event"] for e in a.trace.show(row["id"])["events"]] == ["Receive", "Quarantine", "Release"]
    again = mxgate("quarantine", "release", item["id"], home=a.home.root)  # and A cannot release it twice
    assert again.returncode == 1 and "already released" in again.stderr
