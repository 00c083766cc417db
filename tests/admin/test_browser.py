"""Issue 11 must-show 2: the admin centre in a real browser (Playwright driving Debian's Chromium)
against a real in-process node with the mailbox and admin roles and a loopback DNS server.

One journey, in the guide's order: log in; create the guide's connector through the wizard; the
running mailbox server then refuses a bypass probe from 127.0.0.66 with 550 5.7.51 within a
second; switch enhanced filtering to "skip these IPs"; find a delivered message in the trace and
see its original IP; release a quarantined message and find it in the Maildir; run "Test
lock-down". Every page is saved to artifacts/screenshots/.
"""

from __future__ import annotations

import time

import pytest

from adminkit import PASSWORD, POLICY_NO_CONNECTOR, start_admin_node
from rig import ATTACKER, GATEWAY, REPO, RawSMTP, maildir_messages, send_message, wait_until

playwright = pytest.importorskip("playwright.sync_api")

SHOTS = REPO / "artifacts" / "screenshots"
ORIGINAL_IP = "203.0.113.7"  # fabrikam's outbound server, before the gateway (RFC 5737 range)
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


def _message(sender: str, subject: str) -> bytes:
    # As the gateway relays it: its Received header names the original sender's address.
    return (f"Received: from mail.fabrikam.test (mail.fabrikam.test [{ORIGINAL_IP}])\r\n\tby gw.contoso.test (mxgate) "
            f"with ESMTPS id 4f1a2b;\r\n\tFri, 27 Nov 2026 12:00:01 +0000\r\n"
            f"From: {sender}\r\nTo: alice@contoso.test\r\nSubject: {subject}\r\nMessage-ID: <{time.time_ns()}@x.test>\r\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n\r\nHello Alice.\r\n").encode()


def _probe_refused(port: int) -> tuple[int, str]:
    with RawSMTP("127.0.0.1", port, ATTACKER) as c:
        c.greeting()
        c.cmd("EHLO attacker.test")
        c.cmd("MAIL FROM:<ceo@fabrikam.test>")
        reply = c.cmd("RCPT TO:<alice@contoso.test>")
        c.cmd("QUIT")
        return reply


@pytest.fixture
def browser_page():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(10_000)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert (SHOTS / f"{name}.png").stat().st_size > 1000


def test_admin_journey_in_chromium(node_factory, dns, browser_page):
    dns.add("fabrikam.test", "TXT", f"v=spf1 ip4:{ORIGINAL_IP} -all")
    dns.add("spoofed.test", "TXT", "v=spf1 -all")
    dns.add("_dmarc.spoofed.test", "TXT", "v=DMARC1; p=reject")
    n = start_admin_node(node_factory, POLICY_NO_CONNECTOR, dns={"servers": [dns.address], "timeout": 0.5})
    page, url = browser_page, n.admin_url

    # 1. Log in (the dashboard first shows the domain as not locked down).
    page.goto(url + "/")
    assert page.url.startswith(url + "/login")
    shot(page, "01-login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#lockdown")
    assert page.get_attribute("#lockdown", "data-locked") == "no"
    assert page.get_attribute("tr.domain", "data-status") == "uncovered"
    shot(page, "02-dashboard-uncovered")

    # 2. The guide's connector through the wizard.
    page.click("text=Connectors")
    shot(page, "03-connectors-empty")
    page.click("#add-connector")
    page.check("input[name=type][value=partner]")
    shot(page, "04-wizard-1-partner")
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='2']")
    page.fill("input[name=name]", "Third-party filter service")
    shot(page, "05-wizard-2-name")
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='3']")
    assert page.input_value("textarea[name=sender_domains]") == "*"
    shot(page, "06-wizard-3-domains")
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='4']")
    assert page.is_checked("input[name=require_tls][value=true]")
    page.check("input[name=restrict][value=ip]")
    page.fill("textarea[name=sender_ip_addresses]", GATEWAY)
    shot(page, "07-wizard-4-security")
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='5']")
    assert page.locator("#wizard-error").count() == 0
    review = page.inner_text("#review")
    assert "restrict_domains_to_ip_addresses\tTrue" in review and GATEWAY in review
    shot(page, "08-wizard-5-review")
    page.click("#create")
    page.wait_for_selector("tr[data-connector='Third-party filter service']")

    # 3. The running mailbox server refuses the bypass without a restart (how fast: bench P6).
    replies = []
    assert wait_until(lambda: replies.append(_probe_refused(n.port())) or replies[-1][0] == 550, timeout=30)
    assert "5.7.51 TenantInboundAttribution" in replies[-1][1]
    shot(page, "09-connectors-created")
    page.click("text=Dashboard")
    assert page.get_attribute("#lockdown", "data-locked") == "yes"
    shot(page, "10-dashboard-locked")

    # 4. Enhanced filtering: skip these IPs.
    page.click("text=Connectors")
    page.click("tr[data-connector='Third-party filter service'] >> text=off")
    page.check("input[name=mode][value=skip_ips]")
    page.fill("textarea[name=skip_ips]", GATEWAY)
    page.click("#ef-save")
    page.wait_for_selector("#flash")
    assert page.is_checked("input[name=mode][value=skip_ips]")
    shot(page, "11-enhanced-filtering")
    connector = n.node.policy_store.current().policy.inbound_connectors[0]
    assert connector.ef_skip_ips == (GATEWAY,) and not connector.ef_skip_last_ip
    version = n.node.policy_store.latest_version_number()
    assert wait_until(lambda: n.node.watcher.current.version == version, 1.0)  # changes apply within a second

    # 5. A delivered message in the trace, with its original IP.
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="news@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=_message("news@fabrikam.test", "Quarterly numbers"))
    assert r["end"][0] == 250, r
    assert n.trace.flush(timeout=60) and not n.trace.stats["journalled"]
    page.click("text=Message trace")
    page.fill("input[name=sender]", "news@fabrikam.test")
    page.click("#trace-filter button[type=submit]")
    row = page.locator("#trace-results tr[data-status=Delivered]")
    playwright.expect(row).to_have_count(1, timeout=30_000)  # the click does not wait for the page it loads
    assert row.locator(".original-ip").inner_text() == ORIGINAL_IP
    shot(page, "12-trace")
    row.locator("a").click()
    assert page.inner_text("#original-ip") == ORIGINAL_IP
    assert ORIGINAL_IP in page.inner_text("#received tr.chosen")
    assert "spf=pass" in page.inner_text("#auth")
    shot(page, "13-trace-detail")

    # 6. Quarantine: DMARC p=reject fails for a spoofed sender; release it into the Maildir.
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="ceo@spoofed.test", rcpts=["alice@contoso.test"],
                     data=_message("ceo@spoofed.test", "Wire transfer"))
    assert r["end"][0] == 250, r
    assert [m for m in maildir_messages(n.home, "alice@contoso.test") if b"Wire transfer" in m] == []
    page.click("text=Quarantine")
    item = page.locator("#quarantine tr", has_text="Wire transfer")
    item.locator("text=Preview").click()
    assert "Wire transfer" in page.inner_text("#preview")
    shot(page, "14-quarantine")
    page.locator("#quarantine tr", has_text="Wire transfer").locator("button.release").click()
    assert "Released" in page.inner_text("#flash")
    assert wait_until(lambda: any(b"Wire transfer" in m for m in maildir_messages(n.home, "alice@contoso.test")), 2)
    shot(page, "15-quarantine-released")

    # 7. Test lock-down: the verifier's table, with progress while it runs.
    page.click("text=Test lock-down")
    page.click("#run-verify")
    page.wait_for_selector("#verify-job[data-state=done]", timeout=30_000)
    assert page.inner_text("#verify-verdict").startswith("PASS")
    assert page.get_attribute("#verify-table tr[data-check=bypass]", "data-status") == "pass"
    shot(page, "16-test-lockdown")

    # 8. The remaining pages render for the screenshots.
    for nav, name, selector in (("Accepted domains", "17-domains", "#domains"), ("Mailboxes", "18-mailboxes", "#mailboxes"),
                                ("Queue", "19-queue", "#queue"), ("Policy history", "20-policy-history", "#versions")):
        page.click(f"header >> text={nav}")
        page.wait_for_selector(selector)
        shot(page, name)
    page.click("#versions a[href='/policy?version=2']")
    assert "+name = \"Third-party filter service\"" in page.inner_text("#diff")
    shot(page, "21-policy-diff")
    page.click("text=Dashboard")
    assert page.locator("#top-refused").inner_text().count(ATTACKER) == 1
    shot(page, "22-dashboard-after")
    page.click("text=Log out")
    assert page.url.startswith(url + "/login")
