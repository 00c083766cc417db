"""Issue 4 must-show 3 and 5: through a real mailbox node, a real loopback DNS server and the
gateway address 127.0.0.10 — SPF judged on the gateway IP with enhanced filtering off, on the
original sender with it on; the stamped headers; the trace; forged results never survive."""

from __future__ import annotations

import time

from efkit import (ORIGINAL_IP, body, deliver, dkim_signed, dns_section, header_lines, policy, received,
                      trace_row, via_gateway)
from rig import GATEWAY, maildir_messages


def _only_message(node, address="alice@contoso.test", folder=None) -> bytes:
    [stored] = maildir_messages(node.home, address, folder)
    return stored


def test_enhanced_filtering_off_judges_the_gateway_ip(node_factory, zone, keys):
    n = node_factory(policy(), dns=dns_section(zone))
    r = deliver(n, via_gateway(dkim_signed(body(), keys[0][0])))
    assert r["end"][0] == 250, r
    stored = _only_message(n)
    [ar] = header_lines(stored, "Authentication-Results")
    assert ar.startswith("mx.contoso.test; spf=fail (sender IP is 127.0.0.10) smtp.mailfrom=fabrikam.test")
    assert "dkim=pass header.d=fabrikam.test" in ar and "dmarc=pass" in ar  # aligned DKIM still passes
    assert header_lines(stored, "X-MXGate-SkipListedInternetSender") == []
    row = trace_row(n)
    assert (row["from_ip"], row["original_ip"]) == (GATEWAY, "")
    assert row["detail"]["enhanced_filtering"]["status"] == "off"
    assert row["detail"]["spf"]["result"] == "fail" and row["detail"]["authenticated_ip"] == GATEWAY


def test_enhanced_filtering_on_judges_the_original_sender(node_factory, zone, keys):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    r = deliver(n, via_gateway(dkim_signed(body(), keys[0][0])))
    assert r["end"][0] == 250, r
    stored = _only_message(n)
    assert stored.startswith(b"Received: from gw.contoso.test ([127.0.0.10])")  # ours stays on top
    [ar] = header_lines(stored, "Authentication-Results")
    assert ar.startswith(f"mx.contoso.test; spf=pass (sender IP is {ORIGINAL_IP}) smtp.mailfrom=fabrikam.test"
                         " smtp.helo=mail.fabrikam.test;")
    assert "dkim=pass header.d=fabrikam.test header.s=sel" in ar
    assert "dmarc=pass (p=reject pct=100) action=none header.from=fabrikam.test" in ar and ar.endswith("arc=none")
    stamp = f"ip=[{ORIGINAL_IP}];domain=mail.fabrikam.test"
    assert header_lines(stored, "X-MXGate-SkipListedInternetSender") == [stamp]
    assert header_lines(stored, "X-MXGate-ExternalOriginalInternetSender") == [stamp]
    row = trace_row(n)
    assert (row["from_ip"], row["original_ip"], row["status"]) == (GATEWAY, ORIGINAL_IP, "Delivered")
    ef = row["detail"]["enhanced_filtering"]
    assert (ef["status"], ef["applied"], ef["header_index"], ef["rule"]) == ("detected", True, 0, "skip-last-ip")
    assert "127.0.0.10 (connecting IP, skip-last-ip)" in ef["explanation"]
    assert ef["test_mode"] is False and "test mode" not in ef["explanation"].lower()
    assert row["detail"]["connecting_ip"] == GATEWAY and row["detail"]["authenticated_ip"] == ORIGINAL_IP
    assert [row["detail"][k]["result"] for k in ("spf", "dmarc", "arc")] == ["pass", "pass", "none"]
    assert row["detail"]["dkim"][0]["result"] == "pass"
    assert row["detail"]["action"] == {"action": "deliver", "reason": "dmarc-pass", "detail": "aligned by dkim"}


def test_test_mode_stamps_detection_but_judges_the_connecting_ip(node_factory, zone):
    n = node_factory(policy(ef_skip_last_ip=True, ef_test_mode=True), dns=dns_section(zone))
    r = deliver(n, via_gateway(body(author="ceo@woodgrove.test")), sender="sender@woodgrove.test")
    assert r["end"][0] == 250, r
    stored = _only_message(n, folder="Junk")  # woodgrove p=quarantine, judged on the gateway IP
    assert "spf=fail (sender IP is 127.0.0.10)" in header_lines(stored, "Authentication-Results")[0]
    assert header_lines(stored, "X-MXGate-SkipListedInternetSender") == [f"ip=[{ORIGINAL_IP}];domain=mail.fabrikam.test"]
    assert header_lines(stored, "X-MXGate-ExternalOriginalInternetSender") == []
    row = trace_row(n)
    assert row["original_ip"] == ORIGINAL_IP and row["detail"]["enhanced_filtering"]["applied"] is False
    # Issue 22: the explanation says test mode is why the detected sender was not used.
    ef = row["detail"]["enhanced_filtering"]
    assert ef["test_mode"] is True and "Test mode" in ef["explanation"], ef
    assert f"connecting IP {GATEWAY}" in ef["explanation"].split("Test mode")[1]


def test_ef_users_limits_enhanced_filtering_to_listed_recipients(node_factory, zone):
    n = node_factory(policy(ef_skip_last_ip=True, ef_users=["bob@contoso.test"]), dns=dns_section(zone))
    for rcpt in ("bob@contoso.test", "alice@contoso.test"):
        msg = via_gateway(body(author="ceo@woodgrove.test").replace(b"alice@", rcpt.split("@")[0].encode() + b"@"))
        assert deliver(n, msg, sender="sender@woodgrove.test", rcpts=[rcpt])["end"][0] == 250
    bob = _only_message(n, "bob@contoso.test")  # listed: judged on 203.0.113.7, passes, inbox
    assert "spf=pass" in header_lines(bob, "Authentication-Results")[0]
    alice = _only_message(n, folder="Junk")  # not listed: gateway IP, SPF fails, p=quarantine
    assert "spf=fail" in header_lines(alice, "Authentication-Results")[0]
    assert trace_row(n)["detail"]["enhanced_filtering"]["rule"] == "ef-users"


def test_skip_ips_walks_past_a_private_hop(node_factory, zone, keys):
    n = node_factory(policy(ef_skip_ips=["127.0.0.10/32"]), dns=dns_section(zone))
    # The gateway heard from an internal relay, which heard from fabrikam's server.
    inner = received(ORIGINAL_IP, "mail.fabrikam.test", by="relay.internal") + dkim_signed(body(), keys[0][0])
    data = via_gateway(inner, ip="10.1.2.3", helo="relay.internal")
    assert deliver(n, data)["end"][0] == 250
    ef = trace_row(n)["detail"]["enhanced_filtering"]
    assert (ef["status"], ef["header_index"], ef["rule"]) == ("detected", 1, "non-routable")
    assert "spf=pass" in header_lines(_only_message(n), "Authentication-Results")[0]


def test_non_routable_set_is_a_node_setting(node_factory, zone):
    """A loopback 'Internet' sender (127.0.0.77) is skipped by default and found when 127/8 is removed."""
    msg = via_gateway(body(author="ceo@woodgrove.test"), ip="127.0.0.77", helo="sender.loop.test")
    default = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(default, msg, sender="sender@woodgrove.test")["end"][0] == 250
    assert trace_row(default)["detail"]["enhanced_filtering"]["rule"] == "no-usable-header"
    routable = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]
    custom = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone), mailbox={"non_routable": routable})
    assert deliver(custom, msg, sender="sender@woodgrove.test")["end"][0] == 250
    row = trace_row(custom)
    assert row["original_ip"] == "127.0.0.77" and row["detail"]["enhanced_filtering"]["status"] == "detected"


def test_forged_received_lines_below_the_real_hop_are_never_read(node_factory, zone):
    """adversarial.md §6: three forged hops claiming trusted/internal IPs sit below the real one."""
    forged = received("127.0.0.10", "gw.contoso.test") + received("10.0.0.1", "relay.internal") \
        + received("192.168.1.5", "mail.fabrikam.test")
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    spoof = via_gateway(forged + body(author="ceo@woodgrove.test"), ip="198.51.100.9", helo="spoofer.example")
    assert deliver(n, spoof, sender="x@woodgrove.test")["end"][0] == 250
    row = trace_row(n)
    assert row["original_ip"] == "198.51.100.9" and row["detail"]["enhanced_filtering"]["header_index"] == 0
    assert row["detail"]["spf"]["result"] == "fail"  # judged on the real hop, not a forged one
    assert len(maildir_messages(n.home, "alice@contoso.test", "Junk")) == 1


def test_forged_results_and_stamps_from_outside_never_survive(node_factory, zone):
    forged = (b"Authentication-Results: mx.contoso.test; spf=pass smtp.mailfrom=fabrikam.test; dmarc=pass\r\n"
              b"Authentication-Results: (comment) MX.Contoso.Test.; dkim=pass header.d=fabrikam.test\r\n"
              b"Authentication-Results: upstream.example; spf=neutral\r\n"
              b"X-MXGate-ExternalOriginalInternetSender: ip=[203.0.113.7];domain=mail.fabrikam.test\r\n"
              b"x-mxgate-skiplistedinternetsender: ip=[203.0.113.7]\r\n")
    n = node_factory(policy(), dns=dns_section(zone))  # off: the gateway IP fails SPF, no DKIM
    r = deliver(n, via_gateway(body(extra=forged)))
    assert r["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []  # DMARC p=reject → quarantine
    from mxgate.quarantine.store import QuarantineStore

    [item] = QuarantineStore(n.node.engine).list()
    stored = QuarantineStore(n.node.engine).get(item["id"])["body"]
    [ours] = header_lines(stored, "Authentication-Results")
    assert ours.startswith("mx.contoso.test; spf=fail") and "dmarc=fail" in ours
    assert header_lines(stored, "Authentication-Results-Original") == ["upstream.example; spf=neutral"]
    assert b"X-MXGate" not in stored and b"x-mxgate" not in stored  # EF off: we add none either
    assert stored.count(b"spf=pass") == 0


def test_dns_timeout_gives_temperror_and_delivers(node_factory, zone, keys):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone, timeout=0.3))
    zone.set_delay(3.0)
    started = time.monotonic()
    r = deliver(n, via_gateway(body()))
    assert r["end"][0] == 250 and time.monotonic() - started < 8
    [ar] = header_lines(_only_message(n), "Authentication-Results")  # inbox: never acted upon
    assert "spf=temperror" in ar and "dmarc=temperror" in ar
    assert trace_row(n)["detail"]["action"]["reason"] == "dmarc-not-failed"


def test_more_than_50_received_headers_is_a_loop(node_factory, zone):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    r = deliver(n, b"".join(via_gateway(b"", ip=f"203.0.113.{i}") for i in range(51)) + body())
    assert r["end"][0] == 554 and "5.4.6" in r["end"][1]
    assert maildir_messages(n.home, "alice@contoso.test") == []
