"""Issue 11 must-show 1 (refusals) and 3: nothing but login, health and metrics is reachable
without authentication; CSRF on every form; login rate limit; logout; metrics move with mail;
the dashboard's lock-down status turns red when a domain is left uncovered."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import httpx

from adminkit import PASSWORD, csrf_from, login, start_admin_node
from mxgate import metrics
from mxgate.admin import guard
from rig import ATTACKER, GATEWAY, send_message, simple_message


def test_only_login_health_and_metrics_are_public(admin_node):
    c = httpx.Client(base_url=admin_node.admin_url)
    assert c.get("/healthz").text == "ok\n"
    assert c.get("/readyz").json()["ready"] is True
    assert c.get("/metrics").status_code == 200
    assert c.get("/login").status_code == 200
    for path in ("/", "/connectors", "/connectors/new", "/domains", "/mailboxes", "/trace", "/quarantine", "/queue",
                 "/verify", "/policy", "/trace/1"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    for path in ("/domains", "/policy/versions", "/trace", "/quarantine", "/queue", "/nodes", "/openapi.json"):
        assert c.get("/api/v1" + path).status_code == 401, path
    assert c.post("/api/v1/domains", json={"name": "x.test"}).status_code == 401
    assert c.post("/domains", data={"name": "x.test"}).status_code == 303  # to the login page, nothing changed
    assert admin_node.node.policy_store.latest_version_number() == 1


def test_metrics_can_require_authentication(node_factory):
    n = start_admin_node(node_factory, admin={"metrics_public": False})
    assert httpx.get(n.admin_url + "/metrics").status_code == 401
    c = login(n.admin_url)
    assert c.get("/metrics").status_code == 200


def test_csrf_required_on_every_form_and_session_api_write(admin_node):
    c = login(admin_node.admin_url)
    assert c.post("/domains", data={"name": "a.test"}).status_code == 403
    assert c.post("/domains", data={"name": "a.test", "csrf_token": "forged"}).status_code == 403
    assert c.post("/api/v1/domains", json={"name": "a.test"}).status_code == 403
    assert admin_node.node.policy_store.latest_version_number() == 1
    assert c.post("/domains", data={"name": "a.test", "csrf_token": c.csrf}).status_code == 303
    assert c.post("/api/v1/domains", json={"name": "b.test"}, headers={"X-CSRF-Token": c.csrf}).status_code == 201
    assert admin_node.node.policy_store.latest_version_number() == 3
    # The CSRF token belongs to the session: another admin's token does not work here.
    other = login(admin_node.admin_url)
    assert c.post("/domains", data={"name": "c.test", "csrf_token": other.csrf}).status_code == 403


def test_login_form_needs_its_own_token(admin_node):
    c = httpx.Client(base_url=admin_node.admin_url)
    r = c.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": "x"})
    assert r.status_code == 403 and "mxgate_session" not in r.cookies


def test_login_rate_limit_and_wrong_password(admin_node, monkeypatch):
    """Five wrong passwords, then the right one is refused with 429 — also when the guesses end
    just before a minute does and the next try comes just after. The limiter counts in wall-clock
    buckets of LOGIN_WINDOW; a sliding estimate weighted the old bucket by what was left of it
    (5 x 0.99 < 5) and let that try in. The clock is the test's, so it crosses a bucket's end."""
    window = guard.LOGIN_WINDOW
    now = [(int(time.time() // window) + 1) * window - 0.5]
    monkeypatch.setattr(guard, "time", SimpleNamespace(time=lambda: now[0], monotonic=time.monotonic))
    c = httpx.Client(base_url=admin_node.admin_url)
    for _ in range(5):
        token = csrf_from(c.get("/login").text)
        r = c.post("/login", data={"csrf_token": token, "username": "admin", "password": "wrong password!"})
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    now[0] += 1.0  # the next bucket
    token = csrf_from(c.get("/login").text)
    r = c.post("/login", data={"csrf_token": token, "username": "admin", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and "mxgate_session" not in r.cookies
    assert metrics.value("mxgate_admin_login_failures_total") >= 5


def test_logout_invalidates_the_cookie(admin_node):
    c = login(admin_node.admin_url)
    cookie = c.cookies.get("mxgate_session")
    assert c.post("/logout", data={"csrf_token": c.csrf}).headers["location"] == "/login"
    replay = httpx.Client(base_url=admin_node.admin_url, cookies={"mxgate_session": cookie})
    assert replay.get("/").status_code == 303
    assert replay.get("/api/v1/domains").status_code == 401


def test_tampered_cookie_is_refused(admin_node):
    c = login(admin_node.admin_url)
    cookie = c.cookies.get("mxgate_session")
    forged = httpx.Client(base_url=admin_node.admin_url, cookies={"mxgate_session": cookie[:-2] + "AA"})
    assert forged.get("/").status_code == 303


def _sample(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_metrics_move_as_mail_is_sent(admin_node):
    c = httpx.Client(base_url=admin_node.admin_url)
    before = c.get("/metrics").text
    for _ in range(2):
        r = send_message("127.0.0.1", admin_node.port(), source=GATEWAY, sender="s@fabrikam.test",
                         rcpts=["alice@contoso.test"], data=simple_message())
        assert r["end"][0] == 250
    send_message("127.0.0.1", admin_node.port(), source=ATTACKER, sender="s@fabrikam.test", rcpts=["bob@contoso.test"],
                 data=simple_message())
    after = c.get("/metrics").text
    for name, delta in (('mxgate_smtp_sessions_total{role="mailbox"}', 3), ('mxgate_messages_accepted_total{role="mailbox"}', 2),
                        ("mxgate_messages_delivered_total", 2),
                        ('mxgate_messages_refused_total{outcome="rejected",reason="connector-attribution",role="mailbox",stage="rcpt"}', 1)):
        assert _sample(after, name) - _sample(before, name) == delta, name
    assert _sample(after, "mxgate_policy_version") == 1
    assert 'mxgate_queue_depth{queue="incoming",spool="outbound"} 0.0' in after
    assert "mxgate_check_seconds_bucket" in after or "# TYPE mxgate_check_seconds histogram" in after


def test_dashboard_turns_red_when_a_domain_is_uncovered(admin_node):
    c = login(admin_node.admin_url)
    page = c.get("/").text
    assert 'class="lockdown ok"' in page and 'data-domain="contoso.test" data-status="covered"' in page
    assert c.post("/domains", data={"name": "fabrikam.example", "csrf_token": c.csrf}).status_code == 303
    # The guide's connector restricts every sender for every accepted domain: still covered.
    assert 'data-domain="fabrikam.example" data-status="covered"' in c.get("/").text
    api = {"X-CSRF-Token": c.csrf}
    r = c.patch("/api/v1/connectors/inbound/Third-party filter service", headers=api,
                json={"associated_accepted_domains": ["contoso.test"]})
    assert r.status_code == 200, r.text
    page = c.get("/").text
    assert 'class="lockdown bad"' in page and 'data-domain="fabrikam.example" data-status="uncovered"' in page
    assert 'data-domain="contoso.test" data-status="covered"' in page


def test_metrics_report_the_trace_size(admin_node):
    """Issue 15: the trace's row count (and any rows waiting in the local journal) is a metric."""
    r = send_message("127.0.0.1", admin_node.port(), source=ATTACKER, sender="a@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message())
    assert r["rcpt"][0][0] == 550
    admin_node.trace.flush()
    text = httpx.get(admin_node.admin_url + "/metrics").text
    rows = float(re.search(r"^mxgate_trace_rows (\S+)$", text, re.M).group(1))
    assert rows == admin_node.trace.count_rows() >= 1
    assert re.search(r"^mxgate_trace_journal_pending 0\.0$", text, re.M)
