"""Issue 22, points 3 and 5 (first part), end to end on loopback through the gateway:

- a distribution list's external member gets an SRS-rewritten envelope sender in the list's
  domain and a `Delivered-To:` naming the list, as a mailbox forward does (SPF holds there);
- a forward's trace row carries the policy version, the connecting and original addresses and
  the connector of the message it came from;
- a message released from quarantine follows the mailbox's forwarding and the list's expansion
  as a delivered message would (the admin centre's release on the running node; the CLI's when
  no node runs, its external copies waiting in the outbound queue for the next start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from test_mail_flow import sink_messages_for, via_gateway

import rig
from rig import GATEWAY, maildir_messages, send_message, wait_until

from mxgate.admin import auth


def with_external_list_member(policy: str) -> str:
    return policy.replace('members = ["bob@contoso.test", "dave@contoso.test"]',
                          'members = ["bob@contoso.test", "dave@contoso.test", "erin@external.test"]')


def with_enhanced_filtering(policy: str) -> str:
    # The guide's connector skips the gateway hop, so DMARC is judged on the Internet sender.
    return policy.replace("restrict_domains_to_ip_addresses = true\nrequire_tls = true",
                          "restrict_domains_to_ip_addresses = true\nrequire_tls = true\nef_skip_last_ip = true", 1)


def test_list_expansion_to_an_external_member_is_srs_rewritten(make_org):
    org = make_org(edit=with_external_list_member)
    assert via_gateway(org, rcpts=("team@contoso.test",))["end"][0] == 250
    assert wait_until(lambda: sink_messages_for(org, "erin@external.test"), 20)
    out = sink_messages_for(org, "erin@external.test")[0]
    assert out["sender"].startswith("SRS0=") and out["sender"].endswith("@contoso.test"), out["sender"]
    assert "=fabrikam.test=organizer@" in out["sender"]
    assert b"Delivered-To: team@contoso.test" in out["raw"]
    assert len(maildir_messages(org.home, "dave@contoso.test")) == 1  # the internal members as before


def test_a_forwards_trace_row_carries_the_provenance_of_its_message(org):
    assert via_gateway(org)["end"][0] == 250
    assert wait_until(lambda: sink_messages_for(org, "carol@external.test"), 20)
    trace = org.mailbox.trace
    trace.flush()
    [parent] = trace.search(recipient="alice@contoso.test")
    for copy in ("carol@external.test", "bob@contoso.test"):
        [row] = trace.search(recipient=copy)
        assert row["trace_id"] == parent["trace_id"]
        assert row["policy_version"] == parent["policy_version"] == org.mailbox.node.watcher.current.version > 0
        assert (row["from_ip"], row["connector"]) == (GATEWAY, "Third-party filter service"), row
        assert row["original_ip"] == parent["original_ip"]


def test_a_submitted_messages_forward_carries_the_submitters_address_and_policy_version(org):
    from test_mail_flow import cli_run
    from test_submission import submit

    assert cli_run(org.home, "mailbox", "set-password", "bob@contoso.test", "--password-stdin",
                   stdin="bob's long password\n").exit_code == 0
    data = rig.simple_message("For alice", sender="bob@contoso.test", to="alice@contoso.test")
    r = submit(org, "bob@contoso.test", "bob's long password", "bob@contoso.test", ["alice@contoso.test"], data)
    assert r["end"][0] == 250, r
    assert wait_until(lambda: sink_messages_for(org, "carol@external.test"), 20)
    trace = org.mailbox.trace
    trace.flush()
    [row] = trace.search(recipient="carol@external.test")
    assert row["from_ip"] == "127.0.0.1" and row["policy_version"] == org.mailbox.node.watcher.current.version


# --- quarantine release ------------------------------------------------------------------------

SPOOF = (b"Received: from spoofer.example (spoofer.example [198.51.100.9])\r\n\tby gw.contoso.test; "
         b"Fri, 27 Nov 2026 12:00:01 +0000\r\n") + rig.simple_message(subject="urgent wire", sender="ceo@fabrikam.test")


def _quarantine_one(org) -> None:
    org.dns.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.7 -all")
    org.dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
    r = send_message("127.0.0.1", org.mailbox.port(), source=GATEWAY, sender="ceo@fabrikam.test",
                     rcpts=["alice@contoso.test", "team@contoso.test"], data=SPOOF)
    assert r["end"][0] == 250, r
    for box in ("alice", "bob", "dave"):
        assert maildir_messages(org.home, f"{box}@contoso.test") == []


def _both(policy: str) -> str:
    return with_enhanced_filtering(with_external_list_member(policy))


def test_release_on_the_running_node_follows_forwarding_and_list_expansion(make_org):
    org = make_org(edit=_both, admin=True)
    _quarantine_one(org)
    _info, token = auth.new_token(org.mailbox.node.engine, "tests")
    with httpx.Client(base_url=org.mailbox.admin_url + "/api/v1", headers={"Authorization": f"Bearer {token}"},
                      timeout=20) as api:
        [item] = api.get("/quarantine").json()
        assert sorted(item["recipients"]) == ["alice@contoso.test", "team@contoso.test"]
        r = api.post(f"/quarantine/{item['id']}/release")
        assert r.status_code == 200, r.text
    # Local: alice (keep_copy), bob once (alice's forward and the list), dave (the list).
    for box in ("alice", "bob", "dave"):
        assert len(maildir_messages(org.home, f"{box}@contoso.test")) == 1, box
    assert maildir_messages(org.home, "team@contoso.test") == []  # a list keeps no copy
    # External: carol by alice's forward, erin by the list, each SRS-rewritten, through the gateway.
    assert wait_until(lambda: sink_messages_for(org, "carol@external.test") and sink_messages_for(org, "erin@external.test"), 20)
    carol, erin = sink_messages_for(org, "carol@external.test")[0], sink_messages_for(org, "erin@external.test")[0]
    assert carol["sender"].startswith("SRS0=") and b"Delivered-To: alice@contoso.test" in carol["raw"]
    assert erin["sender"].startswith("SRS0=") and b"Delivered-To: team@contoso.test" in erin["raw"]
    assert b"urgent wire" in carol["raw"] and b"urgent wire" in erin["raw"]
    trace = org.mailbox.trace
    trace.flush()
    assert {r["recipient"] for r in trace.search(recipient="erin@external.test")} == {"erin@external.test"}


def mxgate(home, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MXGATE_HOME=str(home.root))
    return subprocess.run([sys.executable, "-m", "mxgate", *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_release_follows_forwarding_and_queues_external_copies_for_the_node(make_org):
    org = make_org(edit=_both)
    _quarantine_one(org)
    [item] = json.loads(mxgate(org.home, "quarantine", "list", "--json").stdout)
    # While the node runs, its outbound queue is its own: the CLI says where to release instead
    # of delivering half the copies.
    busy = mxgate(org.home, "quarantine", "release", item["id"])
    assert busy.returncode == 1 and "admin" in busy.stderr and "Traceback" not in busy.stderr, busy.stderr
    assert maildir_messages(org.home, "alice@contoso.test") == []
    org.mailbox.stop()
    released = mxgate(org.home, "quarantine", "release", item["id"])
    assert released.returncode == 0, released.stderr
    for box in ("alice", "bob", "dave"):
        assert len(maildir_messages(org.home, f"{box}@contoso.test")) == 1, box
    queued = json.loads(mxgate(org.home, "queue", "--spool", "outbound", "list", "--json").stdout)
    rcpts = sorted(r["address"] for e in queued for r in e["recipients"])
    assert rcpts == ["carol@external.test", "erin@external.test"], queued
    assert all(e["sender"].startswith("SRS0=") for e in queued)
