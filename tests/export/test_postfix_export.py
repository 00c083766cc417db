"""Issue 7, must-show 4: the Postfix export loads into a real Postfix (`postfix check` clean),
enforces the lock-down on a loopback port, and `mxgate verify` gives it the same verdicts as mxgate."""

from __future__ import annotations

import asyncio

import rig
from exportkit import export_policy
from rig import ATTACKER, GATEWAY, send_message, simple_message

from mxgate.export.postfix import export_cli, postfix_config
from mxgate.policy.document import load_toml
from mxgate.probe.verify import Target, VerifySettings, failed, plan_matrix, render_table, run_matrix


def verify_settings(test_ca, v4: Target, v6: Target) -> VerifySettings:
    d = test_ca["dir"]
    return VerifySettings(v4, v6, ca_file=test_ca["ca"], tls_servername="localhost",
                          client_cert=str(d / "gateway.partner.test.pem"), client_key=str(d / "gateway.partner.test.key"),
                          wrong_cert=str(d / "evil.example.pem"), wrong_key=str(d / "evil.example.key"))


def test_postfix_check_is_clean_and_tables_are_used(exported_postfix):
    pf = exported_postfix()
    assert pf.instance.check() == ""
    assert pf.instance.postconf("smtpd_delay_reject") == "no"
    assert "mxgate_allow_0" in pf.instance.postconf("smtpd_restriction_classes")
    assert (pf.instance.etc / "mxgate_mailboxes.db").exists()
    cidr = pf.files["mxgate_allow_0.cidr"].splitlines()
    # Longest prefix first, then the catch-all refusal with mxgate's own reply.
    assert cidr[0].startswith("127.0.0.10/32\tOK") and cidr[-1].startswith("::/0\t550 5.7.51 TenantInboundAttribution")


def test_postfix_enforces_the_lockdown_and_delivers_to_maildir(exported_postfix):
    pf = exported_postfix().start()
    r = send_message("127.0.0.1", pf.port, source=ATTACKER, sender="ceo@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message())
    assert r["rcpt"][0][0] == 550 and "5.7.51 " in r["rcpt"][0][1] and "data" not in r
    r = send_message("127.0.0.1", pf.port, source=GATEWAY, sender="s@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message(), tls=False)
    assert r["mail"][0] == 530
    r = send_message("127.0.0.1", pf.port, source=GATEWAY, sender="s@fabrikam.test",
                     rcpts=["alice.smith@contoso.test", "nobody@contoso.test", "x@elsewhere.test"],
                     data=simple_message(subject="via postfix"))
    assert [c for c, _ in r["rcpt"]] == [250, 550, 550], r
    assert "5.1.1" in r["rcpt"][1][1] and "Relay access denied" in r["rcpt"][2][1]
    assert r["end"][0] == 250
    assert rig.wait_until(lambda: len(pf.messages("alice@contoso.test")) == 1, timeout=10), pf.instance.log_tail()
    assert b"Subject: via postfix" in pf.messages("alice@contoso.test")[0]


def test_verify_gives_postfix_the_same_verdicts_as_mxgate(exported_postfix, node_factory, test_ca):
    policy_text = export_policy(test_ca)
    pf = exported_postfix(policy_text).start()
    node = node_factory(policy_text, mailbox={"tls_cert": test_ca["server_cert"], "tls_key": test_ca["server_key"],
                                              "client_ca": test_ca["ca"]})
    v4, v6 = node.node.listeners["mailbox"].addresses[:2]
    policy = load_toml(policy_text)
    on_mxgate = asyncio.run(run_matrix(plan_matrix(policy, verify_settings(
        test_ca, Target("127.0.0.1", int(v4.rsplit(":", 1)[1])), Target("::1", int(v6.rsplit(":", 1)[1]))))))
    on_postfix = asyncio.run(run_matrix(plan_matrix(policy, verify_settings(
        test_ca, Target("127.0.0.1", pf.port), Target("::1", pf.port6)))))
    assert not failed(on_mxgate), render_table(on_mxgate)
    assert not failed(on_postfix), render_table(on_postfix) + pf.instance.log_tail()
    verdicts = lambda rs: {r.row.name: r.status for r in rs}  # noqa: E731
    assert verdicts(on_mxgate) == verdicts(on_postfix)
    assert sum(s == "pass" for s in verdicts(on_postfix).values()) >= 8
    # The refusals are the same reply, not just the same verdict.
    bypass = "bypass 'Third-party filter service' from 127.0.0.66"
    for results in (on_mxgate, on_postfix):
        row = {r.row.name: r for r in results}[bypass]
        assert (row.result.code, row.result.enhanced, row.result.stage) == (550, "5.7.51", "rcpt")


def test_verify_fails_on_postfix_left_open(exported_postfix, test_ca):
    open_text = export_policy(test_ca).replace("restrict_domains_to_ip_addresses = true",
                                               "restrict_domains_to_ip_addresses = false")
    pf = exported_postfix(open_text).start()
    results = asyncio.run(run_matrix(plan_matrix(load_toml(export_policy(test_ca)), verify_settings(
        test_ca, Target("127.0.0.1", pf.port), Target("::1", pf.port6)))))
    assert failed(results)
    assert [r.row.name for r in results if r.status == "fail"] == ["bypass 'Third-party filter service' from 127.0.0.66"]


def test_reject_stage_connect_refuses_in_the_greeting(exported_postfix):
    pf = exported_postfix(rig.GUIDE_POLICY, reject_stage="connect").start()
    assert pf.instance.check() == ""
    with rig.RawSMTP("127.0.0.1", pf.port, ATTACKER) as c:
        code, text = c.greeting()
        assert code == 554 and "5.7.51" in text
    with rig.RawSMTP("127.0.0.1", pf.port, GATEWAY) as c:
        assert c.greeting()[0] == 220


def test_export_cli_writes_the_files(tmp_path):
    policy = load_toml(rig.GUIDE_POLICY)
    assert export_cli(policy, tmp_path / "out") is None
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(postfix_config(policy))
    text = export_cli(policy, None)
    assert text.startswith("# ==> main.cf <==\n") and "# ==> mxgate_allow_0.cidr <==" in text


def test_name_only_certificate_connector_fails_closed_with_a_comment():
    text = rig.GUIDE_POLICY + """
[[inbound_connector]]
name = "Named partner"
sender_domains = ["partner.test"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "*.partner.test"
"""
    files = postfix_config(load_toml(text))
    assert "# mxgate: connector 'Named partner': Postfix 3.7 cannot match the certificate name" in files["main.cf"]
    # Without pins nothing in any table admits by certificate; the senders fall to the refusal.
    assert not any(name.endswith("_ccert") for name in files)
    [(key, cls)] = [line.split("\t") for line in files["mxgate_senders_0"].splitlines()]
    assert key == "partner.test"
    # partner.test is restricted by both connectors: the `*` gateway still admits it by address.
    assert files[f"{cls}.cidr"].splitlines()[0] == "127.0.0.10/32\tOK"
    assert files["main.cf"].count(f"{cls} = check_client_access cidr:$config_directory/{cls}.cidr") == 1


def test_outbound_star_connector_never_takes_the_organisations_own_mail(exported_postfix, test_ca):
    """Issue 20: a `*` outbound connector to a smart host used to capture contoso.test too (transport
    maps beat virtual_transport), sending local mail round through the gateway. Delivered through a
    real Postfix: own domains stay local, only the external forward reaches the smart host."""
    smart_host = rig.RecordingSink(test_ca["server_cert"], test_ca["server_key"])
    try:
        text = rig.GUIDE_POLICY.replace('address = "bob@contoso.test"', 'address = "bob@contoso.test"\n'
                                        'forward_to = ["bob@northwind.test"]') + f"""
[[outbound_connector]]
name = "To the gateway"
recipient_domains = ["*"]
smart_hosts = ["127.0.0.1:{smart_host.port}"]
tls_settings = "encryption_only"
"""
        pf = exported_postfix(text).start()
        r = send_message("127.0.0.1", pf.port, source=GATEWAY, sender="s@fabrikam.test",
                         rcpts=["alice@contoso.test", "bob@contoso.test"], data=simple_message(subject="stays here"))
        assert r["end"][0] == 250, r
        assert rig.wait_until(lambda: pf.messages("alice@contoso.test") and pf.messages("bob@contoso.test")
                              and smart_host.messages, timeout=20), pf.instance.log_tail()
        assert b"Subject: stays here" in pf.messages("alice@contoso.test")[0]
        assert b"Subject: stays here" in pf.messages("bob@contoso.test")[0]  # keep_copy
        assert [m["rcpts"] for m in smart_host.messages] == [["bob@northwind.test"]]
        assert smart_host.messages[0]["tls"]
        assert pf.files["mxgate_transport"].splitlines()[0] == "contoso.test\tvirtual:"
    finally:
        smart_host.close()


def test_internal_relay_domain_delivers_known_mailboxes_and_relays_the_rest(exported_postfix, test_ca):
    """The organisation's internal_relay domain is its own too: carol (a mailbox) is delivered
    locally, only the unknown recipient goes out through the `*` connector's smart host."""
    smart_host = rig.RecordingSink(test_ca["server_cert"], test_ca["server_key"])
    try:
        text = rig.GUIDE_POLICY + f"""
[[accepted_domain]]
name = "lists.contoso.test"
type = "internal_relay"

[[mailbox]]
address = "carol@lists.contoso.test"

[[outbound_connector]]
name = "To the gateway"
recipient_domains = ["*"]
smart_hosts = ["127.0.0.1:{smart_host.port}"]
tls_settings = "encryption_only"
"""
        pf = exported_postfix(text).start()
        r = send_message("127.0.0.1", pf.port, source=GATEWAY, sender="s@fabrikam.test",
                         rcpts=["carol@lists.contoso.test", "dave@lists.contoso.test", "alice@contoso.test"],
                         data=simple_message(subject="relay domain"))
        assert [c for c, _ in r["rcpt"]] == [250, 250, 250] and r["end"][0] == 250, r
        assert rig.wait_until(lambda: pf.messages("carol@lists.contoso.test") and pf.messages("alice@contoso.test")
                              and smart_host.messages, timeout=20), pf.instance.log_tail()
        assert [m["rcpts"] for m in smart_host.messages] == [["dave@lists.contoso.test"]]
    finally:
        smart_host.close()
