"""Issue 18: MTA-STS (RFC 8461) — the TXT record, the policy fetched over HTTPS from
mta-sts.<domain> (a loopback HTTPS server with a test CA certificate, the name resolved through
the loopback DNS server), the mx patterns, the cache by id and max_age. Policy texts follow the
RFC's own example (§3.2)."""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest
import trustme

from rig import free_port
from mxgate.auth.dns import make_resolver
from mxgate.queue.mtasts import StsCache, StsError, StsPolicy, applies, mx_matches, parse_policy, parse_record

RFC_EXAMPLE = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n"


def test_record_and_policy_parsing():
    assert parse_record("v=STSv1; id=20160831085700Z;") == "20160831085700Z"  # §3.1's example
    for bad in ("v=STSv2; id=1", "id=1; v=STSv1", "v=STSv1;", "v=STSv1; id=no-dashes"):
        with pytest.raises(StsError):
            parse_record(bad)
    p = parse_policy(RFC_EXAMPLE)
    assert p.mode == "enforce" and p.max_age == 604800 and p.mx == ("mail.example.com", "*.example.net", "backupmx.example.com")
    for bad in ("version: STSv1\nmode: enforce\nmax_age: 10\n", "version: STSv1\nmode: sometimes\nmx: a\nmax_age: 1\n",
                "mode: enforce\nmx: a\nmax_age: 1\n", "version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999\n"):
        with pytest.raises(StsError):
            parse_policy(bad)


def test_mx_patterns_match_one_label_only():  # §4.1
    assert mx_matches("*.example.net", "mx1.example.net") and mx_matches("mail.example.com", "MAIL.example.com.")
    assert not mx_matches("*.example.net", "a.b.example.net") and not mx_matches("*.example.net", "example.net")
    enforce = parse_policy(RFC_EXAMPLE)
    assert applies(enforce, "mx1.example.net") == "require" and applies(enforce, "evil.example.org") == "skip"
    assert applies(StsPolicy("testing", ("a",), 1), "b") == "report" and applies(None, "x") == "none"


class _Handler(http.server.BaseHTTPRequestHandler):
    body = RFC_EXAMPLE.replace("example.com", "fabrikam.test")
    status = 200
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        data = self.body.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if self.path == "/.well-known/mta-sts.txt" else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def https_policy(dns):
    ca = trustme.CA()
    leaf = ca.issue_cert("mta-sts.fabrikam.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_ctx)
    port = free_port("127.0.0.1")
    handler = type("H", (_Handler,), {"hits": 0})
    httpd = http.server.HTTPServer(("127.0.0.1", port), handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    dns.add("mta-sts.fabrikam.test", "A", "127.0.0.1")
    dns.add("_mta-sts.fabrikam.test", "TXT", "v=STSv1; id=1;")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield handler, client_ctx, port
    httpd.shutdown()


class Clock:
    t = 1_800_000_000.0

    def __call__(self):
        return self.t


def test_policy_fetched_over_https_and_cached_by_id_and_max_age(dns, https_policy):
    handler, ctx, port = https_policy
    clock = Clock()
    cache = StsCache(make_resolver([dns.address], 2.0), context=ctx, port=port, timeout=3.0, clock=clock)
    p = cache.policy("fabrikam.test")
    assert p is not None and p.mode == "enforce" and "mail.fabrikam.test" in p.mx and p.id == "1"
    assert cache.policy("fabrikam.test") == p and handler.hits == 1  # same id: from the cache
    dns.remove("_mta-sts.fabrikam.test")
    dns.add("_mta-sts.fabrikam.test", "TXT", "v=STSv1; id=2;")
    handler.body = handler.body.replace("mode: enforce", "mode: testing")
    assert cache.policy("fabrikam.test").mode == "testing" and handler.hits == 2  # a new id: fetched again
    # the record gone: the unexpired policy stays (§3.3); after max_age, no policy
    dns.remove("_mta-sts.fabrikam.test")
    assert cache.policy("fabrikam.test").mode == "testing"
    clock.t += 604801
    assert cache.policy("fabrikam.test") is None


def test_a_policy_from_a_server_with_an_untrusted_certificate_is_no_policy(dns, https_policy):
    _handler, _ctx, port = https_policy
    strict = ssl.create_default_context()  # does not trust the test CA: like a forged policy host
    cache = StsCache(make_resolver([dns.address], 2.0), context=strict, port=port, timeout=3.0)
    assert cache.policy("fabrikam.test") is None


def test_a_non_200_answer_is_no_policy(dns, https_policy):
    handler, ctx, port = https_policy
    handler.status = 404
    assert StsCache(make_resolver([dns.address], 2.0), context=ctx, port=port, timeout=3.0).policy("fabrikam.test") is None
