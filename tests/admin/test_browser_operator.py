"""Issue 17: the operator's new pages in a real browser (Playwright driving Debian's Chromium)
against a real in-process node and the loopback DNS server: outbound connectors, a mailbox's
forwarding and password, app credentials, DKIM selector rotation, the gateway's checks, the
trace's pages, detail (client certificate) and CSV export, and Swagger UI. The Content-Security-
Policy is on throughout and the browser reports no violation. Every page is saved to
artifacts/screenshots/ (ops-*.png)."""

from __future__ import annotations

import time

import pytest

from adminkit import PASSWORD, start_admin_node
from mxgate.trace.store import TraceRecord
from test_browser import SHOTS, browser_page, shot  # noqa: F401 (browser_page is a fixture)

playwright = pytest.importorskip("playwright.sync_api")


def have_count(locator, n: int) -> None:
    """Wait until the page the last click loaded shows `n` matches. A click no longer waits for
    the navigation it starts (Playwright >= 1.45), and `count()` reads whatever document is there
    now: the old page, or the new one half parsed (a CI run under load saw 0 of 100 rows)."""
    playwright.expect(locator).to_have_count(n, timeout=30_000)


@pytest.fixture
def console(browser_page):  # noqa: F811
    """Every console error and CSP violation the pages cause."""
    seen: list[str] = []
    browser_page.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
    browser_page.on("pageerror", lambda e: seen.append(str(e)))
    return seen


def test_operator_pages_in_chromium(node_factory, dns, browser_page, console):  # noqa: F811
    n = start_admin_node(node_factory, dns={"servers": [dns.address], "timeout": 1.0})
    page, url = browser_page, n.admin_url
    page.on("dialog", lambda d: d.accept())  # data-confirm questions (admin.js)

    page.goto(url + "/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#lockdown")

    # Outbound connector: add through the form, see it listed, edit it.
    page.click("header >> text=Connectors")
    page.click("#add-outbound")
    page.fill("input[name=name]", "To Fabrikam")
    page.fill("textarea[name=recipient_domains]", "fabrikam.test")
    page.fill("textarea[name=smart_hosts]", "127.0.0.99:25")
    page.select_option("select[name=tls_settings]", "certificate_validation")
    shot(page, "ops-01-outbound-new")
    page.click("#outbound-save")
    row = page.locator("tr[data-outbound='To Fabrikam']")
    assert "127.0.0.99:25" in row.inner_text() and "saved" in page.inner_text("#flash")
    shot(page, "ops-02-outbound-listed")
    row.locator("text=Edit").click()
    page.fill("textarea[name=smart_hosts]", "")
    page.click("#outbound-save")
    have_count(page.locator("#form-error"), 1)  # neither smart hosts nor MX: the save refuses, on the form
    shot(page, "ops-03-outbound-error")

    # A mailbox: forwarding, then a submission password.
    page.click("header >> text=Mailboxes")
    page.locator("#mailboxes tr", has_text="alice@contoso.test").locator("text=Edit").click()
    page.fill("textarea[name=forward_to]", "bob@fabrikam.test")
    page.uncheck("input[name=keep_copy][value=true]")
    page.click("#mailbox-save")
    assert "saved" in page.inner_text("#flash")
    m = next(m for m in n.node.policy_store.current().policy.mailboxes if m.address == "alice@contoso.test")
    assert m.forward_to == ("bob@fabrikam.test",) and not m.keep_copy
    page.fill("input[name=password]", "a long password 1")
    page.fill("input[name=password2]", "a long password 1")
    page.click("#password-save")
    assert "password set" in page.inner_text("#flash") and "A password is set" in page.inner_text("#password-state")
    shot(page, "ops-04-mailbox")

    # App credentials: the secret is shown once.
    page.click("header >> text=App credentials")
    page.fill("#credential-form input[name=name]", "scanner")
    page.fill("#credential-form input[name=description]", "the copier")
    page.click("#credential-create")
    secret = page.inner_text("#secret-value").strip()
    assert len(secret) > 30 and page.locator("tr[data-login=scanner]").count() == 1
    shot(page, "ops-05-credential-created")
    page.click("header >> text=App credentials")
    assert secret not in page.content()
    page.locator("tr[data-login=scanner] button").click()
    assert "removed" in page.inner_text("#flash") and page.locator("tr[data-login=scanner]").count() == 0
    shot(page, "ops-06-credentials")

    # DKIM: publish a new selector, sign with it once DNS answers, retire the old one.
    from mxgate.auth.dkim_sign import ensure_key

    _pem, old_txt = ensure_key(n.home.keys, "contoso.test")  # the key the first message would make
    dns.add("mxgate._domainkey.contoso.test", "TXT", old_txt)
    page.click("header >> text=DKIM keys")
    section = page.locator("#dkim-contoso\\.test")
    section.locator("input[name=selector]").fill("s2027")
    section.locator("button.publish-new").click()
    assert "publish its TXT record" in page.inner_text("#flash")
    new_row = page.locator("#dkim-contoso\\.test tr[data-selector=s2027]")
    assert new_row.get_attribute("data-published") == "no"
    shot(page, "ops-07-dkim-published")
    new_row.locator("button.activate").click()
    assert "does not publish this key in DNS yet" in page.inner_text("#form-error")
    txt = page.locator("#dkim-contoso\\.test tr[data-selector=s2027] code.txt").inner_text().strip()
    dns.add("s2027._domainkey.contoso.test", "TXT", txt)
    page.click("header >> text=DKIM keys")
    assert new_row.get_attribute("data-published") == "yes"
    new_row.locator("button.activate").click()
    assert "now signs with" in page.inner_text("#flash") and new_row.get_attribute("data-active") == "yes"
    page.locator("#dkim-contoso\\.test tr[data-selector=mxgate] button.retire").click()
    assert "retired" in page.inner_text("#flash")
    have_count(page.locator("#dkim-contoso\\.test tr[data-selector=mxgate]"), 0)
    shot(page, "ops-08-dkim-rotated")

    # Gateway checks.
    page.click("header >> text=Gateway checks")
    form = page.locator("form.check-form[data-check=ratelimit]")
    form.locator("input[name=max_connections]").fill("30")
    form.locator("button").click()
    assert "saved" in page.inner_text("#flash")
    assert "max_connections" in page.inner_text("#checks-summary tr[data-check=ratelimit]")
    form = page.locator("form.check-form[data-check=greylist]")
    form.locator("input[name=action]").fill("explode")
    form.locator("button").click()
    assert "must be one of" in page.inner_text("#form-error")
    shot(page, "ops-09-checks")

    # Trace: pages beyond the first hundred, a readable detail with the client certificate, CSV.
    now = time.time()
    for i in range(130):
        n.trace.record(TraceRecord(
            trace_id=f"b{i:04d}", status="Rejected", sender=f"s{i}@partner.test", recipient="alice@contoso.test",
            from_ip="192.0.2.20", reason="connector-attribution", created_at=now - i,
            detail={"stage": "rcpt", "reply": "550 5.7.51 TenantInboundAttribution", "tls": "TLSv1.3",
                    "certificate": {"subject_cn": "", "dns_names": ["evil.example"], "spki_sha256": "ab" * 32,
                                    "issuer": "mxgate test CA", "not_after": "2027-01-01"}}))
    # every row committed (not journalled for later) before the page asks for them
    assert n.trace.flush(timeout=60) and not n.trace.stats["journalled"]
    page.click("header >> text=Message trace")
    page.fill("input[name=ip]", "192.0.2.20")
    page.click("#trace-filter button[type=submit]")
    have_count(page.locator("#trace-results tr[data-status=Rejected]"), 100)
    page.click("#next-page")
    have_count(page.locator("#trace-results tr[data-status=Rejected]"), 30)
    assert page.get_attribute("#trace-pager", "data-page") == "2"
    assert page.input_value("input[name=ip]") == "192.0.2.20"  # filled from the URL by admin.js, not the server
    shot(page, "ops-10-trace-page-2")
    with page.expect_download() as dl:
        page.click("#trace-csv")
    csv_text = open(dl.value.path(), encoding="utf-8").read()
    assert csv_text.count("\n") == 131 and "s129@partner.test" in csv_text
    page.locator("#trace-results tr a").first.click()
    assert page.inner_text("#certificate .cert-spki") == "ab" * 32 and "evil.example" in page.inner_text("#certificate")
    assert "{'" not in page.inner_text("#detail")
    shot(page, "ops-11-trace-detail-certificate")

    # Swagger UI, from local files.
    page.click("header >> text=API")
    try:
        page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    except Exception:
        raise AssertionError(f"Swagger UI did not render at {page.url}; console: {console}") from None
    assert "mxgate admin centre" in page.inner_text(".swagger-ui .info .title")
    page.locator(".opblock-summary-path", has_text="/api/v1/policy/validate").first.wait_for()
    shot(page, "ops-12-api-docs")

    assert not [c for c in console if "Content Security Policy" in c or "Refused to" in c], console
