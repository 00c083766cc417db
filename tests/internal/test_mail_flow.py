"""Issue 6 end to end on loopback: internal forwarding, outbound through the gateway by MX with
SRS and DKIM, on-premises printers, and DSNs back to internal senders by the internal route."""

from __future__ import annotations

import email

from typer.testing import CliRunner

import rig
from rig import ATTACKER, GATEWAY, INTERNET, PRINTER, maildir_messages, send_message, wait_until

from mxgate import cli
from mxgate.auth.dkim import verify_dkim
from mxgate.auth.dns import dnsfunc_for, make_resolver
from mxgate.smtp.replies import REPLIES

INVITE = (b"From: Organizer <organizer@fabrikam.test>\r\nTo: alice@contoso.test\r\n"
          b"Subject: Quarterly review\r\nMessage-ID: <inv-1@fabrikam.test>\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n"
          b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:inv-1@fabrikam.test\r\n"
          b"ORGANIZER:mailto:organizer@fabrikam.test\r\nSUMMARY:Quarterly review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def cli_run(home, *args, stdin: str | None = None):
    cli._register_all() if not cli.app.registered_groups else None
    return CliRunner().invoke(cli.app, ["--home", str(home.root), *args], input=stdin, catch_exceptions=False)


def via_gateway(org, data=INVITE, sender="organizer@fabrikam.test", rcpts=("alice@contoso.test",)):
    org.dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    return send_message(GATEWAY, org.gateway.port("gateway"), source=INTERNET, sender=sender, rcpts=list(rcpts), data=data)


def sink_messages_for(org, rcpt):
    return [m for m in org.sink.messages if rcpt in m["rcpts"]]


def test_calendar_invite_reaches_bob_by_forwarding_and_the_bypass_stays_refused(org):
    r = via_gateway(org)
    assert r["end"][0] == 250, r
    assert wait_until(lambda: len(maildir_messages(org.home, "bob@contoso.test")) == 1, 15)
    bob = maildir_messages(org.home, "bob@contoso.test")[0]
    assert b"METHOD:REQUEST" in bob and b"From: Organizer <organizer@fabrikam.test>" in bob
    assert len(maildir_messages(org.home, "alice@contoso.test")) == 1  # keep_copy
    # The same sender and content straight to the mailbox server from outside: still refused.
    direct = send_message("127.0.0.1", org.mailbox.port(), source=ATTACKER, sender="organizer@fabrikam.test",
                          rcpts=["alice@contoso.test"], data=INVITE)
    assert direct["rcpt"][0][0] == 550 and "5.7.51" in direct["rcpt"][0][1]
    assert len(maildir_messages(org.home, "bob@contoso.test")) == 1


def test_forward_to_external_leaves_through_the_gateway_with_srs_and_dkim(org):
    shown = cli_run(org.home, "dkim", "show-dns", "contoso.test", "--json")
    assert shown.exit_code == 0, shown.output
    import json

    record = json.loads(shown.output)
    assert record["name"] == "mxgate._domainkey.contoso.test" and record["value"].startswith("v=DKIM1; k=rsa; p=")
    org.dns.add(record["name"], "TXT", record["value"])
    assert via_gateway(org)["end"][0] == 250
    assert wait_until(lambda: sink_messages_for(org, "carol@external.test"), 20)
    out = sink_messages_for(org, "carol@external.test")[0]
    assert out["sender"].startswith("SRS0=") and out["sender"].endswith("@contoso.test")
    assert "=fabrikam.test=organizer@" in out["sender"]
    assert out["tls"] and org.sink.peers[-1] == GATEWAY  # by MX, from the gateway's address, encrypted
    raw = out["raw"]
    assert b"Delivered-To: alice@contoso.test" in raw and b"METHOD:REQUEST" in raw
    results = verify_dkim(raw, dnsfunc_for(make_resolver([org.dns.address], 2.0)))
    assert [(d.result, d.domain) for d in results] == [("pass", "contoso.test")]
    # Bob (internal) got his copy without any of that.
    bob = maildir_messages(org.home, "bob@contoso.test")[0]
    assert b"DKIM-Signature" not in bob and b"Delivered-To" not in bob


def test_printer_on_premises_reaches_internal_and_external_but_not_the_partner_path(org):
    data = rig.simple_message("Scan", sender="scanner@contoso.test", to="bob@contoso.test")
    r = send_message("127.0.0.1", org.mailbox.port(), source=PRINTER, sender="scanner@contoso.test",
                     rcpts=["bob@contoso.test", "ext.user@external.test"], data=data, tls=False)
    assert [c for c, _ in r["rcpt"]] == [250, 250] and r["end"][0] == 250, r
    assert len(maildir_messages(org.home, "bob@contoso.test")) == 1
    assert wait_until(lambda: sink_messages_for(org, "ext.user@external.test"), 20)
    assert sink_messages_for(org, "ext.user@external.test")[0]["sender"] == "scanner@contoso.test"  # no SRS: not a forward
    # The printer's address is nothing special on the gateway (the anonymous, partner-facing path).
    relay = send_message(GATEWAY, org.gateway.port("gateway"), source=PRINTER, sender="scanner@contoso.test",
                         rcpts=["ext.user@external.test"], data=data)
    assert relay["rcpt"][0][0] == 550 and "5.7.1" in relay["rcpt"][0][1]
    # Another address of the same network is not on-premises: no relaying from it.
    other = send_message("127.0.0.1", org.mailbox.port(), source="127.0.0.31", sender="scanner@contoso.test",
                         rcpts=["ext.user@external.test"], data=data, tls=False)
    assert other["rcpt"][0][0] == 550
    assert len(sink_messages_for(org, "ext.user@external.test")) == 1


def test_dsn_for_an_undeliverable_external_recipient_returns_to_the_internal_sender(org):
    org.sink.refuse["nobody@external.test"] = "550 5.1.1 no such user here"
    data = rig.simple_message("Hello out there", sender="bob@contoso.test", to="nobody@external.test")
    assert cli_run(org.home, "mailbox", "set-password", "bob@contoso.test", "--password-stdin",
                   stdin="bob's long password\n").exit_code == 0
    from test_submission import submit

    r = submit(org, "bob@contoso.test", "bob's long password", "bob@contoso.test", ["nobody@external.test"], data)
    assert r["end"][0] == 250, r
    assert wait_until(lambda: maildir_messages(org.home, "bob@contoso.test"), 30)
    dsn = email.message_from_bytes(maildir_messages(org.home, "bob@contoso.test")[0])
    assert dsn.get_content_type() == "multipart/report"
    assert b"nobody@external.test" in dsn.as_bytes() and b"5.1.1" in dsn.as_bytes()


def test_recall_style_notice_generated_inside_is_delivered_not_blocked(org):
    notice = (b"From: organizer@fabrikam.test\r\nTo: bob@contoso.test\r\nSubject: Recall: Quarterly review\r\n"
              b"Message-ID: <recall-1@fabrikam.test>\r\n\r\norganizer@fabrikam.test would like to recall the message.\r\n")
    internal = org.mailbox.node.internal
    out = org.mailbox.call(internal.deliver("organizer@fabrikam.test", ["bob@contoso.test"], notice, trace_id="recall1"))
    assert out.plan.local == ("bob@contoso.test",) and not out.failed
    assert [m for m in maildir_messages(org.home, "bob@contoso.test") if b"Recall: Quarterly review" in m]
    # The identical notice from outside the organisation, straight to the mailbox server: refused.
    direct = send_message("127.0.0.1", org.mailbox.port(), source=ATTACKER, sender="organizer@fabrikam.test",
                          rcpts=["bob@contoso.test"], data=notice)
    assert direct["rcpt"][0][0] == REPLIES["connector-attribution"].code


def test_smart_host_refusal_bounces_to_the_sender_inside_the_mailbox_node(org):
    """A DSN made by the mailbox node's own queue goes straight into the sender's Maildir."""
    rig.apply_policy(org.home, org.policy + f'''
[[outbound_connector]]
name = "Refusing partner"
recipient_domains = ["refused.test"]
smart_hosts = ["{org.sink.host}:25"]
tls_settings = "encryption_only"
''')
    org.sink.refuse["x@refused.test"] = "550 5.7.1 we do not take your mail"
    assert wait_until(lambda: org.mailbox.node.watcher.current.policy.outbound("Refusing partner") is not None, 5)
    assert cli_run(org.home, "mailbox", "set-password", "bob@contoso.test", "--password-stdin",
                   stdin="bob's long password\n").exit_code == 0
    from test_submission import submit

    data = rig.simple_message("To a partner", sender="bob@contoso.test", to="x@refused.test")
    assert submit(org, "bob@contoso.test", "bob's long password", "bob@contoso.test", ["x@refused.test"], data)["end"][0] == 250
    assert wait_until(lambda: maildir_messages(org.home, "bob@contoso.test"), 20)
    dsn = maildir_messages(org.home, "bob@contoso.test")[0]
    assert b"multipart/report" in dsn and b"x@refused.test" in dsn and b"5.7.1" in dsn
    assert org.sink.peers and GATEWAY not in org.sink.peers  # the partner was tried directly, the gateway never
    assert b"by gw.contoso.test" not in dsn.split(b"\r\n\r\n")[0]  # never passed through the gateway


def test_bounce_to_an_srs_address_returns_to_the_original_sender(org):
    """A bounce for mail alice forwarded comes back to the SRS address; mxgate checks its signature,
    reverses it and sends the bounce on to the original sender. A forged SRS address is unknown."""
    org.dns.add("fabrikam.test", "MX", (10, "mx.external.test"))
    assert via_gateway(org)["end"][0] == 250
    assert wait_until(lambda: sink_messages_for(org, "carol@external.test"), 20)
    srs_address = sink_messages_for(org, "carol@external.test")[0]["sender"]
    bounce = (b"From: MAILER-DAEMON@external.test\r\nTo: " + srs_address.encode() + b"\r\nSubject: Undelivered\r\n"
              b"Message-ID: <bounce-1@external.test>\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n\r\ncarol moved\r\n")
    r = send_message(GATEWAY, org.gateway.port("gateway"), source=INTERNET, sender="", rcpts=[srs_address], data=bounce)
    assert r["end"][0] == 250, r
    assert wait_until(lambda: sink_messages_for(org, "organizer@fabrikam.test"), 20)
    back = sink_messages_for(org, "organizer@fabrikam.test")[0]
    assert back["sender"] == "" and b"carol moved" in back["raw"]
    # A forged one (wrong signature) is an unknown recipient at the mailbox server.
    local, _, domain = srs_address.partition("@")
    forged = "SRS0=AAAA=" + local.split("=", 2)[2] + "@" + domain
    direct = send_message("127.0.0.1", org.mailbox.port(), source=GATEWAY, sender="", rcpts=[forged], data=bounce)
    assert direct["rcpt"][0][0] == 550 and "5.1.1" in direct["rcpt"][0][1]


def test_queue_cli_sees_and_flushes_the_mailbox_nodes_outbound_queue(org):
    """`mxgate queue --spool outbound`: mail waiting for an unreachable smart host is listed, and a
    retry request reaches the running node's queue runner."""
    from rig import free_port

    dead = free_port()
    rig.apply_policy(org.home, org.policy + f'''
[[outbound_connector]]
name = "Unreachable partner"
recipient_domains = ["unreachable.test"]
smart_hosts = ["127.0.0.1:{dead}"]
tls_settings = "encryption_only"
''')
    assert wait_until(lambda: org.mailbox.node.watcher.current.policy.outbound("Unreachable partner") is not None, 5)
    assert cli_run(org.home, "mailbox", "set-password", "bob@contoso.test", "--password-stdin",
                   stdin="bob's long password\n").exit_code == 0
    from test_submission import submit

    data = rig.simple_message("Waiting", sender="bob@contoso.test", to="x@unreachable.test")
    assert submit(org, "bob@contoso.test", "bob's long password", "bob@contoso.test", ["x@unreachable.test"],
                  data)["end"][0] == 250
    import json

    def listed():
        r = cli_run(org.home, "queue", "--spool", "outbound", "list", "--json")
        return json.loads(r.output) if r.exit_code == 0 else []

    assert wait_until(lambda: any(e["attempts"] >= 1 for e in listed()), 15), listed()
    [entry] = listed()
    assert entry["sender"] == "bob@contoso.test"
    r = cli_run(org.home, "queue", "--spool", "outbound", "retry", entry["id"], "--json")
    assert r.exit_code == 0 and json.loads(r.output)["state"] == "applied"  # the running runner took it
    assert json.loads(cli_run(org.home, "queue", "list", "--json").output) == []  # the gateway's own queue is elsewhere


# --- issue 14: relaying and forwarding that no sender can steer -------------------------------

def test_on_premises_connector_relays_only_for_accepted_sender_domains(org):
    """A printer's address once sent as x@gmail.example to the Internet. EXO answers
    550 5.7.64 TenantAttribution; Relay Access Denied; internal delivery is unaffected."""
    data = rig.simple_message("Spoof", sender="ceo@gmail.example", to="ext.user@external.test")
    for sender in ("ceo@gmail.example", "x@contoso.test.evil.example", "x@[127.0.0.1]"):
        r = send_message("127.0.0.1", org.mailbox.port(), source=PRINTER, sender=sender,
                         rcpts=["ext.user@external.test", "bob@contoso.test"], data=data, tls=False)
        assert r["rcpt"][0] == (550, str(REPLIES["tenant-relay-denied"])), (sender, r)
        assert r["rcpt"][1][0] == 250  # to the organisation itself: not relaying
    ok = send_message("127.0.0.1", org.mailbox.port(), source=PRINTER, sender="scanner@CONTOSO.TEST",
                      rcpts=["ext.user@external.test"], data=data, tls=False)
    assert ok["rcpt"][0][0] == 250
    dsn = send_message("127.0.0.1", org.mailbox.port(), source=PRINTER, sender="",
                       rcpts=["ext.user@external.test"], data=data, tls=False)
    assert dsn["rcpt"][0][0] == 250  # an on-premises server's own DSN (<>) still leaves
    org.mailbox.node.trace.flush()
    assert any(row["reason"] == "tenant-relay-denied" for row in org.mailbox.node.trace.search(status="Rejected"))


def test_forged_srs_addresses_are_refused_at_the_gateways_rcpt(org):
    """The gateway checks SRS signatures itself, with the mailbox servers' secret: a forged or
    guessed address is refused before anything is relayed; the genuine one passes."""
    org.dns.add("fabrikam.test", "MX", (10, "mx.external.test"))
    assert via_gateway(org)["end"][0] == 250
    assert wait_until(lambda: sink_messages_for(org, "carol@external.test"), 20)
    genuine = sink_messages_for(org, "carol@external.test")[0]["sender"]
    local, _, domain = genuine.partition("@")
    tag, given, rest = local.split("=", 2)
    forgeries = [
        f"{tag}=AAAAAAAAAA={rest}@{domain}",  # guessed hash
        f"{tag}={given[:4]}={rest}@{domain}",  # libsrs2's 4-character length
        f"{tag}={given[:1]}={rest}@{domain}",  # one character
        f"{tag}={given}={rest.rsplit('=', 1)[0]}=victim@{domain}",  # a valid hash moved to another target
        f"SRS1=AAAAAAAAAA=evil.example==xxxx=TT=victim.example=v@{domain}",
    ]
    port = org.gateway.port("gateway")
    for forged in forgeries:
        r = send_message(GATEWAY, port, source=INTERNET, sender="", rcpts=[forged], data=b"Subject: x\r\n\r\nx\r\n")
        assert r["rcpt"][0] == (550, str(REPLIES["srs-invalid"])), (forged, r)
    r = send_message(GATEWAY, port, source=INTERNET, sender="", rcpts=[genuine], data=b"Subject: b\r\n\r\nbounce\r\n")
    assert r["rcpt"][0][0] == 250 and r["end"][0] == 250
