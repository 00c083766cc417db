"""Issue 21, certificates that renew themselves in place.

An ACME client replaces the listener's certificate and key files; new handshakes get the new
pair without a restart while a session already in TLS carries on; a broken new pair is refused
with a log line and the old one stays. `mxgate tls status` shows certificate, expiry and pin;
/metrics exposes the days to expiry. Real TLS handshakes on loopback; the check is triggered
directly (node.check_certificates, or SIGHUP on a real process), never by sleeping."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

import rig
from rig import GATEWAY, RawSMTP, free_port, wait_port, wait_until
from mxgate import metrics
from mxgate.config.home import Home
from mxgate.server.tls import peer_certificate, spki_sha256_of_file


def _install(pair: tuple[str, str], live: Path) -> None:
    """What certbot's deploy hook or lego does: replace both files (each atomically)."""
    for src, name in zip(pair, ("cert.pem", "key.pem")):
        tmp = live / f".{name}.new"
        shutil.copyfile(src, tmp)
        os.replace(tmp, live / name)


def _issue(test_ca, tmp_path: Path, stem: str, **extra) -> tuple[str, str]:
    leaf = test_ca["ca_obj"].issue_cert("localhost", "127.0.0.1", "::1", "mx.contoso.test", **extra)
    cert, key = tmp_path / f"{stem}.pem", tmp_path / f"{stem}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def _served_pin(port: int, ca: str, host: str = "127.0.0.1") -> str:
    with RawSMTP(host, port, GATEWAY if host == "127.0.0.1" else rig.INTERNET) as c:
        c.greeting(); c.cmd("EHLO gw.test")
        assert c.starttls(ca)[0] == 220
        return peer_certificate(c.sock.getpeercert(binary_form=True)).spki_sha256


@pytest.fixture
def live(tmp_path, test_ca):
    d = tmp_path / "live"
    d.mkdir()
    _install((test_ca["server_cert"], test_ca["server_key"]), d)
    return d


def _node(node_factory, live: Path, **node):
    return node_factory(mailbox={"tls_cert": str(live / "cert.pem"), "tls_key": str(live / "key.pem")},
                        node={"tls_check_interval": 3600.0, **node})


def test_renewed_pair_serves_new_handshakes_and_open_sessions_carry_on(node_factory, live, test_ca, tmp_path):
    n = _node(node_factory, live)
    port = n.port()
    old_pin = spki_sha256_of_file(test_ca["server_cert"])
    assert _served_pin(port, test_ca["ca"]) == old_pin
    # A session already in TLS before the renewal.
    open_session = RawSMTP("127.0.0.1", port, GATEWAY)
    open_session.greeting(); open_session.cmd("EHLO gw.test"); open_session.starttls(test_ca["ca"]); open_session.cmd("EHLO gw.test")

    renewed = _issue(test_ca, tmp_path, "renewed")
    _install(renewed, live)
    assert n.node.check_certificates() == {"mailbox": "reloaded"}
    new_pin = spki_sha256_of_file(renewed[0])
    assert new_pin != old_pin and _served_pin(port, test_ca["ca"]) == new_pin
    assert n.node.check_certificates() == {"mailbox": "unchanged"}

    # The open session was not dropped: it still delivers, over the pair it negotiated.
    assert peer_certificate(open_session.sock.getpeercert(binary_form=True)).spki_sha256 == old_pin
    assert open_session.cmd("MAIL FROM:<gw@fabrikam.test>")[0] == 250
    assert open_session.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
    assert open_session.cmd("DATA")[0] == 354
    open_session.send(rig.simple_message(subject="across renewal") + b".\r\n")
    assert open_session.read_reply()[0] == 250
    open_session.close()
    assert any(b"across renewal" in m for m in rig.maildir_messages(n.home, "alice@contoso.test"))

    # /metrics: days to expiry of what is served now.
    text = metrics.render()[0].decode()
    line = next(l for l in text.splitlines() if l.startswith('mxgate_tls_certificate_expiry_days{certificate="mailbox"}'))
    expected = n.node.tls["mailbox"].info.days_left()
    assert abs(float(line.split()[-1]) - expected) < 1, line


@pytest.mark.parametrize("breakage", ["key-of-another-certificate", "truncated-certificate", "expired", "key-missing"])
def test_broken_new_pair_is_refused_with_a_log_line_and_the_old_one_kept(node_factory, live, test_ca, tmp_path, caplog, breakage):
    n = _node(node_factory, live)
    port = n.port()
    old_pin = spki_sha256_of_file(test_ca["server_cert"])
    good = _issue(test_ca, tmp_path, "good")
    if breakage == "key-of-another-certificate":
        other = _issue(test_ca, tmp_path, "other")
        _install((good[0], other[1]), live)
    elif breakage == "truncated-certificate":
        half = tmp_path / "half.pem"
        half.write_bytes(Path(good[0]).read_bytes()[:200])  # an ACME client caught mid-write
        _install((str(half), good[1]), live)
    elif breakage == "expired":
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
        expired = _issue(test_ca, tmp_path, "expired", not_before=past - dt.timedelta(days=90), not_after=past)
        _install(expired, live)
    else:
        (live / "key.pem").unlink()
    with caplog.at_level(logging.INFO, logger="mxgate.tls"):
        assert n.node.check_certificates() == {"mailbox": "refused"}
        assert n.node.check_certificates() == {"mailbox": "refused"}  # same files: not logged again
    refused = [r for r in caplog.records if getattr(r, "reason", "") == "tls-certificate-refused"]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR, caplog.text
    assert "still serving" in refused[0].getMessage() and "PRIVATE KEY" not in caplog.text
    assert _served_pin(port, test_ca["ca"]) == old_pin
    # Fixed files (the renewal completed): the next check loads them.
    _install(good, live)
    assert n.node.check_certificates() == {"mailbox": "reloaded"}
    assert _served_pin(port, test_ca["ca"]) == spki_sha256_of_file(good[0])


def test_the_watcher_polls_the_files_by_itself(node_factory, live, test_ca, tmp_path):
    n = _node(node_factory, live, tls_check_interval=0.05)
    renewed = _issue(test_ca, tmp_path, "polled")
    _install(renewed, live)
    pin = spki_sha256_of_file(renewed[0])
    assert wait_until(lambda: n.node.tls["mailbox"].info.spki_sha256 == pin, timeout=10)
    assert _served_pin(n.port(), test_ca["ca"]) == pin


def _cli(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MXGATE_HOME=str(home), MXGATE_CONFIG=str(config))
    return subprocess.run([sys.executable, "-m", "mxgate", *args], capture_output=True, text=True, env=env, timeout=60)


def _two_process_node(tmp_path: Path, live: Path):
    """A real `mxgate serve` with one worker sharing the mailbox listener, its certificate pair
    in `live`, the poll interval an hour (only SIGHUP or a check loads a renewed pair)."""
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ntls_check_interval = 3600\nworkers = 2\n[roles]\nadmin = false\n'
                      f'[mailbox]\nlisten = ["127.0.0.1:{port}"]\n'
                      f'tls_cert = "{live / "cert.pem"}"\ntls_key = "{live / "key.pem"}"\n')
    return home, config, port, rig.SubprocessNode(home, config).start(wait_for=("127.0.0.1", port))


def test_sighup_reloads_a_real_process_and_tls_status_shows_the_pin(tmp_path, live, test_ca):
    home, config, port, node = _two_process_node(tmp_path, live)
    try:
        def alive() -> set[str]:
            r = _cli(home, config, "status", "--json")
            return {n["name"] for n in json.loads(r.stdout)["nodes"] if n["alive"]} if r.returncode == 0 else set()

        assert wait_until(lambda: alive() == {"node1", "node1-w1"}, timeout=20)  # the worker loaded the old pair
        old_pin = spki_sha256_of_file(test_ca["server_cert"])
        r = _cli(home, config, "tls", "status", "--live", "--json")
        assert r.returncode == 0, r.stderr
        row = json.loads(r.stdout)["listeners"][0]
        assert row["listener"] == "mailbox" and row["spki_sha256"] == old_pin == row["served_spki_sha256"]
        not_after = x509.load_pem_x509_certificate(Path(test_ca["server_cert"]).read_bytes()).not_valid_after_utc
        assert row["not_after"] == not_after.isoformat()
        assert abs(row["days_left"] - (not_after - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400) < 1

        renewed = _issue(test_ca, tmp_path, "hup")
        _install(renewed, live)
        new_pin = spki_sha256_of_file(renewed[0])
        # The files changed but the node was not told yet: status shows the mismatch.
        row = json.loads(_cli(home, config, "tls", "status", "--live", "--json").stdout)["listeners"][0]
        assert row["spki_sha256"] == new_pin and row["served_spki_sha256"] == old_pin
        node.proc.send_signal(signal.SIGHUP)  # what `systemctl reload mxgate` does: the main process only
        assert wait_until(lambda: _served_pin(port, test_ca["ca"]) == new_pin, timeout=15)
        # The worker was told too: every connection, whichever process the kernel hands it to, gets
        # the new pair (the poll interval is an hour, so nothing else could have loaded it).
        assert wait_until(lambda: all(_served_pin(port, test_ca["ca"]) == new_pin for _ in range(20)), timeout=15)
        assert node.proc.poll() is None  # SIGHUP reloads, it does not stop the node
        table = _cli(home, config, "tls", "status", "--live")
        assert table.returncode == 0 and new_pin in table.stdout and "same" in table.stdout, table.stdout
        assert "loaded the renewed certificate" in node.log.read_text()
    finally:
        node.stop()


def test_sighup_reaches_the_gateway_workers_too(tmp_path, live, test_ca):
    """Issue 19: the gateway's port is served by every process of the node; `systemctl reload`
    (SIGHUP to the first process) must renew the certificate in all of them."""
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port(GATEWAY)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "gw"\ntls_check_interval = 3600\nworkers = 2\n'
                      f'[roles]\nmailbox = false\ngateway = true\nadmin = false\n'
                      f'[gateway]\nlisten = ["{GATEWAY}:{port}"]\ndownstream = ["127.0.0.1:{free_port()}"]\n'
                      f'tls_cert = "{live / "cert.pem"}"\ntls_key = "{live / "key.pem"}"\n')
    node = rig.SubprocessNode(home, config).start(wait_for=(GATEWAY, port))
    try:
        def serving() -> set[str]:
            r = _cli(home, config, "status", "--json")
            return ({n["name"] for n in json.loads(r.stdout)["nodes"] if n["alive"] and "gateway" in n["roles"]}
                    if r.returncode == 0 else set())

        assert wait_until(lambda: serving() == {"gw", "gw-w1"}, timeout=30), node.log.read_text()[-2000:]
        old_pin = spki_sha256_of_file(test_ca["server_cert"])
        assert _served_pin(port, test_ca["ca"], GATEWAY) == old_pin
        renewed = _issue(test_ca, tmp_path, "hup-gw")
        _install(renewed, live)
        new_pin = spki_sha256_of_file(renewed[0])
        node.proc.send_signal(signal.SIGHUP)
        # Every connection, whichever process the kernel hands it to, gets the new pair (the poll
        # interval is an hour: only the forwarded SIGHUP can have loaded it in the worker).
        assert wait_until(lambda: all(_served_pin(port, test_ca["ca"], GATEWAY) == new_pin for _ in range(20)),
                          timeout=15)
        assert node.proc.poll() is None
    finally:
        node.stop()


def _https_pin(host: str, port: int, sni: str | None) -> str:
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=sni) as tls:
        return peer_certificate(tls.getpeercert(binary_form=True)).spki_sha256


def test_admin_https_certificate_renews_in_place_too(node_factory, live, test_ca, tmp_path):
    port = free_port()
    n = node_factory(roles={"admin": True}, node={"tls_check_interval": 3600.0},
                     admin={"listen": f"127.0.0.1:{port}", "tls_cert": str(live / "cert.pem"), "tls_key": str(live / "key.pem")})
    old_pin = spki_sha256_of_file(test_ca["server_cert"])
    assert _https_pin("127.0.0.1", port, None) == old_pin == _https_pin("127.0.0.1", port, "localhost")
    renewed = _issue(test_ca, tmp_path, "admin-renewed")
    _install(renewed, live)
    assert n.node.check_certificates()["admin"] == "reloaded"
    new_pin = spki_sha256_of_file(renewed[0])
    # With and without SNI (a browser sends it; a client connecting by address does not).
    assert _https_pin("127.0.0.1", port, None) == new_pin == _https_pin("127.0.0.1", port, "localhost")
    import httpx

    import ssl

    r = httpx.get(f"https://127.0.0.1:{port}/login", verify=ssl.create_default_context(cafile=test_ca["ca"]), timeout=10)
    assert r.status_code == 200
    # `mxgate tls status --live` lists the admin centre beside the SMTP listeners.
    env = dict(os.environ, MXGATE_HOME=str(n.home.root), MXGATE_ROLES__ADMIN="true",
               MXGATE_MAILBOX__LISTEN=f'["127.0.0.1:{n.port()}"]', MXGATE_ADMIN__LISTEN=f"127.0.0.1:{port}",
               MXGATE_ADMIN__TLS_CERT=str(live / "cert.pem"), MXGATE_ADMIN__TLS_KEY=str(live / "key.pem"))
    env.pop("MXGATE_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "mxgate", "tls", "status", "--live", "--json"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {row["listener"]: row for row in json.loads(r.stdout)["listeners"]}
    assert rows["admin"]["spki_sha256"] == new_pin == rows["admin"]["served_spki_sha256"]
    generated = spki_sha256_of_file(n.home.certs / "server.pem")
    assert rows["mailbox"]["spki_sha256"] == generated == rows["mailbox"]["served_spki_sha256"]


def test_the_documented_certificate_alert_is_valid_and_fires(tmp_path):
    """docs/operations.md's MxgateCertificateExpiring rule, checked and unit-tested with promtool."""
    import re

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-system-deps.sh (Debian package prometheus)"
    doc = (Path(rig.REPO) / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- certificate-alert:start -->\n```yaml\n(.*?)```", doc, re.S).group(1)
    assert "mxgate_tls_certificate_expiry_days" in {f.name for f in metrics.REGISTRY.collect()}
    (tmp_path / "rules.yml").write_text(block)
    (tmp_path / "rules.test.yml").write_text("""
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # Counting down 0.01 day a minute: below 20 after 500 minutes, firing an hour later.
      - series: 'mxgate_tls_certificate_expiry_days{instance="mx1",certificate="mailbox"}'
        values: '25-0.01x600'
      - series: 'mxgate_tls_certificate_expiry_days{instance="mx1",certificate="gateway"}'
        values: '80x600'
    alert_rule_test:
      - eval_time: 9h
        alertname: MxgateCertificateExpiring
        exp_alerts: []
      - eval_time: 10h
        alertname: MxgateCertificateExpiring
        exp_alerts:
          - exp_labels: {severity: warning, instance: mx1, certificate: mailbox}
            exp_annotations:
              summary: "mxgate mx1: the mailbox certificate expires in 19 days"
              description: "Check the ACME client's log, then `mxgate tls status --live` and the node's log for tls-certificate-refused."
""")
    check = subprocess.run([promtool, "check", "rules", "rules.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([promtool, "test", "rules", "rules.test.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def test_a_reload_while_a_worker_is_starting_does_not_end_it(tmp_path, live):
    """`systemctl reload` right after a start: the first process forwards SIGHUP to a worker still
    importing, whose handler is not in place yet. SIGHUP's default action would end it; it starts
    with SIGHUP blocked instead and takes the reload once its handler is installed."""
    home, config, port, node = _two_process_node(tmp_path, live)
    try:
        # The first process listens, then spawns its worker (wait for it: on a loaded machine the
        # fork can come well after the listener). The worker is then still starting.
        assert wait_until(lambda: len(_children(node.proc.pid)) == 1, timeout=30), _children(node.proc.pid)
        workers = _children(node.proc.pid)
        worker = workers.pop()

        def hup_blocked_or_caught() -> bool:
            """At every instant a worker's SIGHUP is blocked or has its handler (one read of
            /proc, so the two masks are seen together)."""
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{worker}/status").read_text().splitlines()
                          if line.startswith(("SigBlk:", "SigCgt:")))
            bit = 1 << (signal.SIGHUP - 1)
            return bool((int(fields["SigBlk"], 16) | int(fields["SigCgt"], 16)) & bit)

        assert hup_blocked_or_caught()
        node.proc.send_signal(signal.SIGHUP)  # forwarded to the starting worker

        def worker_state() -> str:
            try:
                return Path(f"/proc/{worker}/status").read_text().split("State:")[1].split()[0]
            except (OSError, IndexError):
                return "gone"

        def serving() -> bool:
            assert worker_state() == "gone" or hup_blocked_or_caught()
            r = _cli(home, config, "status", "--json")
            return r.returncode == 0 and {n["name"] for n in json.loads(r.stdout)["nodes"] if n["alive"]} == {"node1", "node1-w1"}

        assert wait_until(serving, timeout=30), node.log.read_text()[-2000:]
        assert worker_state() not in ("gone", "Z") and worker in _children(node.proc.pid)
        assert node.proc.poll() is None
    finally:
        node.stop()
