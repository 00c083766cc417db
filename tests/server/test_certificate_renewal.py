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


def _served_pin(port: int, ca: str) -> str:
    with RawSMTP("127.0.0.1", port, GATEWAY) as c:
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


def test_sighup_reloads_a_real_process_and_tls_status_shows_the_pin(tmp_path, live, test_ca):
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ntls_check_interval = 3600\n[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n'
                      f'tls_cert = "{live / "cert.pem"}"\ntls_key = "{live / "key.pem"}"\n')
    node = rig.SubprocessNode(home, config).start(wait_for=("127.0.0.1", port))
    try:
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
        node.proc.send_signal(signal.SIGHUP)  # what `systemctl reload mxgate` does
        assert wait_until(lambda: _served_pin(port, test_ca["ca"]) == new_pin, timeout=15)
        assert node.proc.poll() is None  # SIGHUP reloads, it does not stop the node
        table = _cli(home, config, "tls", "status", "--live")
        assert table.returncode == 0 and new_pin in table.stdout and "same" in table.stdout, table.stdout
        assert "loaded the renewed certificate" in node.log.read_text()
    finally:
        node.stop()
