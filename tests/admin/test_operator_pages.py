"""Issue 17, the admin centre covers the job: outbound connectors, a mailbox's forwarding,
members and password, app credentials, DKIM selector rotation, the gateway's checks; a readable
trace with pagination, CSV export and the client certificate of a refused session; the REST API
for whole policy documents, credentials and checks, and its Swagger UI (local files, behind
authentication). Real node, real HTTP; the browser journey is test_browser_operator.py."""

from __future__ import annotations

import csv
import io
import re
import time

import httpx
import pytest

from adminkit import login, start_admin_node
from mxgate.admin import manage
from mxgate.auth.credentials import verify_credentials
from mxgate.auth.dkim import verify_dkim
from mxgate.auth.dkim_sign import DkimSigner
from mxgate.auth.dns import dnsfunc_for, make_resolver
from mxgate.server.tls import spki_sha256_of_file
from mxgate.trace.store import TraceRecord
from rig import PARTNER, send_message, simple_message


@pytest.fixture
def web(admin_node):
    return login(admin_node.admin_url)


def _policy(node):
    return node.node.policy_store.current().policy


def test_outbound_connector_pages(admin_node, web):
    form = {"csrf_token": web.csrf, "original": "", "name": "To Fabrikam", "type": "partner", "enabled": ["false", "true"],
            "recipient_domains": "fabrikam.test", "route": "smart_hosts", "smart_hosts": "127.0.0.99:25",
            "tls_settings": "domain_validation", "tls_domain": "mx.fabrikam.test"}
    r = web.post("/connectors/outbound", data=form)
    assert r.status_code == 303, r.text
    [c] = _policy(admin_node).outbound_connectors
    assert (c.name, c.recipient_domains, c.smart_hosts, c.tls_domain) == ("To Fabrikam", ("fabrikam.test",),
                                                                         ("127.0.0.99:25",), "mx.fabrikam.test")
    page = web.get("/connectors").text
    assert 'data-outbound="To Fabrikam"' in page and "Outbound connector &#39;To Fabrikam&#39; saved" in page
    assert 'value="mx.fabrikam.test"' in web.get("/connectors/outbound/To Fabrikam/edit").text
    # A wrong value is refused with the CLI's message, on the form, nothing stored.
    bad = web.post("/connectors/outbound", data=form | {"original": "To Fabrikam", "tls_settings": "whatever"})
    assert bad.status_code == 422 and 'id="form-error"' in bad.text and "tls_settings" in bad.text
    assert web.post("/connectors/outbound/To Fabrikam/remove", data={"csrf_token": web.csrf}).status_code == 303
    assert _policy(admin_node).outbound_connectors == ()


def test_mailbox_forwarding_members_and_password(admin_node, web):
    r = web.post("/mailboxes/alice@contoso.test/edit",
                 data={"csrf_token": web.csrf, "aliases": "alice.smith@contoso.test", "forward_to": "bob@fabrikam.test",
                       "keep_copy": ["false"], "members": "", "send_as": "sales@contoso.test"})
    assert r.status_code == 303, r.text
    m = next(m for m in _policy(admin_node).mailboxes if m.address == "alice@contoso.test")
    assert (m.forward_to, m.keep_copy, m.send_as) == (("bob@fabrikam.test",), False, ("sales@contoso.test",))
    bad = web.post("/mailboxes/alice@contoso.test/password", data={"csrf_token": web.csrf, "password": "a long password 1",
                                                                    "password2": "different"})
    assert bad.status_code == 422 and "differ" in bad.text
    ok = web.post("/mailboxes/alice@contoso.test/password", data={"csrf_token": web.csrf, "password": "a long password 1",
                                                                   "password2": "a long password 1"})
    assert ok.status_code == 303
    assert verify_credentials(admin_node.node.engine, "alice@contoso.test", "a long password 1") is not None
    assert "A password is set" in web.get("/mailboxes/alice@contoso.test/edit").text
    # A distribution list: members saved, and no password form.
    web.post("/mailboxes", data={"csrf_token": web.csrf, "address": "team@contoso.test"})
    r = web.post("/mailboxes/team@contoso.test/edit", data={"csrf_token": web.csrf, "members": "alice@contoso.test",
                                                             "keep_copy": ["false", "true"]})
    assert r.status_code == 303
    assert 'id="password-form"' not in web.get("/mailboxes/team@contoso.test/edit").text


def test_app_credentials_page(admin_node, web):
    r = web.post("/credentials", data={"csrf_token": web.csrf, "name": "Scanner", "address": "alice@contoso.test",
                                       "description": "the copier"})
    assert r.status_code == 201
    secret = re.search(r'<pre id="secret-value">([^<]+)</pre>', r.text).group(1)
    assert verify_credentials(admin_node.node.engine, "scanner", secret) is not None
    page = web.get("/credentials").text
    assert 'data-login="scanner"' in page and secret not in page  # shown once
    bad = web.post("/credentials", data={"csrf_token": web.csrf, "name": "x@y", "address": "alice@contoso.test"})
    assert bad.status_code == 422 and "must not look like an address" in bad.text
    assert web.post("/credentials/scanner/remove", data={"csrf_token": web.csrf}).status_code == 303
    assert verify_credentials(admin_node.node.engine, "scanner", secret) is None


def test_dkim_selector_rotation(node_factory, dns):
    n = start_admin_node(node_factory, dns={"servers": [dns.address], "timeout": 1.0})
    web = login(n.admin_url)
    keyring = n.node.keyring  # the cluster's keys (store/keys.py): what every node signs with
    signer = DkimSigner(n.home.keys, keyring=keyring)
    message = simple_message("rotation", sender="alice@contoso.test", to="x@fabrikam.test")
    ours = lambda d: d == "contoso.test"  # noqa: E731
    first = signer.sign(message, "alice@contoso.test", ours)  # the first message makes the default key
    assert b"s=mxgate;" in first
    [old] = manage.dkim_keys(_state(n))
    dns.add(old["dns_name"], "TXT", old["txt"])

    # 1. Publish a new selector: a key, nothing signs with it yet.
    r = web.post("/dkim/contoso.test/publish", data={"csrf_token": web.csrf, "selector": "s2027"})
    assert r.status_code == 303, r.text
    page = web.get("/dkim").text
    assert 'data-selector="s2027" data-active="no" data-published="no"' in page
    assert b"s=mxgate;" in signer.sign(message, "alice@contoso.test", ours)
    # 2. Signing with it before DNS has it is refused (every signature would fail).
    r = web.post("/dkim/contoso.test/activate", data={"csrf_token": web.csrf, "selector": "s2027"})
    assert r.status_code == 422 and "does not publish this key in DNS yet" in r.text
    new = next(k for k in manage.dkim_keys(_state(n)) if k["selector"] == "s2027")
    dns.add(new["dns_name"], "TXT", new["txt"])
    r = web.post("/dkim/contoso.test/activate", data={"csrf_token": web.csrf, "selector": "s2027"})
    assert r.status_code == 303
    assert keyring.dkim("contoso.test")[0] == "s2027"
    signed = signer.sign(message, "alice@contoso.test", ours)
    assert b"s=s2027;" in signed
    verdict = verify_dkim(signed, dnsfunc_for(make_resolver([dns.address], 1.0)))
    assert [v.result for v in verdict] == ["pass"], verdict
    # 3. Retire the old key; the active one cannot be retired.
    r = web.post("/dkim/contoso.test/retire", data={"csrf_token": web.csrf, "selector": "s2027"})
    assert r.status_code == 422 and "signs contoso.test" in r.text
    assert web.post("/dkim/contoso.test/retire", data={"csrf_token": web.csrf, "selector": "mxgate"}).status_code == 303
    assert [k["selector"] for k in manage.dkim_keys(_state(n))] == ["s2027"]
    # Not our domain, or not a selector: clear errors.
    assert "not an accepted domain" in web.post("/dkim/evil.test/publish", data={"csrf_token": web.csrf,
                                                                              "selector": "a"}).text
    assert "not one DNS label" in web.post("/dkim/contoso.test/publish", data={"csrf_token": web.csrf,
                                                                            "selector": "../x"}).text


def _state(n):
    return n.node.extras[-1].state


def test_gateway_checks_page(admin_node, web):
    page = web.get("/checks").text
    assert 'data-check="ratelimit"' in page and 'name="max_connections" value="120"' in page
    r = web.post("/checks/ratelimit", data={"csrf_token": web.csrf, "action": "tempfail", "max_connections": "5",
                                            "window": "60.0"})
    assert r.status_code == 303, r.text
    assert _policy(admin_node).gateway.check("ratelimit") == {"max_connections": 5}  # defaults are not stored
    assert "<strong>max_connections</strong>" in web.get("/checks").text
    bad = web.post("/checks/ratelimit", data={"csrf_token": web.csrf, "action": "explode"})
    assert bad.status_code == 422 and "must be one of" in bad.text
    bad = web.post("/checks/ratelimit", data={"csrf_token": web.csrf, "max_connections": "lots"})
    assert bad.status_code == 422 and "is not a int" in bad.text
    assert _policy(admin_node).gateway.check("ratelimit") == {"max_connections": 5}


def test_trace_detail_readable_paginated_and_csv(admin_node, web):
    trace = admin_node.node.trace
    now = time.time()
    for i in range(250):
        trace.record(TraceRecord(trace_id=f"p{i:04d}", status="Rejected", sender=f"s{i}@fabrikam.test",
                                 recipient="alice@contoso.test", subject="=HYPERLINK(\"http://x\")" if i == 0 else f"m{i}",
                                 from_ip="192.0.2.9", reason="connector-attribution", created_at=now - i,
                                 detail={"stage": "rcpt", "checks": {"spf": {"result": "fail", "fired": True}},
                                         "hops": ["a", "b"], "tls": None}))
    trace.flush()
    p1 = web.get("/trace?ip=192.0.2.9").text
    assert p1.count('data-status="Rejected"') == 100 and 'id="next-page"' in p1 and 'id="prev-page"' not in p1
    p3 = web.get("/trace?ip=192.0.2.9&page=3").text
    assert p3.count('data-status="Rejected"') == 50 and 'id="next-page"' not in p3 and "rows 201–250" in p3
    assert "s249@fabrikam.test" in p3 and "s0@fabrikam.test" not in p3
    r = web.get("/trace.csv?ip=192.0.2.9")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:3] == ["id", "created_at", "status"] and len(rows) == 251
    assert rows[1][6] == "'=HYPERLINK(\"http://x\")"  # no formula in a spreadsheet
    row_id = trace.search(ip="192.0.2.9", limit=1)[0]["id"]
    detail = web.get(f"/trace/{row_id}").text
    assert "{'" not in detail and "&#39;:" not in detail  # no dict repr
    assert "checks.spf.result" in detail.replace("_", " ") and "hops</th><td>a, b" in detail and "<td>—</td>" in detail


def test_trace_shows_the_certificate_a_refused_session_presented(node_factory, test_ca):
    pin = spki_sha256_of_file(test_ca["gateway.partner.test"][0])
    policy = f"""
[[accepted_domain]]
name = "contoso.test"
[[mailbox]]
address = "alice@contoso.test"
[[inbound_connector]]
name = "Partner by certificate"
sender_domains = ["*"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "gateway.partner.test"
tls_sender_certificate_fingerprints = ["{pin}"]
"""
    n = start_admin_node(node_factory, policy, mailbox={"client_ca": test_ca["ca"], "tls_cert": test_ca["server_cert"],
                                                        "tls_key": test_ca["server_key"]})
    cert, key = test_ca["evil.example"]
    r = send_message("127.0.0.1", n.port(), source=PARTNER, sender="x@partner.test", rcpts=["alice@contoso.test"],
                     data=simple_message(), ca=test_ca["ca"], cert=cert, key=key)
    assert r["rcpt"][0][0] == 550
    n.trace.flush()
    row = n.trace.search(ip=PARTNER, limit=1)[0]
    page = login(n.admin_url).get(f"/trace/{row['id']}").text
    evil_pin = spki_sha256_of_file(cert)
    assert "evil.example" in page.split('id="certificate"')[1].split("</table>")[0], page
    assert evil_pin in page and evil_pin != pin


def test_api_whole_policy_document(admin_node, api):
    from mxgate.policy.document import dump_toml

    current = admin_node.node.policy_store.current()
    doc = dump_toml(current.policy).replace('name = "contoso.test"', 'name = "contoso.test"\n\n[[accepted_domain]]\nname = "new.test"', 1)
    r = api.post("/policy/validate", json={"toml": doc})
    assert r.status_code == 200 and r.json()["valid"] and '+name = "new.test"' in r.json()["diff"]
    bad = api.post("/policy/validate", json={"toml": doc.replace('name = "new.test"', 'name = "not a domain"')})
    assert bad.status_code == 200 and not bad.json()["valid"] and bad.json()["issues"]
    assert api.post("/policy/diff", json={"toml": doc}).json()["base_version"] == current.version
    stale = api.put("/policy", json={"toml": doc, "base_version": current.version - 1 if current.version > 1 else 99})
    assert stale.status_code == 409
    r = api.put("/policy", json={"toml": doc, "base_version": current.version})
    assert r.status_code == 200 and r.json()["version"] == current.version + 1
    assert any(d.name == "new.test" for d in _policy(admin_node).accepted_domains)
    assert api.put("/policy", json={"toml": doc}).json()["summary"] == "no change"
    assert api.put("/policy", json={"toml": "[[accepted_domain]]\nname = 7"}).status_code == 422
    # The JSON form round-trips too.
    as_json = api.get(f"/policy/versions/{current.version + 1}").json()["policy"]
    assert api.post("/policy/validate", json=as_json).json()["valid"]


def test_api_credentials_and_checks(admin_node, api):
    r = api.post("/credentials", json={"name": "ci-app", "address": "alice@contoso.test"})
    assert r.status_code == 201 and len(r.json()["secret"]) > 30
    assert any(c["username"] == "ci-app" and "secret" not in c for c in api.get("/credentials").json())
    assert api.put("/mailboxes/alice@contoso.test/password", json={"password": "short"}).status_code == 422
    assert api.put("/mailboxes/alice@contoso.test/password", json={"password": "long enough pass"}).status_code == 204
    assert api.delete("/credentials/ci-app").status_code == 200
    assert api.delete("/credentials/ci-app").status_code == 404
    checks = {c["name"]: c for c in api.get("/gateway/checks").json()}
    assert checks["greylist"]["action"] == "off"
    r = api.patch("/gateway/checks/greylist", json={"action": "tempfail", "delay": 60.0})
    assert r.status_code == 200 and r.json()["object"]["values"]["delay"] == 60.0
    assert api.patch("/gateway/checks/greylist", json={"delay": -1.0}).status_code == 422
    assert api.put("/gateway/checks/greylist", json={}).json()["object"]["set"] == []
    assert api.put("/gateway/checks/nosuch", json={}).status_code == 422


def test_api_docs_are_local_and_need_authentication(admin_node, api, web):
    anon = httpx.Client(base_url=admin_node.admin_url)
    assert anon.get("/api/v1/docs").status_code == 401
    page = web.get("/api/v1/docs")
    assert page.status_code == 200 and "http" not in page.text.replace("http-equiv", "")  # nothing external
    assert "<script>" not in page.text
    css = web.get("/api/v1/docs/assets/swagger-ui.css")
    js = web.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert css.status_code == js.status_code == 200 and len(js.content) > 100_000
    assert web.get("/api/v1/docs/assets/..%2f..%2fsecrets").status_code == 404
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/v1/policy", "/api/v1/policy/validate", "/api/v1/credentials", "/api/v1/gateway/checks/{name}",
            "/api/v1/dkim/{domain}/{selector}/activate"} <= set(paths)


def test_the_wizard_step_field_is_not_trusted(admin_node, web):
    """The connector wizard's hidden `step` went through int(): "", "abc" or "1e3" (a hand-made
    or truncated form post) was a 500; 99 rendered a step that does not exist. The step is read
    as the wizard's own, 1 to 5, and the page answers (session 10, from outside)."""
    steps = {}
    for step in ("", "abc", "1e3", "99", "-5", "3"):
        with httpx.Client(base_url=admin_node.admin_url, cookies=web.cookies, timeout=10) as c:
            r = c.post("/connectors/wizard", data={"csrf_token": web.csrf, "step": step, "action": "next", "name": "W"})
        assert r.status_code == 200, (step, r.status_code)
        steps[step] = int(re.search(r'id="wizard" data-step="(\d+)"', r.text).group(1))
    assert steps == {"": 2, "abc": 2, "1e3": 2, "99": 5, "-5": 2, "3": 4}
