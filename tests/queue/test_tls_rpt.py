"""Issue 18: TLS-RPT (RFC 8460) — a failed STARTTLS to a domain that requires TLS is recorded by
the outbound runner from a real relay attempt, and `mxgate tls-rpt report` prints the §4.4 JSON."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

from rig import RecordingSink
from mxgate.queue.outbound import Route, RoutingRunner, tls_context_for
from mxgate.queue.relay import RelaySettings, relay
from mxgate.queue.tlsrpt import TlsReports, TlsResult, build_report, classify


def test_report_json_follows_rfc_8460():
    results = [TlsResult("fabrikam.test", "no-policy-found", True, receiving_ip="127.0.0.88"),
               TlsResult("fabrikam.test", "no-policy-found", False, "starttls-not-supported", "mx.fabrikam.test",
                         "127.0.0.88", "127.0.0.10"),
               TlsResult("fabrikam.test", "sts", False, "certificate-host-mismatch", "mx.fabrikam.test", "127.0.0.88",
                         "127.0.0.10", ("version: STSv1", "mode: enforce"))]
    r = build_report(results, domain="fabrikam.test", day="2026-12-01", organization="Contoso", contact="tls@contoso.test",
                     report_id="x")
    assert r["date-range"] == {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"}
    by_type = {p["policy"]["policy-type"]: p for p in r["policies"]}
    assert by_type["no-policy-found"]["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 1}
    assert by_type["no-policy-found"]["failure-details"][0]["result-type"] == "starttls-not-supported"
    assert by_type["sts"]["policy"]["policy-string"] == ["version: STSv1", "mode: enforce"]
    assert classify("127.0.0.1:25: STARTTLS not offered (required)") == "starttls-not-supported"


def test_a_refused_starttls_is_recorded_and_reported_by_the_cli(test_ca, tmp_path):
    sink = RecordingSink(test_ca["server_cert"], test_ca["server_key"])
    sink.offer_starttls = False
    try:
        settings = RelaySettings((sink.address,), tls_context_for("encryption_only", None), require_tls=True)
        result = asyncio.run(relay(settings, "a@contoso.test", ["b@fabrikam.test"], b"Subject: x\r\n\r\nx\r\n"))
    finally:
        sink.close()
    home = tmp_path / "home"
    runner = SimpleNamespace(tls_reports=TlsReports(home / "spool" / "tls-rpt"), base=settings)
    RoutingRunner._report_tls(runner, Route("relay", "mx:fabrikam.test", (sink.address,), require_tls=True),
                              ["b@fabrikam.test"], result)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    out = subprocess.run([sys.executable, "-m", "mxgate", "tls-rpt", "report", "--domain", "fabrikam.test", "--day", day,
                          "--org", "Contoso"], capture_output=True, text=True, env=dict(os.environ, MXGATE_HOME=str(home)))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    [policy] = report["policies"]
    assert policy["summary"]["total-failure-session-count"] == 1
    assert policy["failure-details"][0]["result-type"] == "starttls-not-supported"
    bad = subprocess.run([sys.executable, "-m", "mxgate", "tls-rpt", "report", "--domain", "x", "--day", "yesterday"],
                         capture_output=True, text=True, env=dict(os.environ, MXGATE_HOME=str(home)))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
