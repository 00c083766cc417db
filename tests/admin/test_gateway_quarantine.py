"""Issue 15: messages quarantined by the gateway can be previewed, released and deleted from the
web admin and the REST API (one ID format for both roles, through quarantine/), and are stored
with their resolved mailboxes: releasing never creates a Maildir for an alias or SRS address."""

from __future__ import annotations

import re
import time

import rig
from adminkit import PASSWORD, api_client, login
from rig import GATEWAY, INTERNET, free_port, maildir_messages, send_message, simple_message

from mxgate.admin import auth
from mxgate.delivery import srs
from mxgate.smtp.replies import REPLIES
from mxgate.quarantine.store import resolve_mailboxes
from mxgate.policy.model import Mailbox

SRS = "SRS0=HHH=TT=fabrikam.test=bob@contoso.test"


def test_resolve_mailboxes_pure():
    directory = {"alice@c.test": Mailbox("alice@c.test", aliases=("alice.smith@c.test",)),
                 "alice.smith@c.test": Mailbox("alice@c.test", aliases=("alice.smith@c.test",)),
                 "team@c.test": Mailbox("team@c.test", members=("alice@c.test", "out@f.test", "team@c.test")),
                 "fwd@c.test": Mailbox("fwd@c.test", forward_to=("x@f.test",), keep_copy=False)}
    mailboxes, others = resolve_mailboxes(directory, ["Alice.Smith@c.test", "alice@c.test", "team@c.test",
                                                      "fwd@c.test", SRS])
    # Lists and forwarders stay themselves: the release routes them like delivered mail.
    assert mailboxes == ["alice@c.test", "team@c.test", "fwd@c.test"] and others == [SRS.lower()]


def _node(node_factory, dns):
    """One node: the gateway (its downstream is its own mailbox role) and the admin centre."""
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=quarantine")  # the gateway quarantines
    mbx_port = free_port()
    admin = f"127.0.0.1:{free_port()}"
    n = node_factory(rig.GUIDE_POLICY, roles={"mailbox": True, "gateway": True, "admin": True},
                     mailbox={"listen": [f"127.0.0.1:{mbx_port}"]}, admin={"listen": admin},
                     gateway={"listen": [f"{GATEWAY}:{free_port(GATEWAY)}"], "downstream": [f"127.0.0.1:{mbx_port}"],
                              "source_address": GATEWAY, "hostname": "gw.contoso.test"},
                     dns={"servers": [dns.address], "timeout": 2.0})
    auth.set_password(n.node.engine, "admin", PASSWORD)
    n.admin_url = f"http://{admin}"
    return n


def _quarantine(n, subject: str, rcpts: list[str]) -> None:
    r = send_message("127.0.0.10", n.port("gateway"), source=INTERNET, sender="sender@fabrikam.test",
                     rcpts=rcpts, data=simple_message(subject=subject))
    assert r["end"] == (250, str(REPLIES["quarantined"])), r


def test_gateway_quarantine_from_the_api_and_the_web(node_factory, dns):
    n = _node(node_factory, dns)
    # A genuine bounce address of ours (the gateway checks the SRS signature at RCPT).
    srs_address = srs.forward("bob@fabrikam.test", "contoso.test", n.node.roles["gateway"].sv.srs_secret,
                              time.time(), frozenset({"contoso.test"})).address
    _quarantine(n, "to the alias", ["alice.smith@contoso.test", srs_address])
    _quarantine(n, "to delete", ["bob@contoso.test"])
    with api_client(n) as api:
        items = {i["subject"]: i for i in api.get("/quarantine").json()}
        assert set(items) == {"to the alias", "to delete"}
        alias = items["to the alias"]
        assert re.fullmatch(r"[0-9a-f]{16}", alias["id"])  # the mailbox role's format
        assert alias["recipients"] == ["alice@contoso.test"]  # the mailbox, not the alias
        assert alias["detail"]["relay_recipients"] == [srs_address.lower()]
        preview = api.get(f"/quarantine/{alias['id']}").json()
        assert any(h == ["Subject", "to the alias"] for h in preview["headers"]) and preview["size"] > 0
        released = api.post(f"/quarantine/{alias['id']}/release")
        assert released.status_code == 200 and released.json()["delivered"] == 1, released.text
        assert api.post(f"/quarantine/{alias['id']}/release").status_code == 409  # only once
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    assert b"to the alias" in stored
    made = sorted(p.name for p in n.home.maildir.iterdir())
    assert "alice.smith@contoso.test" not in made and not any(m.lower().startswith("srs") for m in made), made

    web = login(n.admin_url)
    doomed = items["to delete"]["id"]
    page = web.get("/quarantine", params={"show": doomed})
    assert page.status_code == 200 and "to delete" in page.text
    r = web.post(f"/quarantine/{doomed}/delete", data={"csrf_token": web.csrf})
    assert r.status_code == 303
    with api_client(n) as api:
        assert api.get(f"/quarantine/{doomed}").status_code == 404
    assert maildir_messages(n.home, "bob@contoso.test") == []
    n.trace.flush()
    assert {r["status"] for r in n.trace.search(recipient="alice.smith@contoso.test")} == {"Delivered"}
