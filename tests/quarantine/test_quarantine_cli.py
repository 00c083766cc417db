"""Issue 4 must-show 3 (last part): a DMARC p=reject failure is quarantined by a running mailbox
node, is visible through `mxgate quarantine` in another process, and `release` delivers it into
the Maildir and records the Release in the message trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import rig
from rig import maildir_messages

EF_POLICY = rig.GUIDE_POLICY + "ef_skip_last_ip = true\n"
SPOOF = (b"Received: from spoofer.example (spoofer.example [198.51.100.9])\r\n\tby gw.contoso.test; "
         b"Fri, 27 Nov 2026 12:00:01 +0000\r\n") + rig.simple_message(subject="urgent wire", sender="ceo@fabrikam.test")


def mxgate(home, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MXGATE_HOME=str(home.root))
    return subprocess.run([sys.executable, "-m", "mxgate", *args], capture_output=True, text=True, env=env, timeout=60)


def test_quarantined_message_is_listed_previewed_and_released_by_the_cli(node_factory, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.7 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
    n = node_factory(EF_POLICY, dns={"servers": [dns.address], "timeout": 0.5})
    r = rig.send_message("127.0.0.1", n.port(), source=rig.GATEWAY, sender="ceo@fabrikam.test",
                         rcpts=["alice@contoso.test"], data=SPOOF)
    assert r["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []

    listed = mxgate(n.home, "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [item] = json.loads(listed.stdout)
    assert (item["reason"], item["recipients"], item["subject"]) == ("dmarc-policy", ["alice@contoso.test"], "urgent wire")
    assert item["detail"]["original_ip"] == "198.51.100.9"

    shown = mxgate(n.home, "quarantine", "show", item["id"])
    assert shown.returncode == 0, shown.stderr
    assert "dmarc=fail" in shown.stdout and "DMARC reject for fabrikam.test" in shown.stdout

    released = mxgate(n.home, "quarantine", "release", item["id"])
    assert released.returncode == 0 and "delivered 1 copy" in released.stdout, released.stderr
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    assert stored.startswith(b"Received: from client.test ([127.0.0.10])") and b"urgent wire" in stored

    n.trace.flush()
    [row] = n.trace.search(recipient="alice@contoso.test")
    events = [e["event"] for e in n.trace.show(row["id"])["events"]]
    assert row["status"] == "Delivered" and events == ["Receive", "Quarantine", "Release"]

    again = mxgate(n.home, "quarantine", "release", item["id"])
    assert again.returncode == 1 and "already released" in again.stderr
    assert mxgate(n.home, "quarantine", "list", "--json").stdout.strip() == "[]"
    deleted = mxgate(n.home, "quarantine", "delete", item["id"])
    assert deleted.returncode == 0
    assert mxgate(n.home, "quarantine", "show", item["id"]).returncode == 1
