"""Issue 22, point 4: `reject_stage = "connect"` says when it cannot apply, and its refusal text
fits the stage.

With an enabled certificate connector a session can only be attributed after STARTTLS, so the
node refuses at RCPT instead: it logs that once at start (with the reason) and `mxgate verify`
shows it. The connect-stage 554 5.7.51 speaks of the client's address, never of a recipient
domain the client has not sent yet."""

from __future__ import annotations

import json
import logging

from typer.testing import CliRunner

import rig
from rig import ATTACKER, RawSMTP, send_message, simple_message, wait_until

from mxgate import cli
from mxgate.policy.attribution import compile_policy, connect_stage_fallback
from mxgate.policy.document import load_toml
from mxgate.smtp.replies import REPLIES

CERT_CONNECTOR = """
[[inbound_connector]]
name = "Partner by certificate"
sender_domains = ["partner.test"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "gateway.partner.test"
"""
WITH_CERT = rig.GUIDE_POLICY + CERT_CONNECTOR
WITH_DISABLED_CERT = WITH_CERT + "enabled = false\n"


def _why(policy: str, stage: str = "connect") -> str | None:
    return connect_stage_fallback(compile_policy(load_toml(policy), 1), stage)


def test_the_fallback_is_decided_from_the_policy_and_names_the_connector():
    why = _why(WITH_CERT)
    assert why and "RCPT" in why and "'Partner by certificate'" in why and "STARTTLS" in why
    assert _why(rig.GUIDE_POLICY) is None  # every domain IP-locked, no certificate connector: connect applies
    assert _why(WITH_DISABLED_CERT) is None  # a disabled connector attributes nothing
    assert _why(WITH_CERT, "rcpt") is None  # nothing to say when RCPT was asked for
    open_domain = rig.GUIDE_POLICY + '\n[[accepted_domain]]\nname = "fabrikam.test"\n'
    open_domain = open_domain.replace('sender_domains = ["*"]', 'sender_domains = ["*"]\nassociated_accepted_domains = ["contoso.test"]')
    assert "fabrikam.test" in (_why(open_domain) or "")  # a domain no IP-locked connector covers


def test_connect_stage_text_speaks_of_the_address_not_a_recipient_domain(node_factory):
    n = node_factory(mailbox={"reject_stage": "connect"})
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        code, text = c.greeting()
    assert code == 554 and "5.7.51" in text
    assert "recipient" not in text.lower(), text
    assert "address" in text.lower() and "RestrictDomainsToIPAddresses" in text
    assert "recipient" not in str(REPLIES["connector-attribution-connect"]).lower()


def test_certificate_connector_moves_refusals_to_rcpt_and_the_node_says_so_once(node_factory, caplog):
    caplog.set_level(logging.INFO, logger="mxgate")
    n = node_factory(WITH_CERT, mailbox={"reject_stage": "connect"})
    notes = [r for r in caplog.records if "reject_stage" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.WARNING, [r.getMessage() for r in notes]
    assert "RCPT" in notes[0].getMessage() and "Partner by certificate" in notes[0].getMessage()
    r = send_message("127.0.0.1", n.port(), source=ATTACKER, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=simple_message())
    assert r["greeting"][0] == 220 and r["rcpt"][0][0] == 550 and "5.7.51" in r["rcpt"][0][1]
    # More sessions do not repeat the note.
    send_message("127.0.0.1", n.port(), source=ATTACKER, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                 data=simple_message())
    assert len([r for r in caplog.records if "reject_stage" in r.getMessage()]) == 1


def test_a_policy_change_that_brings_the_fallback_is_said_once(node_factory, caplog):
    caplog.set_level(logging.INFO, logger="mxgate")
    n = node_factory(rig.GUIDE_POLICY, mailbox={"reject_stage": "connect"})

    def notes():
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith('reject_stage = "connect"')]

    assert notes() == []  # the guide's policy: connect-stage refusal applies, nothing to say
    rig.apply_policy(n.home, WITH_CERT)
    assert wait_until(lambda: len(notes()) == 1, timeout=5)
    assert "RCPT" in notes()[0] and "Partner by certificate" in notes()[0]
    version = rig.apply_policy(n.home, WITH_CERT.replace('sender_domains = ["partner.test"]',
                                                          'sender_domains = ["partner.test", "partner2.test"]'))
    assert wait_until(lambda: n.node.watcher.current.version == version, timeout=5)
    rig.apply_policy(n.home, rig.GUIDE_POLICY)  # and back: said once more, as good news
    assert wait_until(lambda: len(notes()) == 2, timeout=5)
    assert "applies again" in notes()[1]
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        assert c.greeting()[0] == 554


def test_verify_shows_where_refusals_happen(node_factory, tmp_path):
    n = node_factory(WITH_CERT, mailbox={"reject_stage": "connect"})
    config = tmp_path / "node.toml"
    config.write_text('[mailbox]\nreject_stage = "connect"\n')
    cli._register_all()
    runner = CliRunner()
    args = ["--home", str(n.home.root), "--config", str(config), "verify", "--target", f"127.0.0.1:{n.port()}"]
    table = runner.invoke(cli.app, args, catch_exceptions=False)
    assert "reject_stage" in table.stdout and "RCPT" in table.stdout, table.stdout
    as_json = json.loads(runner.invoke(cli.app, args + ["--json"], catch_exceptions=False).stdout)
    [note] = as_json["notes"]
    assert "Partner by certificate" in note and "RCPT" in note
    # The bypass row still passes: refused, at RCPT.
    bypass = [r for r in as_json["rows"] if r["check"] == "bypass"]
    assert bypass and all(r["status"] == "pass" and r["stage"] == "rcpt" for r in bypass)
